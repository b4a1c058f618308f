"""Export: a checkpoint -> one self-describing ONNX file (FP32) and its INT8 twin, verified before they land.

Steps: rebuild the model from the checkpoint; torch.onnx.export; write ModelMeta (labels, preprocessing) plus
provenance into ``metadata_props``; onnx.checker; parity of PyTorch vs onnxruntime on real validation images fed
through the runtime's own preprocessing; quantize (quantize.py); accuracy of both on the test split; latency;
report.json / report.md. Everything is built in a temporary folder beside the destination and swapped in only
when every check passed, so a failed export leaves an existing export folder as it was.

Exporter: the TorchScript exporter (``dynamo=False``). It still works in torch 2.14 (with a deprecation
warning), writes one self-contained file, folds BatchNorm into the convolutions in eval mode and names the
dynamic batch axis from ``dynamic_axes``; every zoo model (including the timm ones) exports with it at opset 17.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import os
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .. import __version__
from ..meta import ORT_DISABLED_OPTIMIZERS_KEY, ModelMeta
from ..runtime.preprocess import normalize
from . import quantize as q
from .train import load_checkpoint, model_from_checkpoint

QUANTIZE_MODES = ("int8", "dynamic", "none", "auto")
MIN_OPSET = 17
PARITY_MIN_AGREEMENT = 0.999
FP32_NAME, INT8_NAME = "model.onnx", "model.int8.onnx"


class ExportError(RuntimeError):
    """An export that failed a check; nothing was written to the destination."""


# --- torch -> ONNX ---------------------------------------------------------------------------------------------

def export_onnx(model: torch.nn.Module, meta: ModelMeta, path: str | Path, *, opset: int = 17,
                doc: str = "") -> None:
    """Write `model` as ONNX with `meta` in metadata_props; runs onnx.checker (full check) on the result."""
    import onnx
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: edgefashion exports opset {MIN_OPSET} or newer")
    model = model.eval().cpu()
    x = torch.zeros(1, meta.in_chans, meta.input_size, meta.input_size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice is about torch's plans, not this export.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*TorchScript.*")
        try:
            torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=opset, do_constant_folding=True)
        except Exception as e:
            raise ExportError(f"torch.onnx.export of {meta.model} failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    m = onnx.load_from_string(buf.getvalue())
    set_metadata(m, meta)
    m.producer_name, m.producer_version = "edgefashion", __version__
    m.doc_string = doc or f"edgefashion {meta.model} ({meta.dataset or 'unknown data'})"
    try:
        onnx.checker.check_model(m, full_check=True)
    except Exception as e:
        raise ExportError(f"{path}: onnx.checker rejected the exported model ({str(e).splitlines()[0]})") from None
    Path(path).write_bytes(m.SerializeToString())


def set_metadata(model_proto, meta: ModelMeta) -> None:
    """Replace the model's metadata_props with `meta`'s (other keys are dropped: this meta is the truth)."""
    del model_proto.metadata_props[:]
    for k, v in meta.to_onnx_props().items():
        p = model_proto.metadata_props.add()
        p.key, p.value = k, v


def rewrite_metadata(path: str | Path, meta: ModelMeta) -> None:
    import onnx
    m = onnx.load(str(path))
    set_metadata(m, meta)
    m.producer_name, m.producer_version = "edgefashion", __version__
    onnx.checker.check_model(m)
    Path(path).write_bytes(m.SerializeToString())


# --- checks ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def torch_logits(model: torch.nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = [model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))).float().numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out)


def parity(model: torch.nn.Module, onnx_path: str | Path, x: np.ndarray) -> dict:
    """PyTorch vs onnxruntime FP32 on the same preprocessed batch: max |logit diff| and top-1 agreement."""
    if len(x) == 0:
        raise ExportError("parity needs validation images; the validation split is empty")
    a = torch_logits(model, x)
    b = q.onnx_logits(onnx_path, x)
    return {"images": int(len(x)), "max_abs_logit_diff": float(np.abs(a - b).max()),
            "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean())}


def check_parity(p: dict, path: str | Path) -> None:
    if p["top1_agreement"] < PARITY_MIN_AGREEMENT:
        raise ExportError(f"{path}: parity failed: PyTorch and onnxruntime agree on top-1 for "
                          f"{p['top1_agreement']:.2%} of {p['images']} validation images (need >= "
                          f"{PARITY_MIN_AGREEMENT:.1%}; max |logit diff| {p['max_abs_logit_diff']:.3g})")


# --- data ------------------------------------------------------------------------------------------------------

def split_arrays(split, meta: ModelMeta, n: int | None = None, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A Split's uint8 NCHW images (already through runtime `prepare`) -> the runtime's float32 input via
    `normalize`, and labels. With `n`, a seeded random subset of n images."""
    idx = np.arange(len(split))
    if n is not None and n < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), size=n, replace=False))
    xs = split.x[torch.from_numpy(idx)].cpu().permute(0, 2, 3, 1).numpy()
    return normalize(xs, meta), split.y[torch.from_numpy(idx)].cpu().numpy()


def _load_run_data(ckpt: dict, meta: ModelMeta, data_dir: str | None):
    from .datasets import load_data
    cfg = ckpt.get("config") or {}
    if not cfg.get("data"):
        raise ExportError("checkpoint records no training data set; export needs it for parity and calibration")
    return load_data(cfg["data"], data_dir or cfg.get("data_dir"), model=ckpt["model"], img_size=meta.input_size,
                     in_chans=meta.in_chans, val_fraction=cfg.get("val_fraction", 0.2), seed=cfg.get("seed", 0),
                     limit=cfg.get("limit"), device="cpu", download=False)


def _run_results(src: Path) -> dict:
    run_dir = src if src.is_dir() else src.parent
    p = run_dir / "results.json"
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def checkpoint_file(src: Path) -> Path:
    """The file load_checkpoint reads for `src` (a run folder means its best.pt, else last.pt)."""
    if src.is_dir():
        for name in ("best.pt", "last.pt"):
            if (src / name).is_file():
                return src / name
    return src


def default_out_dir(src: str | Path, base: str | Path = "export") -> Path:
    """export/<model>-<dataset> from the checkpoint's meta."""
    ckpt = load_checkpoint(src)
    meta = ModelMeta.from_dict(ckpt["meta"])
    data = Path(meta.dataset or (ckpt.get("config") or {}).get("data") or "data").name
    return Path(base) / f"{meta.model}-{data}"


# --- the export ------------------------------------------------------------------------------------------------

def export_checkpoint(src: str | Path, out_dir: str | Path | None = None, *, quantize: str = "int8",
                      opset: int = 17, calib_size: int = 300, max_drop: float = 0.5, allow_drop: bool = False,
                      data_dir: str | None = None, parity_images: int = 256,
                      calib_methods: Sequence[str] = q.CALIB_METHODS, per_channel: Sequence[bool] = (False, True),
                      latency_runs: int = 200, cpu: dict | None = None,
                      log: Callable[[str], None] = print, check_arm: bool = False, arm_subset: int = 2000) -> dict:
    """Export the run folder or checkpoint `src` into `out_dir` (default export/<model>-<dataset>); returns the
    report (also written as report.json). Raises ExportError when a check fails; the destination is then left
    as it was.

    quantize: "int8" static QDQ (calibration searched on the validation split), "dynamic", "none", or "auto"
    (int8 static, kept only when within max_drop and faster than FP32 on this CPU; see _auto_keep). `cpu` overrides detect_cpu() (choose the
    quantization settings for another CPU)."""
    if quantize not in QUANTIZE_MODES:
        raise ExportError(f"--quantize {quantize!r}: choose from {', '.join(QUANTIZE_MODES)}")
    mode = "int8" if quantize == "auto" else quantize
    if parity_images < 1:
        raise ExportError(f"--parity-images must be positive, got {parity_images}")
    if mode == "int8" and calib_size < 1:
        raise ExportError(f"--calib-size must be positive for int8, got {calib_size}")
    src = Path(src)
    ckpt = load_checkpoint(src)
    model, meta = model_from_checkpoint(ckpt)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(src)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a folder")
    results = _run_results(src)
    cfg = ckpt.get("config") or {}

    log(f"loading {cfg.get('data')} for parity, calibration and accuracy")
    bundle = _load_run_data(ckpt, meta, data_dir)
    n_val = len(bundle.splits["val"])
    if n_val < parity_images:
        log(f"warning: the validation split has {n_val} images, fewer than --parity-images {parity_images}; "
            f"parity uses all {n_val}")
    val_x, val_y = split_arrays(bundle.splits["val"], meta)
    test_x, test_y = split_arrays(bundle.splits["test"], meta)
    par_x = val_x[:parity_images]

    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    provenance = {
        **meta.extra,
        "dataset": meta.dataset or cfg.get("data"),
        "val_accuracy": results.get("best_val_accuracy"),
        "test_accuracy": results.get("test_accuracy"),
        "edgefashion_version": __version__,
        "exported": created,
        "source_checkpoint": str(checkpoint_file(src).resolve()),
        "epoch": ckpt.get("epoch"),
        "precision": "fp32",
        # Counted here, where torch is, so the torch-free `bench` can report it without the onnx package.
        "mflops": _mflops(model, meta),
    }
    meta = meta.replace(dataset=meta.dataset or str(cfg.get("data") or ""), extra=provenance)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_sibling(out_dir, "tmp")
    try:
        fp32 = tmp / FP32_NAME
        log(f"exporting {meta.model} to ONNX opset {opset}")
        export_onnx(model, meta, fp32, opset=opset)
        par = parity(model, fp32, par_x)
        log(f"parity on {par['images']} val images: top-1 agreement {par['top1_agreement']:.4%}, "
            f"max |logit diff| {par['max_abs_logit_diff']:.2e}")
        check_parity(par, fp32)
        shape = (1, meta.in_chans, meta.input_size, meta.input_size)
        fp32_rep = {"path": FP32_NAME, "size_bytes": fp32.stat().st_size,
                    "val_accuracy": q.onnx_accuracy(fp32, val_x, val_y),
                    "test_accuracy": q.onnx_accuracy(fp32, test_x, test_y)}
        lat = q.measure_latency(fp32, shape, runs=latency_runs)
        fp32_rep.update(latency_ms_b1_t1=lat["median_ms"], latency_p90_ms_b1_t1=lat["p90_ms"])

        report = {
            "model": meta.model, "dataset": meta.dataset, "source": str(checkpoint_file(src).resolve()), "opset": opset,
            "labels": list(meta.labels), "input": list(shape[1:]),
            "quantize": quantize, "fp32": fp32_rep, "parity": par,
            "cpu": q.detect_cpu() if cpu is None else cpu,
            "onnxruntime": _ort_version(), "torch": torch.__version__, "edgefashion": __version__,
            "created": created, "latency_runs": latency_runs,
            "split_sizes": {k: len(v) for k, v in bundle.splits.items()},
            "run": {"val_accuracy": results.get("best_val_accuracy"), "test_accuracy": results.get("test_accuracy")},
        }
        if mode != "none":
            int8 = tmp / INT8_NAME
            settings = q.choose_settings(report["cpu"])
            log(f"quantizing ({mode}); {settings.reason}")
            if mode == "int8":
                calib_x, _ = split_arrays(bundle.splits["train"], meta, calib_size, seed=int(cfg.get("seed", 0)))
                qrep = q.quantize_static_search(fp32, int8, calib_x, val_x, val_y, settings, methods=calib_methods,
                                                per_channel=per_channel, log=log)
            else:
                qrep = q.quantize_dynamic_file(fp32, int8, settings)
            extra = {**meta.extra, "precision": "int8",
                     "quantization": {k: v for k, v in qrep.items() if k != "candidates"}}
            if qrep.get(ORT_DISABLED_OPTIMIZERS_KEY):
                extra[ORT_DISABLED_OPTIMIZERS_KEY] = qrep[ORT_DISABLED_OPTIMIZERS_KEY]
            # Written before measuring: the runtime opens the file as its metadata says (optimizers switched off).
            rewrite_metadata(int8, meta.replace(extra=extra))
            int8_rep = {"path": INT8_NAME, "size_bytes": int8.stat().st_size,
                        "val_accuracy": q.onnx_accuracy(int8, val_x, val_y),
                        "test_accuracy": q.onnx_accuracy(int8, test_x, test_y)}
            lat8 = q.measure_latency(int8, shape, runs=latency_runs)
            int8_rep.update(latency_ms_b1_t1=lat8["median_ms"], latency_p90_ms_b1_t1=lat8["p90_ms"], **qrep)
            drop = round((fp32_rep["test_accuracy"] - int8_rep["test_accuracy"]) * 100, 4)
            report.update(int8=int8_rep, size_ratio=round(int8_rep["size_bytes"] / fp32_rep["size_bytes"], 4),
                          accuracy_drop_pp=drop, max_drop_pp=max_drop)
            # The INT8 file describes itself: its own precision, settings and measured accuracy.
            rewrite_metadata(int8, meta.replace(extra={
                **extra,
                "onnx_test_accuracy": int8_rep["test_accuracy"], "onnx_val_accuracy": int8_rep["val_accuracy"]}))
            int8_rep["size_bytes"] = int8.stat().st_size
            report["size_ratio"] = round(int8_rep["size_bytes"] / fp32_rep["size_bytes"], 4)
            log(f"test accuracy fp32 {fp32_rep['test_accuracy']:.4f}, int8 {int8_rep['test_accuracy']:.4f} "
                f"(drop {drop:+.2f} pp)")
            if drop > max_drop and quantize == "auto":
                # auto does not fail on an INT8 loss: it keeps FP32 instead (_auto_keep).
                report["accuracy_guard"] = "exceeded, auto keeps fp32"
            else:
                report["accuracy_guard"] = _apply_guard(
                    f"INT8 test accuracy {int8_rep['test_accuracy']:.4f} is {drop:.2f} pp below FP32 "
                    f"{fp32_rep['test_accuracy']:.4f} (--max-drop {max_drop} pp)" if drop > max_drop else None,
                    allow_drop, out_dir, log)
        if check_arm:
            _check_arm(report, tmp, mode, cfg, data_dir, arm_subset, max_drop, allow_drop, out_dir, log)
        if quantize == "auto":
            _auto_keep(report, tmp, shape, latency_runs, log)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.md").write_text(report_markdown(report))
        _fsync_dir_files(tmp)
        _swap_into_place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    report["out_dir"] = str(out_dir)
    log(f"wrote {out_dir}")
    return report


def _check_arm(report: dict, tmp: Path, mode: str, cfg: dict, data_dir: str | None, subset: int, max_drop: float,
               allow_drop: bool, out_dir: Path, log: Callable[[str], None]) -> None:
    """--check-arm: the files' accuracy under emulated Raspberry Pi 4 (aarch64, Cortex-A72) onnxruntime on a
    test subset, into report["arm"]; the accuracy guard applies to the ARM figure too, as a Pi user gets it."""
    from .. import arm
    log(f"checking on an emulated Raspberry Pi 4 (qemu-aarch64, {subset} test images)")
    try:
        a = arm.export_check(tmp / FP32_NAME, tmp / INT8_NAME if mode != "none" else None, str(cfg.get("data")),
                             subset=subset, data_dir=data_dir or cfg.get("data_dir"), log=log)
    except arm.ArmError as e:
        raise ExportError(f"--check-arm: {e}") from None
    report["arm"] = a
    if not a["fp32_agreement_ok"]:
        raise ExportError(f"--check-arm: FP32 top-1 agreement x86 vs ARM {a['fp32']['agreement']:.2%} is below "
                          f"{arm.MIN_FP32_AGREEMENT:.1%}; nothing written to {out_dir}")
    drop = a.get("int8_drop_pp")
    if drop is None:
        return
    log(f"on ARM: fp32 {a['fp32']['arm_accuracy']:.4f}, int8 {a['int8']['arm_accuracy']:.4f} (drop {drop:+.2f} pp; "
        f"int8 agrees with x86 on {a['int8']['agreement']:.2%})")
    a["accuracy_guard"] = _apply_guard(
        f"INT8 accuracy on ARM {a['int8']['arm_accuracy']:.4f} is {drop:.2f} pp below FP32 "
        f"{a['fp32']['arm_accuracy']:.4f} on {a['fp32']['images']} test images (--max-drop {max_drop} pp)"
        if drop > max_drop else None, allow_drop, out_dir, log)


def _apply_guard(loss: str | None, allow_drop: bool, out_dir: Path, log: Callable[[str], None]) -> str:
    """The accuracy guard, on x86 and on ARM alike: `loss` says what INT8 lost beyond the limit (None: within
    it). Fails the export unless --allow-drop; returns the status the report records."""
    if loss is None:
        return "passed"
    if not allow_drop:
        raise ExportError(f"{loss}; nothing written to {out_dir} (--allow-drop keeps it anyway)")
    log(f"warning: {loss}; kept because of --allow-drop")
    return "exceeded, allowed"


def _mflops(model: torch.nn.Module, meta: ModelMeta) -> float | None:
    from .zoo import model_mflops
    try:
        return round(model_mflops(model, meta.in_chans, meta.input_size), 3)
    except Exception:  # a count is a nicety; an exotic layer must not fail the export
        return None


def _auto_keep(report: dict, tmp: Path, shape: tuple, runs: int, log: Callable[[str], None]) -> None:
    """--quantize auto: keep INT8 only when it is within --max-drop of FP32's accuracy AND faster on this CPU
    (batch 1, 1 thread, interleaved timing); otherwise remove model.int8.onnx, as FP32 is then the better
    file here. The decision and both latencies go into report["auto"]."""
    from ..runtime.bench import compare_latency
    if "int8" not in report:
        return
    c = compare_latency(tmp / FP32_NAME, tmp / INT8_NAME, shape, runs=max(runs, 50))
    drop, limit = report["accuracy_drop_pp"], report["max_drop_pp"]
    faster = c["b_over_a"] < 1
    keep = "int8" if faster and drop <= limit else "fp32"
    why = (f"int8 {c['b_ms']:.3g} ms vs fp32 {c['a_ms']:.3g} ms (int8/fp32 {c['b_over_a']:.2f}, b1 t1 on "
           f"{report['cpu'].get('machine', '?')}); accuracy drop {drop:+.2f} pp (limit {limit} pp)")
    report["auto"] = {"kept": keep, "fp32_ms": c["a_ms"], "int8_ms": c["b_ms"], "int8_over_fp32": c["b_over_a"],
                      "accuracy_drop_pp": drop, "max_drop_pp": limit, "batch": c["batch"], "threads": c["threads"],
                      "runs": c["runs"], "reason": why}
    log(f"auto: keeping {keep}: {why}")
    if keep == "fp32":
        (tmp / INT8_NAME).unlink()
        # What INT8 measured stays in the report, under auto, without claiming a file that is not there.
        report["auto"]["int8"] = report.pop("int8")
        report.pop("size_ratio", None)


def _ort_version() -> str:
    import onnxruntime
    return onnxruntime.__version__


def _fsync_dir_files(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def _new_sibling(out_dir: Path, kind: str) -> Path:
    """A fresh hidden folder beside `out_dir` (same file system, so renames are atomic). mkdir rather than
    mkdtemp: the export folder should get the user's normal permissions, not mkdtemp's 0700."""
    while True:
        p = out_dir.parent / f".{out_dir.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            p.mkdir()
            return p
        except FileExistsError:
            continue


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Replace `out_dir` by the finished `tmp` folder with renames only (same file system, so each is atomic);
    the old folder is moved aside first and deleted only once the new one is in place."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- report.md -------------------------------------------------------------------------------------------------

def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:.2f}%"


def report_markdown(r: dict) -> str:
    f, i = r["fp32"], r.get("int8")
    lines = [f"# {r['model']} on {r['dataset']}: export report", "",
             f"Created {r['created']} by edgefashion {r['edgefashion']} (onnxruntime {r['onnxruntime']}, "
             f"torch {r['torch']}), opset {r['opset']}, input {'x'.join(map(str, r['input']))}.", "",
             "| | FP32 | INT8 |", "|---|---|---|"]
    row = lambda name, a, b: lines.append(f"| {name} | {a} | {b if i else '-'} |")  # noqa: E731
    row("file", f"`{f['path']}`", f"`{i['path']}`" if i else "")
    row("size", f"{f['size_bytes'] / 1024:.1f} KiB", f"{i['size_bytes'] / 1024:.1f} KiB ({r['size_ratio']:.1%})" if i else "")
    row("test accuracy", _pct(f["test_accuracy"]), _pct(i["test_accuracy"]) if i else "")
    row("val accuracy", _pct(f["val_accuracy"]), _pct(i["val_accuracy"]) if i else "")
    row("latency b1 t1 (median / p90)", f"{f['latency_ms_b1_t1']:.3f} / {f['latency_p90_ms_b1_t1']:.3f} ms",
        f"{i['latency_ms_b1_t1']:.3f} / {i['latency_p90_ms_b1_t1']:.3f} ms" if i else "")
    p = r["parity"]
    lines += ["", f"Parity (PyTorch vs onnxruntime FP32, {p['images']} validation images): top-1 agreement "
              f"{p['top1_agreement']:.2%}, max |logit diff| {p['max_abs_logit_diff']:.2e}."]
    if i:
        lines += ["", f"Quantization: {i['mode']} {i['format']}, calibration {i['method']} on {i['calib_size']} "
                  f"training images, per-channel {i['per_channel']}, activations {i['activation_type']}, weights "
                  f"{i['weight_type']}, reduce_range {i['reduce_range']} ({i['reason']}).",
                  f"Accuracy drop {r['accuracy_drop_pp']:+.2f} pp (limit {r['max_drop_pp']} pp): {r['accuracy_guard']}."]
        fb = i.get("first_block_fp32") or {}
        if fb.get("tried"):
            lines += ["", f"First convolution block in FP32 (QDQ propagation off): {fb['reason']}."]
        if i["candidates"]:
            lines += ["", f"Candidates (chosen on {i['selected_on']}):", "", "| method | per-channel | val accuracy |",
                      "|---|---|---|"]
            lines += [f"| {c['method']} | {c['per_channel']} | {_pct(c['val_accuracy'])} |" for c in i["candidates"]]
    if r.get("auto"):
        lines += ["", f"--quantize auto kept {r['auto']['kept']}: {r['auto']['reason']}."]
    if r.get("arm"):
        a = r["arm"]
        lines += ["", f"Emulated ARM ({a['cpu']}, onnxruntime {a['onnxruntime']}), {a['fp32']['images']} test images: "
                  f"FP32 {_pct(a['fp32']['arm_accuracy'])} (x86 agreement {a['fp32']['agreement']:.2%})"
                  + (f", INT8 {_pct(a['int8']['arm_accuracy'])} (x86 agreement {a['int8']['agreement']:.2%}; "
                     f"drop {a['int8_drop_pp']:+.2f} pp: {a.get('accuracy_guard')})" if a.get("int8") else "")
                  + ". Accuracy only: emulated timings are not a Pi's speed."]
    return "\n".join(lines) + "\n"
