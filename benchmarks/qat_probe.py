#!/usr/bin/env python3
"""Does quantization-aware training fix a model that static INT8 breaks? The experiment behind `train --qat`
(edgefashion/training/qat.py, whose pieces it uses), with PyTorch's own tooling, for one trained photo checkpoint
(mobilenetv3-small: 61.56% FP32, 33.60% static INT8 in benchmarks/reproduce-photos.md), and the quantization
choices train --qat does not make (--per-tensor; every operator quantized without --float-elementwise).

    python benchmarks/qat_probe.py runs/mnv3-64/best.pt [--epochs 2] [--out benchmarks/results/qat-probe]

Steps: BatchNorm folded into the convolution before it (timm's BatchNormAct2d is traced as one module, so FX
can see the pairs); torch.ao FX `prepare_qat_fx` with fake quantization of uint8 per-tensor activations and
7-bit per-channel symmetric weights (the portable target's, so AVX2 without VNNI cannot saturate); a few epochs
of fine-tuning at Adam 1e-4 with the checkpoint's augmentation, observers frozen for the last; then ONNX QDQ
from the TorchScript exporter (the 7-bit range is declared as int8's -128..127 for it: the values stay in
-64..63) and onnxruntime's accuracy on the validation and test splits. Writes OUT.int8.onnx (with the
checkpoint's edgefashion metadata, so `edgefashion cpu-check OUT.int8.onnx` runs it on the other CPU families)
and OUT.json. --float-elementwise leaves hard-swish, hard-sigmoid and the squeeze-excite multiply unquantized:
the variant that gives the same answers on every CPU family.
"""
from __future__ import annotations

import argparse
import collections
import json
import time
import warnings
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

from edgefashion.training import qat
from edgefashion.training.datasets import batch_to_input
from edgefashion.training.distributed import Dist
from edgefashion.training.export import export_onnx
from edgefashion.training.quantize import measure_latency
from edgefashion.training.train import (TrainConfig, _load_bundle, load_checkpoint, model_from_checkpoint,
                                        resolve_config, train_one_epoch)


def torch_accuracy(model: nn.Module, split, meta) -> float:
    model.eval()
    with torch.no_grad():
        right = sum(int((model(batch_to_input(split.x[i:i + 256], meta)).argmax(1) == split.y[i:i + 256]).sum())
                    for i in range(0, len(split), 256))
    return right / len(split)


def ort_scores(session: ort.InferenceSession, model: nn.Module, split, meta) -> dict:
    right = agree = 0
    for i in range(0, len(split), 256):
        xb = batch_to_input(split.x[i:i + 256], meta)
        y = session.run(None, {"input": xb.numpy()})[0].argmax(1)
        with torch.no_grad():
            t = model(xb).argmax(1).numpy()
        right += int((y == split.y[i:i + 256].numpy()).sum())
        agree += int((y == t).sum())
    return {"accuracy": round(right / len(split), 4), "agreement_with_fake_quant": round(agree / len(split), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--epochs", type=int, default=2, help="QAT epochs (observers frozen for the last one).")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--per-tensor", action="store_true", help="One weight scale per tensor, not per channel.")
    ap.add_argument("--float-elementwise", action="store_true",
                    help="Leave hard-swish, hard-sigmoid and the squeeze-excite multiply unquantized.")
    ap.add_argument("--out", default="benchmarks/results/qat-probe")
    args = ap.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2: one to observe the ranges, the last with them frozen")
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.manual_seed(0)
    ckpt = load_checkpoint(args.checkpoint)
    model, meta = model_from_checkpoint(ckpt)
    cfg = resolve_config(TrainConfig(**{**ckpt["config"], "data_dir": args.data_dir or ckpt["config"].get("data_dir"),
                                        "lr": args.lr, "mixup": 0.0, "cutmix": 0.0}))
    bundle = _load_bundle(cfg, torch.device("cpu"), Dist(), print)
    train, val, test = (bundle.splits[k] for k in ("train", "val", "test"))
    fp32 = {"val": torch_accuracy(model, val, meta), "test": torch_accuracy(model, test, meta)}
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    mapping = qat.qconfig_mapping(per_channel=not args.per_tensor, float_elementwise=args.float_elementwise)
    qmodel = qat.prepare(model, meta, mapping)  # BN folded into the convolutions, then fake quantization
    opt = torch.optim.Adam(qmodel.parameters(), lr=args.lr)
    history = []
    for epoch in range(args.epochs):
        if epoch == args.epochs - 1:
            qat.freeze_observers(qmodel)
        t = time.perf_counter()
        r = train_one_epoch(qmodel, train, meta, opt, cfg, 1000 + epoch, device=torch.device("cpu"), progress=False)
        with qat.observers_paused(qmodel):
            val_acc = torch_accuracy(qmodel, val, meta)
        history.append({"epoch": epoch + 1, "train_loss": round(r["loss"], 4), "train_acc": round(r["acc"], 4),
                        "val_acc_fake_quant": round(val_acc, 4), "seconds": round(time.perf_counter() - t, 1)})
        print(history[-1], flush=True)
    fake = {"val": torch_accuracy(qmodel, val, meta), "test": torch_accuracy(qmodel, test, meta)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx_path = out.with_name(out.name + ".int8.onnx")  # the name cpu-check reads as an INT8 file
    # As `export` writes a --qat run's INT8 file: 7-bit weights snapped to their grid, stored as int8.
    export_onnx(qat.for_export(qmodel), meta.replace(extra={**meta.extra, "precision": "int8", "qat": True}),
                onnx_path, transform=qat.fold_weight_quantizers)
    g = onnx.load(str(onnx_path))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    result = {
        "checkpoint": args.checkpoint, "model": meta.model, "epochs": args.epochs, "lr": args.lr,
        "weights": "per-tensor" if args.per_tensor else "per-channel", "float_elementwise": args.float_elementwise,
        "batchnorms": batchnorms, "ops": dict(collections.Counter(n.op_type for n in g.graph.node).most_common()),
        "fp32_torch": fp32, "fake_quant_torch": fake, "history": history,
        "int8_onnxruntime": {"val": ort_scores(sess, qmodel, val, meta), "test": ort_scores(sess, qmodel, test, meta)},
        "int8_latency_ms_b1_t1": measure_latency(onnx_path, (1, meta.in_chans, meta.input_size, meta.input_size),
                                                 runs=200)["median_ms"],
        "onnxruntime": ort.__version__, "torch": torch.__version__,
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("fp32_torch", "fake_quant_torch", "int8_onnxruntime")}))
    print(f"wrote {onnx_path} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
