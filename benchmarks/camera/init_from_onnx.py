"""Turn an exported FP32 ONNX file of a zoo ResNet (BatchNorm folded into its convolutions) back into a PyTorch
checkpoint that `edgefashion train --init-weights` takes, so a camera-domain run can fine-tune the bundled model
instead of training 150 epochs from scratch. The checkpoint is self-describing (model, arguments, the file's
metadata and split, its data set), so `edgefashion ensemble` can take the bundled model as a member too.

Folding left each convolution with a weight and a bias (W' = W * g / s, b' = beta + (b - mu) * g / s); the torch
model has bias-free convolutions followed by BatchNorm. We load W' into the convolution and choose each
BatchNorm so that it passes the convolution's output through plus b', in training mode too: from the convolution
outputs on training images (mean m, variance v per channel), gamma = sqrt(v + eps), beta = m + b', running
statistics (m, v). In eval mode that is exactly y + b'; in training mode, on batches like those, nearly so, so
fine-tuning starts from the exported model's function instead of a perturbed one.

    python benchmarks/camera/init_from_onnx.py export/resnet10-clothing-small/model.onnx runs/resnet10-init.pt
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edgefashion import __version__  # noqa: E402
from edgefashion.data.splits import SplitSpec  # noqa: E402
from edgefashion.meta import ModelMeta  # noqa: E402
from edgefashion.runtime.classifier import Classifier  # noqa: E402
from edgefashion.training.datasets import batch_to_input, load_data  # noqa: E402
from edgefashion.training.train import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_checkpoint  # noqa: E402
from edgefashion.training.zoo import create_model  # noqa: E402


def module_of(output: str) -> str:
    """'/layer2/layer2.0/shortcut/shortcut.0/Conv_output_0' -> 'layer2.0.shortcut.0': torch's export scopes
    repeat each container before its child's name, so a part that prefixes the next one is dropped."""
    parts = [p for p in output.split("/") if p][:-1]
    kept = [p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
    return ".".join(kept)


def bn_of(conv: str) -> str:
    if conv.endswith("shortcut.0"):
        return conv[:-1] + "1"
    head, _, leaf = conv.rpartition(".")
    return (head + "." if head else "") + leaf.replace("conv", "bn")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx_file")
    ap.add_argument("out")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--calib", type=int, default=512, help="Training images for the BatchNorm statistics.")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model_onnx = onnx.load(args.onnx_file)
    props = {p.key: p.value for p in model_onnx.metadata_props}
    meta = ModelMeta.from_onnx_props(props, source=args.onnx_file)
    inits = {i.name: numpy_helper.to_array(i) for i in model_onnx.graph.initializer}
    # An `ensemble --flip` file of one member (the bundled file since b64581c): its member's weights, scoped
    # under members.0, are the model; the check below compares the mean over both views, as the file computes.
    convs = [n.output[0] for n in model_onnx.graph.node if n.op_type == "Conv"]
    flip = meta.model.endswith("-flip") and all(c.startswith("/members.0/") for c in convs)
    if flip:
        meta = dataclasses.replace(meta, model=meta.model[:-len("-flip")])
        inits.update({k[len("members.0."):]: v for k, v in inits.items() if k.startswith("members.0.")})
    model_args = {"num_classes": meta.num_classes, "in_chans": meta.in_chans, "img_size": meta.input_size}
    model = create_model(meta.model, **model_args)
    mods = dict(model.named_modules())
    sd = model.state_dict()
    biases = {}
    for node in model_onnx.graph.node:
        if node.op_type != "Conv":
            continue
        conv = module_of(node.output[0].replace("/members.0/", "/", 1) if flip else node.output[0])
        w = inits[node.input[1]]
        if conv + ".weight" not in sd or tuple(sd[conv + ".weight"].shape) != w.shape:
            sys.exit(f"{args.onnx_file}: cannot map convolution {node.output[0]} to a module of {meta.model}")
        sd[conv + ".weight"] = torch.from_numpy(w.copy())
        biases[conv] = torch.from_numpy(inits[node.input[2]].copy())
    sd["fc.weight"] = torch.from_numpy(inits["fc.weight"].copy())
    sd["fc.bias"] = torch.from_numpy(inits["fc.bias"].copy())
    # BatchNorm at identity first, to measure each convolution's own output on training images.
    for conv in biases:
        bn = bn_of(conv)
        sd[bn + ".weight"] = torch.ones_like(sd[bn + ".weight"])
        sd[bn + ".bias"] = biases[conv]
        sd[bn + ".running_mean"] = torch.zeros_like(sd[bn + ".running_mean"])
        sd[bn + ".running_var"] = torch.ones_like(sd[bn + ".running_var"]) - mods[bn].eps
    model.load_state_dict(sd)
    model.eval()
    data = load_data(meta.dataset or "clothing-small", args.data_dir, model=meta.model, img_size=meta.input_size,
                     in_chans=meta.in_chans, limit=None, quiet=True, split=SplitSpec.from_meta(meta))
    tr, val = data.splits["train"], data.splits["val"]
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(tr), generator=g)[:args.calib]
    stats = {}
    hooks = [mods[c].register_forward_hook(lambda m, i, o, c=c: stats.__setitem__(c, (
        o.mean((0, 2, 3)), o.var((0, 2, 3), unbiased=False)))) for c in biases]
    with torch.no_grad():
        model(batch_to_input(tr.x[idx], meta, "none"))
    for h in hooks:
        h.remove()
    for conv, (m, v) in stats.items():
        bn = bn_of(conv)
        eps = mods[bn].eps
        sd[bn + ".weight"] = torch.sqrt(v + eps)
        sd[bn + ".bias"] = m + biases[conv]
        sd[bn + ".running_mean"] = m
        sd[bn + ".running_var"] = v
    model.load_state_dict(sd)
    model.eval()
    # Check: the rebuilt model gives the ONNX file's logits on validation images.
    clf = Classifier(args.onnx_file, threads=1)
    x = batch_to_input(val.x[:128], meta, "none")
    with torch.no_grad():
        ours = ((model(x) + model(x.flip(3))) / 2 if flip else model(x)).numpy()
    ref = clf.logits(x.numpy())
    agree = float((ours.argmax(1) == ref.argmax(1)).mean())
    err = float(np.abs(ours - ref).max())
    with torch.no_grad():
        acc = float((model(batch_to_input(val.x, meta, "none")).argmax(1) == val.y).float().mean())
    print(f"max |logit difference| {err:.2e}, top-1 agreement {agree:.4f}, val accuracy {acc:.4f}")
    if agree < 0.99:
        sys.exit("the rebuilt model does not match the ONNX file")
    spec = SplitSpec.from_meta(meta)
    ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "edgefashion": __version__,
            "model": meta.model, "model_args": model_args, "meta": meta.to_dict(),
            "config": {"model": meta.model, "data": meta.dataset or "clothing-small", "data_dir": None,
                       "img_size": meta.input_size, "in_chans": meta.in_chans, "limit": None, **spec.to_dict()},
            "epoch": meta.extra.get("epoch"), "state_dict": model.state_dict(),
            "rebuilt_from": Path(args.onnx_file).name}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(Path(args.out), ckpt)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
