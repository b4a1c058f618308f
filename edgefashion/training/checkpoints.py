"""Checkpoint files: self-describing (zoo model name and arguments, labels, preprocessing, config, epoch, state),
so that one file rebuilds its model alone, as nanoGPT's do; plus the weights files `--init-weights` reads.

Its own module because every part of training reads checkpoints (train resumes them, export, ensemble, distill
and the torch benchmark rebuild models from them) while none of that belongs to the training loop: with these
functions in train.py, ensemble.py and distill.py imported train.py and train.py imported them back.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn as nn

from ..data.splits import SplitSpec
from ..files import atomic_write_bytes
from ..meta import ModelMeta
from ..names import CHECKPOINTS
from . import qat
from .zoo import ENSEMBLE, build_ensemble, create_model

CHECKPOINT_FORMAT = "edgefashion-checkpoint"
CHECKPOINT_VERSION = 1


class TrainingError(RuntimeError):
    """A run that cannot go on, or a checkpoint that cannot be read; the message says why and what was kept."""


def config_split(config: dict | None) -> SplitSpec:
    """The SplitSpec a run's config dict describes (older ones lack test_fraction: the default applies)."""
    d = dict(config or {})
    if d.get("split_seed") is not None:
        d["seed"] = d["split_seed"]
    return SplitSpec.from_dict(d)


def checkpoint_split(ckpt: dict) -> SplitSpec:
    """The SplitSpec a checkpoint's model was trained with: its meta's record, else its config's (checkpoints
    written before the meta recorded it), else the defaults."""
    recorded = (ckpt.get("meta") or {}).get("split")
    return SplitSpec.from_dict(recorded) if recorded else config_split(ckpt.get("config"))


def is_ensemble(ckpt: dict) -> bool:
    return ckpt.get("model") == ENSEMBLE


def save_checkpoint(path: Path, ckpt: dict) -> None:
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write_bytes(path, buf.getvalue())


def checkpoint_file(path: str | Path) -> Path:
    """The file a checkpoint argument names: itself, or a run folder's best.pt, else its last.pt."""
    path = Path(path)
    if path.is_dir():
        for name in CHECKPOINTS:
            if (path / name).is_file():
                return path / name
        raise TrainingError(f"{path}: no best.pt or last.pt in this folder")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint (a file, or a run folder's best.pt, else last.pt) with weights_only=True (no pickled
    code runs) and check it is ours."""
    path = checkpoint_file(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"{path}: no such checkpoint") from None
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise TrainingError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not an edgefashion checkpoint")
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise TrainingError(f"{path}: checkpoint version {ckpt['version']} is newer than this edgefashion")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> tuple[nn.Module, ModelMeta]:
    """Rebuild the model a checkpoint describes, with its weights, in eval mode (a QAT run's with its
    quantization ranges frozen: running it must not move them; an ensemble's with all its members)."""
    meta = ModelMeta.from_dict({**ckpt["meta"], "split": checkpoint_split(ckpt).to_dict()})
    if is_ensemble(ckpt):
        model = build_ensemble(ckpt["model_args"])
        model.load_state_dict(ckpt["state_dict"])
        return model.eval(), meta
    model = create_model(ckpt["model"], **ckpt["model_args"])
    qat_run = qat.is_qat(ckpt.get("config"))
    if qat_run:
        model = qat.prepare(model, meta)  # the fake-quant graph the state dict belongs to
    model.load_state_dict(ckpt["state_dict"])
    if qat_run:
        qat.freeze_observers(model)  # after loading: the state dict carries the observers' on/off flags
    model.eval()
    # Older checkpoints record the split in their config only; the meta carries it into exported files.
    return model, meta


def load_init_weights(model: nn.Module, path: str | Path) -> dict:
    """Initialise from a file: an edgefashion checkpoint or a plain state dict (e.g. timm weights saved by a
    user with a network). Tensors whose shapes differ (a classifier for other classes) are left as they are,
    and the function says which."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"--init-weights {path}: no such file") from None
    except Exception as e:
        raise TrainingError(f"--init-weights {path}: not a readable weights file ({type(e).__name__})") from None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TrainingError(f"--init-weights {path}: not a state dict of tensors")
    own = model.state_dict()
    loaded, skipped = {}, []
    for k, v in obj.items():
        if k in own and own[k].shape == v.shape:
            loaded[k] = v
        else:
            skipped.append(k)
    if not loaded:
        raise TrainingError(f"--init-weights {path}: no tensor matches this model's names and shapes")
    model.load_state_dict(loaded, strict=False)
    missing = [k for k in own if k not in loaded]
    return {"loaded": len(loaded), "skipped": skipped, "missing": missing}


__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "TrainingError", "checkpoint_file", "checkpoint_split",
           "config_split", "is_ensemble", "load_checkpoint", "load_init_weights", "model_from_checkpoint",
           "save_checkpoint"]
