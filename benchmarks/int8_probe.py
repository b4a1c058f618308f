#!/usr/bin/env python3
"""Why is an INT8 file slower or faster than its FP32 file here? The experiment behind benchmarks/README.md's
findings, for one exported FP32 model (Fashion-MNIST models; needs the training extra for onnx).

    python benchmarks/int8_probe.py export/cnn4-fashion-mnist/model.onnx [--profile]

Builds INT8 variants (QDQ / QOperator, per-tensor / per-channel, first conv block kept in FP32) with 300
calibration images, times them interleaved against the FP32 file at batch 1 and 32 on 1 thread, with and
without onnxruntime's QDQPropagationTransformer, and prints int8/fp32 ratios and accuracy on 3,000 test
images. --profile prints onnxruntime's per-node kernel times of each variant at batch 32.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from edgefashion import data as efdata
from edgefashion.runtime.bench import round_ratio, time_interleaved
from edgefashion.runtime.classifier import Classifier, session_options
from edgefashion.runtime.preprocess import normalize
from edgefashion.training import quantize as q

NOPROP = ["QDQPropagationTransformer"]


def session(path, disabled=(), profile=None):
    so = session_options(1)
    if profile:
        so.enable_profiling, so.profile_file_prefix = True, profile
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled))


def kernel_times(path, x, disabled, work):
    s = session(path, disabled, str(work / "prof"))
    for _ in range(50):
        s.run(None, {"input": x})
    agg = collections.defaultdict(float)
    for e in json.load(open(s.end_profiling())):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            agg[f"{e['args']['op_name']} {e['name'][:-12]}"] += e["dur"] / 50
    return sorted(agg.items(), key=lambda kv: -kv[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fp32", type=Path)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    meta = Classifier(a.fp32).meta
    raw = efdata.load_fashion_mnist(efdata.resolve_data_root(a.data_dir), download=False)
    calib = normalize(raw["train"][0][:300, ..., None], meta)
    xte, yte = normalize(raw["test"][0][:3000, ..., None], meta), raw["test"][1][:3000]
    work = Path(tempfile.mkdtemp(prefix="int8-probe-"))
    pre = work / "pre.onnx"
    q.preprocess_for_quantization(a.fp32, pre)
    first_block = q.first_block_nodes(pre)  # the first conv and what follows it up to the first pooling
    variants = {"qdq per-tensor": (QuantFormat.QDQ, False, []), "qdq per-channel": (QuantFormat.QDQ, True, []),
                "qop per-tensor": (QuantFormat.QOperator, False, []),
                "qop per-channel": (QuantFormat.QOperator, True, []),
                "qdq per-tensor, first block fp32": (QuantFormat.QDQ, False, first_block)}
    paths = {"fp32": a.fp32}
    for i, (name, (fmt, pc, ex)) in enumerate(variants.items()):
        paths[name] = work / f"v{i}.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(str(pre), str(paths[name]), q._calibration_reader(calib, "input"), quant_format=fmt,
                            per_channel=pc, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=ex)
    runs = [(name, p, ()) for name, p in paths.items()]
    runs += [(f"{name} + no QDQ propagation", p, NOPROP) for name, p in paths.items() if name != "fp32"]
    print(f"first block kept in FP32 by the last variant: {first_block}")
    for bs in (1, 32):
        x = np.random.default_rng(0).standard_normal((bs, meta.in_chans, meta.input_size, meta.input_size))
        x = x.astype(np.float32)
        sessions = [session(p, d) for _, p, d in runs]
        t = time_interleaved([lambda s=s: s.run(None, {"input": x}) for s in sessions], 20, 400 if bs == 1 else 100, 10)
        print(f"\nbatch {bs}, 1 thread{'':<32}median ms  int8/fp32  test acc (3,000)")
        for j, (name, p, d) in enumerate(runs):
            acc = float((sessions[j].run(None, {"input": xte})[0].argmax(1) == yte).mean())
            print(f"  {name:<50}{np.median(t[:, j]) * 1e3:9.4f}  {round_ratio(t[:, j], t[:, 0], 10):9.3f}  {acc:.4f}")
        if a.profile and bs == 32:
            for name, p, d in runs:
                print(f"\nprofile, batch 32: {name}")
                for k, us in kernel_times(p, x, d, work)[:8]:
                    print(f"  {us:9.1f} us  {k}")


if __name__ == "__main__":
    main()
