#!/usr/bin/env python3
"""Does quantization-aware training fix a model that static INT8 breaks? The experiment behind `train --qat`
(issue 17, not built yet), with PyTorch's own tooling, for one trained photo checkpoint (mobilenetv3-small: 61.56%
FP32, 33.60% static INT8 in benchmarks/reproduce-photos.md).

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
import operator
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.fx
import torch.nn as nn
from timm.layers import BatchNormAct2d
from torch.ao.quantization import (FakeQuantize, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
                                   QConfig, QConfigMapping, disable_observer)
from torch.ao.quantization.quantize_fx import prepare_qat_fx

from edgefashion.training.datasets import batch_to_input
from edgefashion.training.quantize import measure_latency
from edgefashion.training.distributed import Dist
from edgefashion.training.train import (TrainConfig, _load_bundle, load_checkpoint, model_from_checkpoint,
                                        resolve_config, train_one_epoch)


class _BnActLeaf(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, BatchNormAct2d) or super().is_leaf_module(m, qualname)


def fold_bn(model: nn.Module) -> tuple[torch.fx.GraphModule, int]:
    """Every Conv2d -> BatchNormAct2d pair: the BN (eval statistics) folded into the conv, the BatchNormAct2d
    replaced by its activation; returns the traced module and the number of pairs folded."""
    model.eval()
    gm = torch.fx.GraphModule(model, _BnActLeaf().trace(model))
    mods = dict(gm.named_modules())
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(mods[node.target], BatchNormAct2d):
            continue
        prev = node.args[0]
        if prev.op == "call_module" and isinstance(mods[prev.target], nn.Conv2d) and len(prev.users) == 1:
            bn = mods[node.target]
            for target, new in ((prev.target, torch.nn.utils.fusion.fuse_conv_bn_eval(mods[prev.target], bn)),
                                (node.target, nn.Sequential(bn.drop, bn.act))):
                parent, _, name = target.rpartition(".")
                setattr(gm.get_submodule(parent) if parent else gm, name, new)
            folded += 1
    gm.recompile()
    return torch.fx.GraphModule(gm, torch.fx.symbolic_trace(gm).graph), folded


def qconfig_mapping(per_channel: bool = True, float_elementwise: bool = False) -> QConfigMapping:
    act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                 dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    if per_channel:
        weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-64,
                                        quant_max=63, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                        ch_axis=0)
    else:
        weight = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-64, quant_max=63,
                                        dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    mapping = QConfigMapping().set_global(QConfig(activation=act, weight=weight))
    if float_elementwise:
        # No fake quantization at the outputs of the float-only operators (hard-swish, hard-sigmoid, the
        # squeeze-excite multiply): their results differ by an ulp between x86 and ARM kernels, and rounding
        # them to 8 bits right there turns that into different integers.
        for kind in (nn.Hardswish, nn.Hardsigmoid, operator.mul, torch.mul, "mean"):
            mapping.set_object_type(kind, None)
    return mapping


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
    folded, pairs = fold_bn(model)
    qat = prepare_qat_fx(folded.train(), qconfig_mapping(not args.per_tensor, args.float_elementwise), (batch_to_input(train.x[:8], meta),))
    opt = torch.optim.Adam(qat.parameters(), lr=args.lr)
    history = []
    for epoch in range(args.epochs):
        if epoch == args.epochs - 1:
            qat.apply(disable_observer)
        t = time.perf_counter()
        r = train_one_epoch(qat, train, meta, opt, cfg, 1000 + epoch, device=torch.device("cpu"), progress=False)
        history.append({"epoch": epoch + 1, "train_loss": round(r["loss"], 4), "train_acc": round(r["acc"], 4),
                        "val_acc_fake_quant": round(torch_accuracy(qat, val, meta), 4),
                        "seconds": round(time.perf_counter() - t, 1)})
        print(history[-1], flush=True)
    fake = {"val": torch_accuracy(qat, val, meta), "test": torch_accuracy(qat, test, meta)}
    for m in qat.modules():  # the exporter accepts only int8's full range; the 7-bit values stay as they are
        if isinstance(m, FakeQuantize) and m.quant_min == -64:
            m.quant_min, m.quant_max = -128, 127
            m.activation_post_process.quant_min, m.activation_post_process.quant_max = -128, 127
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx_path = out.with_name(out.name + ".int8.onnx")  # the name cpu-check reads as an INT8 file
    torch.onnx.export(qat.eval(), (batch_to_input(val.x[:2], meta),), str(onnx_path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    g = onnx.load(str(onnx_path))
    props = meta.replace(extra={**meta.extra, "precision": "int8", "qat": True}).to_onnx_props()
    onnx.helper.set_model_props(g, props)
    onnx.save(g, str(onnx_path))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    result = {
        "checkpoint": args.checkpoint, "model": meta.model, "epochs": args.epochs, "lr": args.lr,
        "weights": "per-tensor" if args.per_tensor else "per-channel", "float_elementwise": args.float_elementwise,
        "bn_pairs_folded": pairs, "ops": dict(collections.Counter(n.op_type for n in g.graph.node).most_common()),
        "fp32_torch": fp32, "fake_quant_torch": fake, "history": history,
        "int8_onnxruntime": {"val": ort_scores(sess, qat, val, meta), "test": ort_scores(sess, qat, test, meta)},
        "int8_latency_ms_b1_t1": measure_latency(onnx_path, (1, meta.in_chans, meta.input_size, meta.input_size),
                                                 runs=200)["median_ms"],
        "onnxruntime": ort.__version__, "torch": torch.__version__,
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("fp32_torch", "fake_quant_torch", "int8_onnxruntime")}))
    print(f"wrote {onnx_path} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
