"""Ensembles: trained checkpoints of one task run side by side as one model (`edgefashion ensemble A B ...`).

Why: a photo model trained from scratch on 3k photos is what limits the camera, and the camera has compute to
spare (the bundled resnet10 runs at several hundred FPS on one thread; the bar is 150). Models trained apart make
different mistakes, and the mean of their logits is right more often and surer on garments than on empty
scenes. The members live in one `Ensemble` module, so `export` sees one model: one ONNX graph with the
members' branches on the same input, the same parity check, INT8 calibration, accuracy guard, portable target
and cross-CPU check as any model, and one `.onnx` file for the runtime, which needs no change.

An ensemble checkpoint is self-describing like a training run's: `model` is "ensemble", `model_args` lists
each member's zoo name and arguments, `state_dict` holds every member's tensors (under `members.<i>.`), and
`meta`/`config` are the members' shared ones, so `model_from_checkpoint` rebuilds it alone and export finds the
data the members were trained on for calibration.

`--soup` averages the members' weights instead of their logits: a "uniform model soup" (Wortsman et al., ICML
2022), one model at one model's cost. It holds only for fine-tunes of one starting point (the same zoo model,
arguments and init: runs that left one trained file with other seeds, learning rates or lengths), which stay in
one basin of the loss, where the average of their weights is a better model than each rather than a broken
one. Nothing in a checkpoint proves a common start, so runs trained apart from scratch are not refused: their
soup is a poor model, and its validation score, which `ensemble` prints and writes, shows it. BatchNorm running
statistics are averaged with the rest. The soup's checkpoint is an ordinary one of its zoo model, with the
members listed.
"""
from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .. import __version__
from .. import data as efdata
from ..data.splits import SplitSpec
from ..files import sha256_file
from ..meta import ModelMeta
from ..names import BEST_CHECKPOINT, RESULTS_JSON, TEST, TRAIN, VAL
from ..reports import TrainReport
from . import qat
from .datasets import load_data
from .checkpoints import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, checkpoint_file, checkpoint_split, is_ensemble,  # noqa: F401
                          load_checkpoint, model_from_checkpoint, save_checkpoint)
from .train import evaluate
# The Ensemble module is a model like the zoo's, built from a checkpoint's arguments by model_from_checkpoint.
from .zoo import ENSEMBLE, Ensemble, EnsembleError, build_ensemble, count_params, create_model  # noqa: F401

SOUP_OF = "soup_of"  # a soup's checkpoint lists its members under this key (an ensemble's under "members")
# Meta fields every member must share: the one preprocessing definition the file carries, the labels it names,
# and the data it was trained on (calibration and the split the test figures come from).
SHARED_META = ("labels", "input_size", "in_chans", "mean", "std", "resize", "color", "domain", "interpolation",
               "dataset")


def display_name(names: Sequence[str], flip: bool = False) -> str:
    """'ensemble-3xresnet10', 'ensemble-resnet10+seq5' when the members differ, '-flip' appended with
    mirrored views; one member with them: 'resnet10-flip'."""
    tail = "-flip" if flip else ""
    if len(names) == 1:
        return f"{names[0]}{tail}"
    if len(set(names)) == 1:
        return f"{ENSEMBLE}-{len(names)}x{names[0]}{tail}"
    return f"{ENSEMBLE}-" + "+".join(names) + tail


def _check_member(path: Path, ckpt: dict, first: dict, first_path: Path) -> None:
    if is_ensemble(ckpt):
        raise EnsembleError(f"{path}: already an ensemble; list its members instead")
    if qat.is_qat(ckpt.get("config")):
        raise EnsembleError(f"{path}: a quantization-aware trained checkpoint; an ensemble's INT8 file is "
                            "calibrated as a whole, so give it the float checkpoints")
    a, b = ModelMeta.from_dict(first["meta"]), ModelMeta.from_dict(ckpt["meta"])
    for f in SHARED_META:
        if getattr(a, f) != getattr(b, f):
            raise EnsembleError(f"{path}: its {f} {getattr(b, f)!r} differs from {first_path}'s "
                                f"{getattr(a, f)!r}; members must share preprocessing, labels and data")
    a_cfg, b_cfg = first.get("config") or {}, ckpt.get("config") or {}
    if a_cfg.get("limit") != b_cfg.get("limit"):
        raise EnsembleError(f"{path}: trained with --limit {b_cfg.get('limit')}, {first_path} with --limit "
                            f"{a_cfg.get('limit')}; members must have seen the same images")


def _check_splits(loaded: Sequence[tuple], data_dir: str | None) -> None:
    """Members must have held out the same validation and test images, or the ensemble's test figure would
    score images some member trained on. Split parameters that differ are fine where they carve nothing: a
    set that ships all three splits (clothing-small) ignores them, which --seed also changes."""
    first_path, first = loaded[0]
    specs = {checkpoint_split(c) for _, c in loaded}
    if len(specs) == 1:
        return
    cfg = first.get("config") or {}
    root = efdata.resolve_data_root(data_dir or cfg.get("data_dir"))
    kind, where = efdata.resolve_dataset(cfg["data"], root, download=False)
    held_out = {}
    for spec in specs:
        sd = efdata.load_splits(kind, where, spec)
        held_out[spec] = [_part_key(sd.splits[name]) for name in (VAL, TEST)]
    ref = held_out[checkpoint_split(first)]
    for path, c in loaded[1:]:
        if held_out[checkpoint_split(c)] != ref:
            raise EnsembleError(f"{path}: holds out other validation/test images ({checkpoint_split(c)}) than "
                                f"{first_path} ({checkpoint_split(first)}); the test figures would mix held-out "
                                "and training images")


def _part_key(part) -> str:
    items, y = part
    h = hashlib.sha256(np.asarray(y).tobytes())
    if isinstance(items, np.ndarray):
        h.update(items.tobytes())
    else:
        for item in items:
            h.update(str(item).encode() + b"\0")
    return h.hexdigest()


def _load_members(paths: Sequence[str | Path], data_dir: str | None, *, least: int = 2) -> list:
    if len(paths) < least:
        raise EnsembleError("an ensemble needs at least two checkpoints" + (" (one with --flip)" if least < 2 else ""))
    loaded = []
    for p in paths:
        ckpt = load_checkpoint(p)
        if loaded:
            _check_member(Path(p), ckpt, loaded[0][1], loaded[0][0])
        elif is_ensemble(ckpt):
            raise EnsembleError(f"{p}: already an ensemble; list its members instead")
        loaded.append((Path(p), ckpt))
    _check_splits(loaded, data_dir)
    return loaded


def _checkpoint(loaded: Sequence[tuple], model: str, model_args: dict, meta: dict, state_dict: dict,
                members_key: str) -> dict:
    """The self-describing checkpoint of a model made from `loaded` members (an ensemble's or a soup's): the
    first member's config, and each member's file, hash and provenance under `members_key`."""
    first = loaded[0][1]
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "edgefashion": __version__,
        "model": model, "model_args": model_args,
        "meta": ModelMeta.from_dict({**meta, "split": checkpoint_split(first).to_dict()}).to_dict(),
        "config": dict(first.get("config") or {}), "epoch": None, "state_dict": state_dict,
        members_key: [{"file": checkpoint_file(p).name, "sha256": sha256_file(checkpoint_file(p)),
                       "model": c["model"], "epoch": c.get("epoch"), "train_seconds": c.get("train_seconds"),
                       "best_val_accuracy": (c.get("best") or {}).get("val_acc")} for p, c in loaded],
        "train_seconds": sum(float(c.get("train_seconds") or 0) for _, c in loaded),
    }


def make_checkpoint(paths: Sequence[str | Path], data_dir: str | None = None, *,
                    flip: bool = False) -> tuple[dict, Ensemble]:
    """Load the members and check they fit together; return the ensemble's checkpoint and its model."""
    loaded = _load_members(paths, data_dir, least=1 if flip else 2)
    models = [model_from_checkpoint(c)[0] for _, c in loaded]
    first = loaded[0][1]
    names = [c["model"] for _, c in loaded]
    meta = {**first["meta"], "model": display_name(names, flip)}
    model = Ensemble(models, flip=flip).eval()
    members = [{"model": c["model"], "model_args": c["model_args"]} for _, c in loaded]
    args = {"members": members, **({"flip": True} if flip else {})}
    ckpt = _checkpoint(loaded, ENSEMBLE, args, meta,
                       {k: v.detach().cpu() for k, v in model.state_dict().items()}, "members")
    return ckpt, model


def make_soup(paths: Sequence[str | Path], data_dir: str | None = None) -> tuple[dict, nn.Module]:
    """The uniform soup of the members: one checkpoint of their zoo model whose every floating-point tensor
    (weights, biases, BatchNorm statistics) is the members' mean."""
    loaded = _load_members(paths, data_dir)
    first_path, first = loaded[0]
    for path, c in loaded[1:]:
        if c["model"] != first["model"] or c["model_args"] != first["model_args"]:
            raise EnsembleError(f"{path}: {c['model']} {c['model_args']} differs from {first_path}'s "
                                f"{first['model']} {first['model_args']}; a soup averages one architecture's weights")
        if c["state_dict"].keys() != first["state_dict"].keys() or any(
                c["state_dict"][k].shape != v.shape for k, v in first["state_dict"].items()):
            raise EnsembleError(f"{path}: its tensors differ from {first_path}'s in name or shape")
    state = {}
    for k, v in first["state_dict"].items():
        if v.is_floating_point():
            state[k] = sum(c["state_dict"][k].double() for _, c in loaded).div(len(loaded)).to(v.dtype)
        else:  # BatchNorm's num_batches_tracked: a counter, not a weight
            state[k] = v.clone()
    ckpt = _checkpoint(loaded, first["model"], dict(first["model_args"]), first["meta"], state, SOUP_OF)
    return ckpt, model_from_checkpoint(ckpt)[0]  # in eval mode


def score(ckpt: dict, model: nn.Module, *, data_dir: str | None, log=print) -> TrainReport:
    """The ensemble's validation and test figures on the members' own splits, as results.json: export reports
    them, and the model is selected on validation like any run."""
    meta = ModelMeta.from_dict(ckpt["meta"])
    cfg = ckpt["config"]
    bundle = load_data(cfg["data"], data_dir or cfg.get("data_dir"), model=meta.model, img_size=meta.input_size,
                       in_chans=meta.in_chans, split=SplitSpec.from_meta(meta), limit=cfg.get("limit"),
                       device="cpu", download=False, quiet=True)
    dev = torch.device("cpu")
    with torch.no_grad():
        va, te, tr = (evaluate(model, bundle.splits[s], meta, device=dev, amp=False) for s in (VAL, TEST, TRAIN))
    soup = SOUP_OF in ckpt
    members = ckpt[SOUP_OF if soup else "members"]
    log(f"{meta.model}{' soup' if soup else ''}: val accuracy {va['acc']:.4f}, test accuracy {te['acc']:.4f} "
        f"({te['n']} images); members: " + ", ".join(m["file"] for m in members))
    return TrainReport(
        model=meta.model, data=bundle.name, labels=list(meta.labels), params=count_params(model),
        img_size=meta.input_size, in_chans=meta.in_chans, test_accuracy=te["acc"], test_loss=te["loss"],
        test_images=te["n"], per_class_accuracy=dict(zip(meta.labels, te["per_class"])),
        confusion_matrix=te["confusion"], train_accuracy=tr["acc"], best_val_accuracy=va["acc"], best_epoch=0,
        epochs_run=0, stop_reason=f"{'soup' if soup else 'ensemble'} of {len(members)} checkpoints",
        train_seconds=round(float(ckpt.get("train_seconds") or 0), 2), device="cpu", world_size=1,
        split_sizes={k: len(v) for k, v in bundle.splits.items()},
        source="mean of the members' weights" if soup else "mean of the members' logits",
        edgefashion=__version__, torch=torch.__version__, python=platform.python_version())


def write(paths: Sequence[str | Path], out_dir: str | Path, *, data_dir: str | None = None, soup: bool = False,
          flip: bool = False, log=print) -> Path:
    """`edgefashion ensemble [--soup | --flip]`: write OUT/best.pt and OUT/results.json (each atomically);
    return OUT."""
    if soup and flip:
        raise EnsembleError("--soup and --flip: make the soup first, then `ensemble --flip` its best.pt")
    out = Path(out_dir)
    ckpt, model = make_soup(paths, data_dir) if soup else make_checkpoint(paths, data_dir, flip=flip)
    results = score(ckpt, model, data_dir=data_dir, log=log)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / BEST_CHECKPOINT, ckpt)
    results.write(out / RESULTS_JSON)
    log(f"wrote {out / BEST_CHECKPOINT} and {out / RESULTS_JSON}; next: edgefashion export {out}")
    return out


__all__ = ["ENSEMBLE", "Ensemble", "EnsembleError", "build_ensemble", "display_name", "is_ensemble", "make_checkpoint",
           "make_soup", "score", "write"]
