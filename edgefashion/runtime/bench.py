"""`edgefashion bench`: latency percentiles, throughput, size, MFLOPs, memory and accuracy of exported models,
on the machine it runs on, torch-free.

Timing is interleaved: for each (batch, threads) setting every model file (and, with a baseline, the same
model in PyTorch) runs once per round, round after round. A background job or a thermal throttle then slows
every contender alike, and the median of the per-round ratios (INT8 over FP32, PyTorch over onnxruntime)
stays honest on a shared or hot machine where absolute medians drift.
"""
from __future__ import annotations

import datetime as _dt
import platform
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import onnxruntime as ort

from .. import __version__, names
from ..files import atomic_write_text
from ..meta import ModelMeta
from ..reports import BenchReport
from .camera import peak_rss_mb
from .classifier import Classifier
from .cpu import cpu_info

SCHEMA_VERSION = 1
EQUAL_ACCURACY_PP = 0.3  # two precisions within this many points are "equal accuracy" for the recommendation
MODEL_FILES = names.MODEL_FILES

# A baseline factory: (onnx path, its meta, threads) -> a function running one batch (numpy NCHW float32).
Baseline = Callable[[Path, ModelMeta, int], Callable[[np.ndarray], object]]


class BenchError(ValueError):
    """A benchmark that cannot run as asked; the message says why in one line."""


def parse_int_list(text: str, what: str) -> List[int]:
    """'1,2' -> [1, 2]; each value must be a positive integer."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise BenchError(f"--{what} {text!r}: expected comma-separated integers like 1,2") from None
    if not values or any(v < 1 for v in values):
        raise BenchError(f"--{what} {text!r}: values must be positive integers")
    return list(dict.fromkeys(values))


# --- what the files are --------------------------------------------------------------------------------------

def find_models(dirs: Optional[Sequence[Path]] = None) -> List[Path]:
    """Every exported model file (FP32 and INT8) in the bundled model folders (export/ in a checkout)."""
    from .models import model_dirs
    dirs = model_dirs() if dirs is None else [Path(d) for d in dirs]
    found = [p for d in dirs if Path(d).is_dir() for name in MODEL_FILES for p in sorted(Path(d).glob(f"*/{name}"))]
    if not found:
        raise BenchError(f"no exported models in {', '.join(map(str, dirs))}; pass --model PATH or run "
                         f"`edgefashion export RUN --out export/NAME` first")
    # FP32 then INT8 of one folder next to each other: the table reads as pairs.
    return sorted(found, key=lambda p: (str(p.parent), p.name != names.FP32_FILE))


def precision_of(meta: ModelMeta, path: Path) -> str:
    p = meta.extra.get("precision")
    if p in ("fp32", "int8"):
        return p
    return "int8" if ".int8." in path.name or "quant" in path.name.lower() else "fp32"


def display_name(meta: ModelMeta, path: Path) -> str:
    """export/<name>/model.onnx -> <name>; <run>/export/model.onnx (what `reproduce` writes) -> <run>;
    a loose file -> its stem."""
    if path.name not in MODEL_FILES:
        return path.stem.replace(".int8", "")
    return path.parent.parent.name if path.parent.name == "export" and path.parent.parent.name else path.parent.name


def graph_mflops(path: Path) -> Optional[float]:
    """MFLOPs (2 x multiply-adds of Conv, Gemm, MatMul for one image) counted on the ONNX graph, for files
    exported before the count went into their metadata. Needs the `onnx` package (not a runtime dependency),
    so None without it."""
    try:
        import onnx
        from onnx import numpy_helper, shape_inference
    except ImportError:
        return None
    try:
        m = shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception:
        return None
    g = m.graph
    shapes: Dict[str, List] = {}
    for v in list(g.value_info) + list(g.input) + list(g.output):
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    # QDQ files hold weights as int8 initializers behind DequantizeLinear: follow it back to the initializer.
    producer = {o: n for n in g.node for o in n.output}

    def shape(name: str) -> Optional[List]:
        while name not in shapes and name in producer and producer[name].op_type == "DequantizeLinear":
            name = producer[name].input[0]
        return shapes.get(name)

    def per_image(dims: Optional[List]) -> Optional[int]:
        if not dims or any(d is None for d in dims[1:]):
            return None
        return int(np.prod(dims[1:], dtype=np.int64)) if len(dims) > 1 else 1

    macs = 0
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul", "QLinearConv", "QGemm", "QLinearMatMul", "ConvInteger",
                             "MatMulInteger"):
            continue
        w_in = {"QLinearConv": 3, "QGemm": 3, "QLinearMatMul": 3}.get(n.op_type, 1)
        w, out = shape(n.input[w_in]), per_image(shape(n.output[0]))
        if w is None or out is None:
            return None
        if n.op_type in ("Conv", "QLinearConv", "ConvInteger"):
            macs += out * int(np.prod(w[1:], dtype=np.int64))  # each output: (C/groups) x kh x kw products
        else:
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            macs += out * int(w[-1] if trans_b else w[-2])
    return round(2 * macs / 1e6, 3)


@dataclass
class ModelFile:
    path: Path
    clf: Classifier
    name: str
    precision: str
    size_bytes: int
    mflops: Optional[float]
    mflops_source: Optional[str]
    accuracy: Optional[float] = None
    accuracy_source: Optional[str] = None
    accuracy_images: Optional[int] = None
    latency: List[dict] = field(default_factory=list)

    @property
    def meta(self) -> ModelMeta:
        return self.clf.meta

    def to_dict(self) -> dict:
        e = self.meta.extra
        q = e.get("quantization") or {}
        return {"path": str(self.path), "name": self.name, "model": self.meta.model, "dataset": self.meta.dataset,
                "precision": self.precision, "input": [self.meta.in_chans, self.meta.input_size, self.meta.input_size],
                "size_bytes": self.size_bytes, "mflops": self.mflops, "mflops_source": self.mflops_source,
                "quantization": {k: q[k] for k in ("format", "method", "per_channel", "activation_type",
                                                   "weight_type", "reduce_range") if k in q} or None,
                "source_checkpoint": e.get("source_checkpoint"),
                "accuracy": self.accuracy, "accuracy_source": self.accuracy_source,
                "accuracy_images": self.accuracy_images, "latency": self.latency}


def open_model(path: Path, threads: int, spin: bool) -> ModelFile:
    clf = Classifier(path, threads=threads, spin=spin)
    mf, src = clf.meta.extra.get("mflops"), "metadata"
    if not isinstance(mf, (int, float)):
        mf = graph_mflops(path)
        src = "onnx graph" if mf is not None else None
    return ModelFile(path=path, clf=clf, name=display_name(clf.meta, path), precision=precision_of(clf.meta, path),
                     size_bytes=path.stat().st_size, mflops=None if mf is None else float(mf), mflops_source=src)


def metadata_accuracy(m: ModelFile) -> Optional[float]:
    """Test accuracy the export measured with onnxruntime (written into the file), else the run's."""
    e = m.meta.extra
    for key in ("onnx_test_accuracy", "test_accuracy"):
        if isinstance(e.get(key), (int, float)):
            return float(e[key])
    return None


# --- timing ----------------------------------------------------------------------------------------------------

def summarize(seconds: np.ndarray, batch: int) -> dict:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    med = float(np.median(ms))
    return {"median_ms": round(med, 4), "p90_ms": round(float(np.percentile(ms, 90)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4), "mean_ms": round(float(ms.mean()), 4),
            "throughput_ips": round(batch / med * 1e3, 1) if med > 0 else None}


def time_interleaved(runners: Sequence[Callable[[], object]], warmup: int, runs: int, block: int = 10) -> np.ndarray:
    """(runs, len(runners)) seconds. Rounds: each runner runs `block` times in a row, then the next runner, so
    drift over a round hits all alike. Blocks rather than strict ABAB (block=1): a PyTorch call between two
    onnxruntime calls evicts onnxruntime's weights and code from the caches and doubles a 50 us model's
    time here. Each block starts with one untimed call that refills the caches, so a block's timed runs are
    what a device running one model sees, and p90/p99 are not the other contender's footprint."""
    for _ in range(warmup):
        for r in runners:
            r()
    out = np.empty((runs, len(runners)))
    clock = time.perf_counter
    for start in range(0, runs, block):
        stop = min(start + block, runs)
        for j, r in enumerate(runners):
            r()
            for i in range(start, stop):
                t0 = clock()
                r()
                out[i, j] = clock() - t0
    return out


def round_ratio(a: np.ndarray, b: np.ndarray, block: int) -> float:
    """Median over rounds of (median of a's block) / (median of b's block): drift-free a/b."""
    n = len(a)
    r = [np.median(a[s:s + block]) / np.median(b[s:s + block]) for s in range(0, n, block)]
    return round(float(np.median(r)), 3)


def bench(paths: Sequence[Path], *, batches: Sequence[int] = (1,), threads: Sequence[int] = (1,), warmup: int = 20,
          runs: int = 200, block: int = 10, spin: bool = False, baseline: Optional[Baseline] = None, baseline_name: str = "torch",
          accuracy: bool = False, data: Optional[str] = None, data_dir: Optional[str] = None,
          limit: Optional[int] = None, tolerance_pp: float = EQUAL_ACCURACY_PP,
          log: Callable[[str], None] = lambda s: None) -> BenchReport:
    """Benchmark the model files `paths`; returns the report (the JSON `edgefashion bench` writes)."""
    if runs < 1 or warmup < 0 or block < 1:
        raise BenchError(f"--runs and --block must be positive and --warmup not negative, got {runs}, {block} "
                         f"and {warmup}")
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such model file")
    if len(set(map(str, paths))) != len(paths):
        raise BenchError("the same model file is given twice")
    files = [open_model(p, threads[0], spin) for p in paths]

    for m in files:
        if accuracy:
            from .evaluate import evaluate
            name = data or m.meta.dataset
            if not name:
                raise BenchError(f"{m.path}: its metadata names no data set; pass --data NAME")
            log(f"accuracy of {m.name} {m.precision} on {name} (test split)")
            r = evaluate(m.clf, name, names.TEST, data_dir=data_dir, limit=limit, batch_size=256)
            m.accuracy, m.accuracy_source, m.accuracy_images = r.accuracy, f"measured on {name} test", r.images
        else:
            m.accuracy = metadata_accuracy(m)
            m.accuracy_source = "metadata (export)" if m.accuracy is not None else None

    for t in threads:
        # Sessions per thread count: intra_op threads are fixed when a session is created.
        sessions = {m.path: (m.clf if t == threads[0] else Classifier(m.path, threads=t, spin=spin)) for m in files}
        torch_runs = {m.path: baseline(m.path, m.meta, t) for m in files} if baseline else {}
        for b in batches:
            log(f"timing batch {b}, {t} thread(s): {warmup} warm-up + {runs} runs x {len(files)} file(s)"
                + (f" + {baseline_name}" if baseline else ""))
            runners, rng = [], np.random.default_rng(0)
            for m in files:
                x = rng.standard_normal((b, m.meta.in_chans, m.meta.input_size, m.meta.input_size)).astype(np.float32)
                s = sessions[m.path]
                feed, out = {s.input_name: x}, [s.output_name]
                runners.append(lambda s=s, feed=feed, out=out: s.session.run(out, feed))
                if baseline:
                    runners.append(lambda f=torch_runs[m.path], x=x: f(x))
            times = time_interleaved(runners, warmup, runs, block)
            step = 2 if baseline else 1
            for i, m in enumerate(files):
                ort_t = times[:, i * step]
                row = {"batch": b, "threads": t, **summarize(ort_t, b), "runs": runs, "warmup": warmup}
                if baseline:
                    ref = times[:, i * step + 1]
                    row[f"{baseline_name}_median_ms"] = summarize(ref, b)["median_ms"]
                    row[f"{baseline_name}_p90_ms"] = summarize(ref, b)["p90_ms"]
                    row[f"speedup_vs_{baseline_name}"] = round_ratio(ref, ort_t, block)
                m.latency.append(row)
            _pair_ratios(files, times, step, block)

    models = [m.to_dict() for m in files]
    return BenchReport(
        schema=SCHEMA_VERSION, created=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        host=socket.gethostname(), edgefashion=__version__, onnxruntime=ort.__version__,
        python=platform.python_version(), torch=_torch_version() if baseline else None, cpu=cpu_info(),
        settings={"batches": list(batches), "threads": list(threads), "warmup": warmup, "runs": runs,
                  "block": block, "inter_op_threads": 1, "spin": spin, "execution_provider": "CPUExecutionProvider",
                  "graph_optimization": "ORT_ENABLE_ALL", "baseline": baseline_name if baseline else None,
                  "accuracy": "measured" if accuracy else "metadata", "data": data, "limit": limit,
                  "equal_accuracy_pp": tolerance_pp},
        peak_rss_mb=_round(peak_rss_mb(), 1), models=models, recommendations=recommend(models, tolerance_pp))


def _pair_ratios(files: List[ModelFile], times: np.ndarray, step: int, block: int) -> None:
    """INT8 vs FP32 of the same folder, as the median of per-round ratios (drift-free), on the INT8 row."""
    by_key: Dict[tuple, Dict[str, int]] = {}
    for i, m in enumerate(files):
        by_key.setdefault((str(m.path.parent), m.meta.model), {})[m.precision] = i
    for idx in by_key.values():
        if "fp32" in idx and "int8" in idx:
            r = round_ratio(times[:, idx["int8"] * step], times[:, idx["fp32"] * step], block)
            files[idx["int8"]].latency[-1]["int8_over_fp32"] = r


def _torch_version() -> Optional[str]:
    try:
        import torch
        return torch.__version__
    except ImportError:
        return None


def _round(x, n):
    return None if x is None else round(float(x), n)


# --- what to use here ------------------------------------------------------------------------------------------

def _headline(m: dict) -> Optional[dict]:
    """The batch-1, 1-thread row (the edge device's case), else the first measured."""
    rows = m["latency"]
    return next((r for r in rows if r["batch"] == 1 and r["threads"] == 1), rows[0] if rows else None)


def recommend(models: List[dict], tolerance_pp: float = EQUAL_ACCURACY_PP) -> List[dict]:
    """Per model with both precisions: the faster one here when their accuracies are within `tolerance_pp`
    points, else the more accurate one unless the user accepts the loss."""
    groups: Dict[tuple, Dict[str, dict]] = {}
    for m in models:
        groups.setdefault((str(Path(m["path"]).parent), m["model"]), {})[m["precision"]] = m
    out = []
    for g in groups.values():
        if "fp32" not in g or "int8" not in g:
            continue
        f, i = g["fp32"], g["int8"]
        rf, ri = _headline(f), _headline(i)
        if rf is None or ri is None:
            continue
        ratio = ri.get("int8_over_fp32", ri["median_ms"] / rf["median_ms"])
        faster, slower = ("int8", "fp32") if ratio < 1 else ("fp32", "int8")
        ms = {"int8": ri["median_ms"], "fp32": rf["median_ms"]}
        where = f"b{ri['batch']} t{ri['threads']}"
        speed = f"{faster} ({ms[faster]:.3g} ms) faster than {slower} ({ms[slower]:.3g} ms, {where})"
        fa, ia = f["accuracy"], i["accuracy"]
        if fa is None or ia is None:
            choice, equal = faster, None
            text = f"{i['name']}: {speed}; accuracy unknown (bench --accuracy --data NAME)"
        else:
            drop = (fa - ia) * 100
            equal = abs(drop) <= tolerance_pp
            if equal:
                choice = faster
                text = f"{i['name']}: {speed} at equal accuracy (within {tolerance_pp:g} pp)"
            else:
                choice = "fp32" if drop > 0 else "int8"
                text = (f"{i['name']}: {choice} ({'int8' if drop > 0 else 'fp32'} loses {abs(drop):.2f} pp); "
                        f"{speed}")
        out.append({"name": i["name"], "model": i["model"], "recommended": choice, "fp32_ms": ms["fp32"],
                    "int8_ms": ms["int8"], "int8_over_fp32": round(float(ratio), 3), "accuracy_equal": equal,
                    "batch": ri["batch"], "threads": ri["threads"], "text": text})
    return out


# --- writing ---------------------------------------------------------------------------------------------------

def _fmt(x, spec=".3f", none="-"):
    return none if x is None else format(x, spec)


def markdown(results: BenchReport) -> str:
    cpu, s = results.cpu, results.settings
    base = s.get("baseline")
    lines = [f"# edgefashion bench, {results.created[:10]} on {results.host}", "",
             f"{cpu['model']} ({cpu['machine']}, {cpu['cores']} cores; {', '.join(cpu['isa']) or 'no SIMD flags'}), "
             f"onnxruntime {results.onnxruntime}" + (f", torch {results.torch}" if results.torch else "")
             + f". {s['warmup']} warm-up + {s['runs']} timed runs per setting; every file (and the baseline) "
               f"interleaved in rounds of {s['block']} runs each (plus one untimed call per block); inter-op threads 1, spin {'on' if s['spin'] else 'off'}. "
               f"Peak resident memory {_fmt(results.peak_rss_mb, '.1f')} MB.", ""]
    head = ["model", "precision", "batch", "threads", "median ms", "p90 ms", "p99 ms", "images/s"]
    if base:
        head += [f"{base} FP32 ms", f"speedup vs {base}"]
    head += ["INT8/FP32", "size KB", "MFLOPs", "accuracy", "note"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" if h in ("model", "precision", "note") else "---:"
                                                          for h in head) + "|"]
    # Grouped per model and setting, FP32 above INT8: the pairs the INT8/FP32 column compares.
    rows = sorted(((m, r) for m in results.models for r in m["latency"]),
                  key=lambda mr: (str(Path(mr[0]["path"]).parent), mr[0]["model"], mr[1]["batch"], mr[1]["threads"],
                                  mr[0]["precision"] != "fp32"))
    for m, r in rows:
        ratio = r.get("int8_over_fp32")
        note = f"INT8 slower than FP32 here (x{ratio:.2f})" if ratio is not None and ratio > 1 else ""
        row = [m["name"], m["precision"], r["batch"], r["threads"], _fmt(r["median_ms"]), _fmt(r["p90_ms"]),
               _fmt(r["p99_ms"]), _fmt(r["throughput_ips"], ".0f")]
        if base:
            row += [_fmt(r.get(f"{base}_median_ms")), _fmt(r.get(f"speedup_vs_{base}"), ".2f") + "x"]
        row += [_fmt(ratio, ".2f"), f"{m['size_bytes'] / 1024:.1f}", _fmt(m["mflops"], ".2f", "n/a"),
                "-" if m["accuracy"] is None else f"{m['accuracy'] * 100:.2f}%",
                note]
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    lines += ["", f"Accuracy: {s['accuracy']} (test split). INT8/FP32: median of per-round latency ratios of the "
                  f"same folder's two files (below 1: INT8 faster); speedup: median per-round ratio, "
                  f"baseline time over onnxruntime time."]
    if results.recommendations:
        lines += ["", "Recommended on this machine:", ""] + [f"- {r['text']}" for r in results.recommendations]
    return "\n".join(lines) + "\n"


def result_paths(out_dir: Path, results: BenchReport) -> tuple[Path, Path]:
    stem = f"{results.created[:10]}-{results.host}"
    return Path(out_dir) / f"{stem}.json", Path(out_dir) / f"{stem}.md"


def write_results(results: BenchReport, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jp, mp = result_paths(out_dir, results)
    results.files = {**(results.files or {}), "json": str(jp), "markdown": str(mp)}
    results.write(jp)
    atomic_write_text(mp, markdown(results))
    return jp, mp


def plot_image(results: BenchReport, width: int = 900, height: int = 600) -> np.ndarray:
    """Accuracy (y) against batch-1 latency (x, log scale), one labelled point per model file; OpenCV only."""
    import cv2

    from .plots import _text
    pts = []
    for m in results.models:
        r = _headline(m)
        if r is not None and m["accuracy"] is not None:
            pts.append((r["median_ms"], m["accuracy"] * 100, f"{m['name']} {m['precision']}", m["precision"]))
    if not pts:
        raise BenchError("--plot needs accuracies: bench --accuracy --data NAME, or models whose metadata has them")
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 80, 40, 50, 60
    xs = np.log10([p[0] for p in pts])
    ys = np.array([p[1] for p in pts])
    x0, x1 = xs.min() - 0.15, xs.max() + 0.15
    y0, y1 = ys.min() - max(0.5, 0.1 * np.ptp(ys)), ys.max() + max(0.5, 0.1 * np.ptp(ys))
    X = lambda v: int(left + (v - x0) / (x1 - x0) * (width - left - right))  # noqa: E731
    Y = lambda v: int(height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom))  # noqa: E731
    cv2.rectangle(img, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
    for e in range(int(np.floor(x0)), int(np.ceil(x1)) + 1):
        for k in (1, 2, 5):
            v = e + np.log10(k)
            if x0 <= v <= x1:
                cv2.line(img, (X(v), top), (X(v), height - bottom), (225, 225, 225), 1)
                _text(img, f"{10 ** v:g}", (X(v) - 12, height - bottom + 18), 0.4)
    for v in np.linspace(y0, y1, 6):
        cv2.line(img, (left, Y(v)), (width - right, Y(v)), (225, 225, 225), 1)
        _text(img, f"{v:.1f}", (left - 45, Y(v) + 4), 0.4)
    colors = {"fp32": (200, 90, 30), "int8": (30, 120, 230)}
    for (ms, acc, label, prec), xv in zip(pts, xs):
        c = colors.get(prec, (80, 80, 80))
        cv2.circle(img, (X(xv), Y(acc)), 6, c, -1, cv2.LINE_AA)
        # FP32 labels below their point, INT8 above: a model's two points often sit side by side.
        _text(img, label, (X(xv) + 9, Y(acc) + (18 if prec == "fp32" else -8)), 0.42, c)
    cpu = results.cpu
    _text(img, f"accuracy vs latency (batch 1, 1 thread; log scale), {cpu['model']}, onnxruntime "
               f"{results.onnxruntime}", (left, 28), 0.5)
    _text(img, "latency, ms (median)", (width // 2 - 60, height - 18), 0.45)
    _text(img, "test accuracy, %", (8, top - 12), 0.45)
    _text(img, "fp32", (width - right - 90, top + 20), 0.45, colors["fp32"])
    _text(img, "int8", (width - right - 45, top + 20), 0.45, colors["int8"])
    return img


def save_plot(results: BenchReport, path: Path) -> None:
    from .plots import save_png
    img = plot_image(results)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_png(img, path)
    results.files = {**(results.files or {}), "plot": str(path)}


def compare_latency(a: Path, b: Path, shape: Sequence[int], *, runs: int = 200, warmup: int = 20, threads: int = 1,
                    block: int = 10, disabled: Sequence[Optional[Sequence[str]]] = (None, None)) -> dict:
    """Two ONNX files (no metadata needed) timed interleaved on the same random input: both medians and the
    drift-free ratio b/a. Export's --quantize auto and the INT8 first-block choice decide with it. `disabled`:
    each file's onnxruntime optimizers to switch off (None: what its metadata asks for)."""
    from .classifier import open_session
    sessions = [open_session(p, threads, disabled_optimizers=d) for p, d in zip((a, b), disabled)]
    x = np.random.default_rng(0).standard_normal(tuple(shape)).astype(np.float32)
    runners = [lambda s=s, n=s.get_inputs()[0].name: s.run(None, {n: x}) for s in sessions]
    t = time_interleaved(runners, warmup, runs, block)
    return {"a_ms": summarize(t[:, 0], shape[0])["median_ms"], "b_ms": summarize(t[:, 1], shape[0])["median_ms"],
            "b_over_a": round_ratio(t[:, 1], t[:, 0], block), "runs": runs, "threads": threads,
            "batch": int(shape[0]), "block": block}
