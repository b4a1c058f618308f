"""INT8 quantization with onnxruntime: static QDQ post-training quantization calibrated on images that went
through the runtime's preprocessing, and dynamic quantization for MLPs.

Static quantization tries every (calibration method x per-channel on/off) candidate and keeps the one with the
best accuracy on the VALIDATION split; the test split is only ever used afterwards, for the accuracy guard.

Instruction set and integer saturation (onnxruntime's guidance, quantize_static's docstring and
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html): x86 CPUs with AVX2 or AVX-512
but without VNNI multiply u8 x s8 pairs with VPMADDUBSW, whose 16-bit intermediate sum can saturate; 7-bit
weights (reduce_range) avoid it. With VNNI (avx512_vnni / avx_vnni) the products are accumulated in 32 bits and
full-range weights are safe. ARM (NEON, the Raspberry Pi) does not have the problem and its kernels prefer
symmetric int8 activations. The settings are chosen for the CPU that runs the export because that is where the
report's INT8 accuracy is measured; they are recorded in the report.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..names import TRAIN
from ..runtime.classifier import GARMENT_OUTPUT
from ..runtime.cpu import detect_cpu  # noqa: F401

CALIB_METHODS = ("minmax", "entropy", "percentile")


class QuantizeError(RuntimeError):
    """Quantization that failed; the message says which step and file."""


# --- the CPU and the settings it calls for -----------------------------------------------------------------------

# detect_cpu lives in the torch-free runtime (bench reports it on a Pi); imported here for choose_settings
# and for callers that know it as quantize.detect_cpu.


@dataclass(frozen=True)
class QuantSettings:
    activation_type: str  # "QUInt8" or "QInt8"
    weight_type: str
    reduce_range: bool
    isa: str  # what the choice was made for
    reason: str
    target: str = "native"
    # The CPU families (FAMILIES) whose predictions must equal the exporting machine's, image by image.
    families: tuple = ()


# The CPU families whose onnxruntime INT8 kernels compute differently. "x86-avx2" stands for every x86-64 CPU
# without VNNI (AVX2, AVX-512 without VNNI, SSE4.1): their u8 x s8 kernels add pairs of products into a
# saturating 16-bit sum (VPMADDUBSW). "x86-vnni" accumulates in 32 bits. "arm64" (NEON, the Raspberry Pi)
# widens before it adds. Where no sum can saturate, all three compute the same integers.
FAMILIES = ("x86-vnni", "x86-avx2", "arm64")
TARGETS = ("portable", "x86-vnni", "x86-avx2", "arm64", "native")


def cpu_family(cpu: dict) -> str:
    if cpu.get("arm"):
        return "arm64"
    return "x86-vnni" if cpu.get("avx512_vnni") or cpu.get("avx_vnni") else "x86-avx2"


def target_settings(target: str, cpu: dict) -> QuantSettings:
    """The quantization settings for an export target, and the CPU families it must be verified on.

    portable: 7-bit weights (reduce_range) with U8S8. Two products of a u8 activation and a weight in
    [-64, 63] add up to at most 32,640, below the 16-bit limit, so the AVX2 kernels cannot saturate and every
    family computes the exact integer sums VNNI does. Measured, not assumed: benchmarks/portable-int8.md
    compares the candidates on every family (full 8-bit weights change 4 of the 372 photo test predictions on AVX2)."""
    if target == "native":
        s = choose_settings(cpu)
        return QuantSettings(**{**asdict(s), "target": "native", "families": (cpu_family(cpu),)})
    if target == "portable":
        return QuantSettings("QUInt8", "QInt8", True, "portable",
                             "portable: U8S8 with 7-bit weights (reduce_range): no u8s8 sum can saturate, so x86 "
                             "with and without VNNI and ARM64 compute the same integers and give the same answers",
                             "portable", FAMILIES)
    if target == "x86-vnni":
        return QuantSettings("QUInt8", "QInt8", False, "x86-vnni",
                             "x86 with VNNI: u8s8 products accumulate in 32 bits, so full 8-bit weights (U8S8, "
                             "reduce_range off); on x86 without VNNI these files can saturate and answer differently",
                             "x86-vnni", ("x86-vnni",))
    if target == "x86-avx2":
        return QuantSettings("QUInt8", "QInt8", True, "x86-avx2-no-vnni",
                             "x86 AVX2/AVX-512 without VNNI: u8s8 pairs can saturate the 16-bit intermediate sums "
                             "(VPMADDUBSW), so weights are quantized to 7 bits (reduce_range on)",
                             "x86-avx2", ("x86-avx2",))
    if target == "arm64":
        return QuantSettings("QInt8", "QInt8", False, "arm-neon",
                             "ARM64/NEON: no u8s8 saturation; symmetric int8 activations suit the ARM kernels (S8S8)",
                             "arm64", ("arm64",))
    raise QuantizeError(f"--target {target!r}: choose from {', '.join(TARGETS)}")


def choose_settings(cpu: dict) -> QuantSettings:
    """The settings that suit the CPU that runs the export (target "native")."""
    if cpu.get("arm"):
        return QuantSettings("QInt8", "QInt8", False, "arm-neon",
                             "ARM/NEON: no u8s8 saturation; symmetric int8 activations suit the ARM kernels (S8S8)")
    if cpu.get("avx512_vnni") or cpu.get("avx_vnni"):
        which = "avx512_vnni" if cpu.get("avx512_vnni") else "avx_vnni"
        return QuantSettings("QUInt8", "QInt8", False, f"x86-{which}",
                             f"x86 with {which}: VNNI accumulates u8s8 products in 32 bits, no saturation, so "
                             f"full 8-bit weights (U8S8, reduce_range off)")
    if cpu.get("avx2") or cpu.get("avx512"):
        which = "avx512" if cpu.get("avx512") else "avx2"
        return QuantSettings("QUInt8", "QInt8", True, f"x86-{which}-no-vnni",
                             f"x86 {which} without VNNI: u8s8 pairs can saturate the 16-bit intermediate sums "
                             f"(VPMADDUBSW), so weights are quantized to 7 bits (reduce_range on)")
    # Unknown CPU (no /proc/cpuinfo, an old x86): the setting that is safe everywhere.
    return QuantSettings("QUInt8", "QInt8", True, "unknown",
                         "CPU features unknown: reduce_range on, which avoids u8s8 saturation on any x86 CPU")


# --- calibration data ------------------------------------------------------------------------------------------

def _calibration_reader(x: np.ndarray, input_name: str, max_batch: int = 32):
    """A CalibrationDataReader over a float32 NCHW array that already went through runtime preprocessing."""
    from onnxruntime.quantization import CalibrationDataReader
    # All batches must have the same size: onnxruntime's histogram calibrators (Entropy, Percentile) stack the
    # per-batch outputs and fail on a shorter last batch. So the largest divisor of len(x) up to max_batch.
    batch_size = max(d for d in range(1, min(max_batch, max(len(x), 1)) + 1) if len(x) % d == 0)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)
                                  for i in range(0, len(x), batch_size)])

        def get_next(self):
            b = next(self._batches, None)
            return None if b is None else {input_name: b}

        def rewind(self) -> None:
            self.__init__()

    return _Reader()


def _input_name(path: Path) -> str:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    names = [i.name for i in m.graph.input if i.name not in inits]
    if len(names) != 1:
        raise QuantizeError(f"{path}: expected one graph input, got {names}")
    return names[0]


def preprocess_for_quantization(src: Path, dst: Path) -> None:
    """onnxruntime's recommended pre-step: symbolic shape inference + graph optimisation (BatchNorm folding,
    etc.), so the quantizer sees the graph that will actually run and every tensor has a shape."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    except Exception as e:
        raise QuantizeError(f"{src}: quantization pre-processing failed ({type(e).__name__}: {e})") from None
    _name_unnamed_nodes(dst)


def _name_unnamed_nodes(path: Path) -> None:
    """The quantizer excludes nodes by name, and inlined ONNX functions leave nodes without one (timm's
    HardSwish becomes two unnamed HardSigmoid/Mul nodes): name them, or `nodes_to_exclude` cannot reach them."""
    import onnx
    model = onnx.load(str(path))
    unnamed = [n for n in model.graph.node if not n.name]
    if not unnamed:
        return
    taken = {n.name for n in model.graph.node}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name, k = f"{n.op_type}_{i}", 0
            while name in taken:
                k += 1
                name = f"{n.op_type}_{i}_{k}"
            n.name = name
            taken.add(name)
    onnx.save(model, str(path))


# --- evaluation ------------------------------------------------------------------------------------------------

def onnx_logits(path: str | Path, x: np.ndarray, batch_size: int = 256, threads: int | None = None,
                disabled_optimizers: Sequence[str] | None = None) -> np.ndarray:
    """Logits of an ONNX file (no metadata needed: candidates and pre-processed files have none)."""
    from ..runtime.classifier import open_session
    sess = open_session(path, threads, disabled_optimizers=disabled_optimizers)
    name = sess.get_inputs()[0].name
    out = [sess.run(None, {name: np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)})[0]
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def onnx_accuracy(path: str | Path, x: np.ndarray, y: np.ndarray, batch_size: int = 256,
                  disabled_optimizers: Sequence[str] | None = None) -> float:
    if len(x) == 0:
        raise QuantizeError("no images to measure accuracy on")
    logits = onnx_logits(path, x, batch_size, disabled_optimizers=disabled_optimizers)
    return float((logits.argmax(1) == np.asarray(y)).mean())


# --- static and dynamic quantization --------------------------------------------------------------------------

def _qtype(name: str):
    from onnxruntime.quantization import QuantType
    return getattr(QuantType, name)


def _calib_method(name: str):
    from onnxruntime.quantization import CalibrationMethod
    table = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    if name not in table:
        raise QuantizeError(f"unknown calibration method {name!r}; choose from {CALIB_METHODS}")
    return table[name]


def quantize_static_file(pre_path: Path, out_path: Path, calib_x: np.ndarray, settings: QuantSettings, *,
                         method: str = "minmax", per_channel: bool = True,
                         nodes_to_exclude: Sequence[str] = ()) -> None:
    """One static QDQ quantization of an already pre-processed model (`nodes_to_exclude` stay FP32)."""
    from onnxruntime.quantization import QuantFormat, quantize_static
    if len(calib_x) == 0:
        raise QuantizeError("static quantization needs calibration images (--calib-size > 0)")
    reader = _calibration_reader(calib_x, _input_name(pre_path))
    nodes_to_exclude = [*nodes_to_exclude, *output_head_nodes(pre_path, GARMENT_OUTPUT)]
    try:
        # The histogram calibrators print progress with print(); keep the export's own log readable.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(str(pre_path), str(out_path), reader, quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, reduce_range=settings.reduce_range,
                            nodes_to_exclude=list(nodes_to_exclude),
                            activation_type=_qtype(settings.activation_type),
                            weight_type=_qtype(settings.weight_type), calibrate_method=_calib_method(method),
                            # onnxruntime's default percentile, written out so the code states it.
                            extra_options={"CalibPercentile": 99.999} if method == "percentile" else None)
    except QuantizeError:
        raise
    except Exception as e:
        raise QuantizeError(f"{pre_path}: static quantization ({method}, per_channel={per_channel}) failed "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def output_head_nodes(pre_path: Path, output: str) -> "list[str]":
    """Names of the nodes that only `output` needs: from the node producing it back to where its chain meets the
    rest of the graph (a tensor another node also reads). Empty when the graph has no such output.

    Why the garment head stays FP32: static quantization fixes each tensor's range from calibration images, which
    are all garment photos, and every range includes 0, so the empty frames' negative garment logits, the very
    values the camera's 'uncertain' is decided on, would be clipped to 0. The head is one small linear layer."""
    import onnx
    g = onnx.load(str(pre_path), load_external_data=False).graph
    if output not in {o.name for o in g.output}:
        return []
    producer = {t: n for n in g.node for t in n.output}
    readers: dict = {}
    for n in g.node:
        for t in n.input:
            readers[t] = readers.get(t, 0) + 1
    inits = {i.name for i in g.initializer}
    chain, tensor = [], output
    while tensor in producer:
        node = producer[tensor]
        chain.append(node.name)
        data = [t for t in node.input if t and t not in inits]
        if len(data) != 1 or readers.get(data[0], 0) != 1:
            break
        tensor = data[0]
    return chain


def quantize_static_search(fp32_path: Path, out_path: Path, calib_x: np.ndarray, val_x: np.ndarray,
                           val_y: np.ndarray, settings: QuantSettings, *,
                           methods: Sequence[str] = CALIB_METHODS, per_channel: Iterable[bool] = (False, True),
                           log: Callable[[str], None] = print) -> dict:
    """Quantize `fp32_path` with every (method, per_channel) candidate, measure each on the validation split,
    write the best to `out_path` and return the quantization report (settings, chosen, candidates).

    Preference on equal validation accuracy follows the order tried: MinMax before Entropy before Percentile
    (simplest), per-tensor before per-channel (fewer scales, a little faster)."""
    methods = [m.lower() for m in methods]
    for m in methods:
        _calib_method(m)
    per_channel = list(per_channel)
    if not methods or not per_channel:
        raise QuantizeError("no quantization candidates to try")
    if len(val_x) == 0:
        raise QuantizeError("choosing a calibration needs validation images")
    work = Path(tempfile.mkdtemp(prefix=".quant-", dir=Path(out_path).parent))
    try:
        pre = work / "pre.onnx"
        preprocess_for_quantization(Path(fp32_path), pre)
        candidates, best, best_path = [], None, None
        for m in methods:
            for pc in per_channel:
                path = work / f"{m}-{'pc' if pc else 'pt'}.onnx"
                t0 = time.perf_counter()
                quantize_static_file(pre, path, calib_x, settings, method=m, per_channel=pc)
                acc = onnx_accuracy(path, val_x, val_y)
                c = {"method": m, "per_channel": pc, "val_accuracy": acc, "size_bytes": path.stat().st_size,
                     "seconds": round(time.perf_counter() - t0, 2)}
                candidates.append(c)
                log(f"  int8 candidate {m:<10} per_channel={str(pc):<5} val acc {acc:.4f}")
                if best is None or acc > best["val_accuracy"]:
                    best, best_path = c, path
        first = _first_block_candidate(pre, best, best_path, work, calib_x, val_x, val_y, settings, log=log)
        if first.get("kept"):
            best_path = work / "first-block-fp32.onnx"
        shutil.copyfile(best_path, out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rep = {"mode": "static", "format": "QDQ", "method": best["method"], "per_channel": best["per_channel"],
           **_settings_dict(settings), "calib_size": int(len(calib_x)), "calib_split": TRAIN,
           "selected_on": f"val ({len(val_x)} images)", "first_block_fp32": first, "candidates": candidates}
    if first.get("kept"):
        rep["ort_disabled_optimizers"] = list(NO_QDQ_PROPAGATION)
    return rep


# Why these two go together: benchmarks/README.md ("INT8 vs FP32 on this CPU") and runtime.classifier.open_session.
NO_QDQ_PROPAGATION = ("QDQPropagationTransformer",)
# The first block stays FP32 only when it is at least this much faster (interleaved ratio), at no validation
# accuracy cost beyond FIRST_BLOCK_ACC_TOLERANCE: a file with an odd session setting must earn its place.
FIRST_BLOCK_MIN_GAIN = 0.97
FIRST_BLOCK_ACC_TOLERANCE = 0.001


def first_block_nodes(pre_path: Path) -> "list[str]":
    """Names of the graph's first convolution block: from the first node up to the first pooling (included) or
    the next convolution (excluded). Empty when the graph does not start with a Conv."""
    import onnx
    nodes = onnx.load(str(pre_path), load_external_data=False).graph.node
    if not nodes or nodes[0].op_type != "Conv":
        return []
    block: "list[str]" = []
    for n in nodes:
        if n.op_type == "Conv" and block:
            break
        block.append(n.name)
        if n.op_type in ("MaxPool", "AveragePool"):
            break
    return block


def _first_block_candidate(pre: Path, best: dict, best_path: Path, work: Path, calib_x: np.ndarray,
                           val_x: np.ndarray, val_y: np.ndarray, settings: QuantSettings, *,
                           log: Callable[[str], None]) -> dict:
    """The chosen calibration again with the first convolution block left in FP32 (run without QDQ
    propagation): kept when it is faster on this CPU at batch 1, 1 thread, and as accurate on validation.

    A first convolution over 1-3 input channels has a tiny GEMM depth (K = 9 for cnn4's 3x3 over one channel),
    and onnxruntime's INT8 kernels pay more in packing and layout changes for it than FP32's direct kernel does
    for all of it; that made cnn4's fully quantized file slower than its FP32 file here."""
    from ..runtime.bench import compare_latency
    nodes = first_block_nodes(pre)
    if not nodes:
        return {"tried": False, "reason": "the graph does not start with a convolution"}
    path = work / "first-block-fp32.onnx"
    quantize_static_file(pre, path, calib_x, settings, method=best["method"], per_channel=best["per_channel"],
                         nodes_to_exclude=nodes)
    acc = onnx_accuracy(path, val_x, val_y, disabled_optimizers=NO_QDQ_PROPAGATION)
    shape = (1, *val_x.shape[1:])
    c = compare_latency(best_path, path, shape, runs=300, disabled=(None, NO_QDQ_PROPAGATION))
    faster = c["b_over_a"] <= FIRST_BLOCK_MIN_GAIN
    accurate = acc >= best["val_accuracy"] - FIRST_BLOCK_ACC_TOLERANCE
    kept = faster and accurate
    why = (f"first block in FP32: {c['b_ms']:.4f} ms vs {c['a_ms']:.4f} ms fully INT8 (ratio {c['b_over_a']:.3f}, "
           f"batch 1, 1 thread), val acc {acc:.4f} vs {best['val_accuracy']:.4f}: "
           + ("kept" if kept else "not kept (" + ("not faster" if not faster else "less accurate") + ")"))
    log(f"  {why}")
    return {"tried": True, "kept": kept, "nodes": nodes, "val_accuracy": acc, "full_int8_ms": c["a_ms"],
            "first_block_fp32_ms": c["b_ms"], "ratio": c["b_over_a"], "disabled_optimizers": list(NO_QDQ_PROPAGATION),
            "reason": why}


def quantize_dynamic_file(fp32_path: Path, out_path: Path, settings: QuantSettings) -> dict:
    """Dynamic quantization: int8 weights, activations quantized per batch at run time (MatMulInteger /
    ConvInteger). Suits MLPs, whose cost is their weight matrices."""
    from onnxruntime.quantization import quantize_dynamic
    work = Path(tempfile.mkdtemp(prefix=".quant-", dir=Path(out_path).parent))
    try:
        pre = work / "pre.onnx"
        preprocess_for_quantization(Path(fp32_path), pre)
        try:
            quantize_dynamic(str(pre), str(out_path), per_channel=False, reduce_range=settings.reduce_range,
                             weight_type=_qtype(settings.weight_type))
        except Exception as e:
            raise QuantizeError(f"{fp32_path}: dynamic quantization failed ({type(e).__name__}: {e})") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s = _settings_dict(settings)
    s["activation_type"] = "QUInt8 (dynamic, per batch)"  # DynamicQuantizeLinear always produces uint8
    return {"mode": "dynamic", "format": "QOperator (MatMulInteger/ConvInteger)", "method": "dynamic",
            "per_channel": False, **s, "calib_size": 0, "candidates": []}


def _settings_dict(s: QuantSettings) -> dict:
    d = asdict(s)
    return {"activation_type": d["activation_type"], "weight_type": d["weight_type"],
            "reduce_range": d["reduce_range"], "isa": d["isa"], "reason": d["reason"], "target": d["target"],
            "target_families": list(d["families"])}


# --- latency ---------------------------------------------------------------------------------------------------

def measure_latency(path: str | Path, input_shape: Sequence[int], *, runs: int = 200, warmup: int = 20,
                    threads: int = 1) -> dict:
    """Batch latency of an ONNX file on `threads` intra-op threads: median and p90 over `runs` timed runs
    after `warmup` untimed ones (the first runs pay for allocation and kernel selection)."""
    from ..runtime.classifier import open_session
    sess = open_session(path, threads)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(tuple(input_shape)).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, {name: x})
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times[i] = time.perf_counter() - t0
    return {"median_ms": round(float(np.median(times) * 1e3), 4), "p90_ms": round(float(np.percentile(times, 90) * 1e3), 4),
            "runs": runs, "threads": threads, "batch": int(input_shape[0])}


def file_size(path: str | Path) -> int:
    return os.path.getsize(path)
