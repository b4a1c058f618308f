#!/usr/bin/env python3
"""Which INT8 settings give the same answers on every CPU family, and what that costs: the measurement behind
`edgefashion export --target portable`.

For each bundled model's FP32 file, the same calibration (MinMax, per-channel, the same training images) is
quantized with each candidate setting; each file is then scored natively, under `qemu-x86_64 -cpu Haswell`
(AVX2, no VNNI), against the exact VNNI reference (or natively on a VNNI host), and on an emulated Raspberry Pi 4,
image by image; and timed natively against the fastest candidate (batch 1, 1 thread, interleaved).

    python benchmarks/portable_int8.py                 # both bundled models -> benchmarks/portable-int8.{json,md}
    python benchmarks/portable_int8.py --subset 500    # fewer Fashion-MNIST images (photos: all 372 at most)

Timings under emulation are qemu's and are never reported; the latencies are this machine's.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from edgefashion.runtime import emulate  # noqa: E402
from edgefashion.runtime.bench import compare_latency  # noqa: E402
from edgefashion.runtime.cpu import cpu_model  # noqa: E402
from edgefashion.training import export as ex  # noqa: E402
from edgefashion.training import quantize as q  # noqa: E402

# (name, activation type, weight type, reduce_range)
CANDIDATES = (("U8S8 8-bit weights (x86-vnni)", "QUInt8", "QInt8", False),
              ("U8S8 7-bit weights (portable, x86-avx2)", "QUInt8", "QInt8", True),
              ("S8S8 8-bit weights (arm64)", "QInt8", "QInt8", False))
CPUS = ["haswell", "vnni", "pi4"]


def measure(fp32: Path, subset: int, data_dir: str | None, work: Path, log) -> dict:
    source = ex.load_source(fp32)
    data = ex.load_run_data(source, data_dir, 300, 256, log)
    pre = work / "pre.onnx"
    q.preprocess_for_quantization(fp32, pre)
    shape = (1, *ex.meta_shape(source.meta))
    rows, files = [], []
    for i, (name, act, wt, rr) in enumerate(CANDIDATES):
        f = work / f"cand{i}.int8.onnx"
        s = q.QuantSettings(act, wt, rr, "candidate", name)
        q.quantize_static_file(pre, f, data.calib_x, s, method="minmax", per_channel=True)
        ex.rewrite_metadata(f, source.meta.replace(extra={**source.meta.extra, "precision": "int8",
                                                          "quantization": {"target": "candidate", "isa": "candidate"}}))
        files.append(f)
        r = emulate.cpu_check([str(f)], CPUS, subset=subset, data=source.meta.dataset, data_dir=data_dir,
                              max_drop=1e9, log=log)
        by = {row["cpu"]: row for row in r["rows"]}
        rows.append({"settings": name, "activation_type": act, "weight_type": wt, "reduce_range": rr,
                     "test_accuracy_full": q.onnx_accuracy(f, data.test_x, data.test_y),
                     "cpus": {c: {k: by[c][k] for k in ("family", "how", "images", "accuracy", "agreement",
                                                          "disagreements")} for c in by}})
        log(f"{name}: " + ", ".join(f"{c} {by[c]['accuracy']:.4f} ({by[c]['disagreements']} differ)" for c in by))
    # Latency of every candidate against the portable one, interleaved on this machine.
    portable = files[1]
    for row, f in zip(rows, files):
        c = compare_latency(portable, f, shape, runs=300)
        row.update(latency_ms=c["b_ms"], latency_over_portable=c["b_over_a"])
    return {"model": source.meta.model, "dataset": source.meta.dataset, "fp32": str(fp32.relative_to(REPO)),
            "fp32_test_accuracy": q.onnx_accuracy(fp32, data.test_x, data.test_y), "candidates": rows}


def markdown(r: dict) -> str:
    out = ["# Portable INT8: the same answers on every CPU family", "",
           f"Measured {r['date']} on {r['host']} ({r['host_family']}; onnxruntime {r['onnxruntime']}). "
           f"Agreement is per image with this machine's answers; `vnni` is {r['vnni']}. "
           "Latency: batch 1, 1 thread, interleaved with the portable file, this machine (emulated timings are "
           "never reported).", ""]
    for m in r["models"]:
        out += [f"## {m['model']} on {m['dataset']} (FP32 test accuracy {m['fp32_test_accuracy']:.2%})", "",
                "| settings | test acc (native, all) | Haswell differ | VNNI differ | Pi 4 differ | images | "
                "latency here | vs portable |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for c in m["candidates"]:
            cp = c["cpus"]
            out.append(f"| {c['settings']} | {c['test_accuracy_full']:.2%} | {cp['haswell']['disagreements']} | "
                       f"{cp['vnni']['disagreements']} | {cp['pi4']['disagreements']} | {cp['native']['images']} | "
                       f"{c['latency_ms']:.3f} ms | {c['latency_over_portable']:.2f}x |")
        out.append("")
    return "\n".join(out) + "\n"


def main() -> int:
    import datetime

    import onnxruntime
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None, help="FP32 files [default: every export/*/model.onnx]")
    ap.add_argument("--subset", type=int, default=2000)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, default=HERE / "portable-int8")
    a = ap.parse_args()
    models = [Path(m) for m in a.models] if a.models else sorted(REPO.glob("export/*/model.onnx"))
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    runner = emulate.cpu_runner("vnni")
    res = {"date": datetime.date.today().isoformat(), "host": cpu_model(), "machine": platform.machine(),
           "host_family": emulate.host_family(), "onnxruntime": onnxruntime.__version__,
           "vnni": runner["name"], "subset": a.subset, "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            work = Path(tmp) / m.parent.name
            work.mkdir()
            res["models"].append(measure(m.resolve(), a.subset, a.data_dir, work, log))
    a.out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    a.out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
