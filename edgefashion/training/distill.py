"""Knowledge distillation (`train --teacher CKPT`): a student learns a teacher's answers, not only the labels.

Why: an ensemble of photo models trained apart is right more often on a camera than any one of them, but costs
its members' compute on every frame, and a Raspberry Pi has none to spare. Distilled into one model of a
member's size, most of the ensemble's gain runs at one model's cost (Hinton et al., 2015).

How, after Beyer et al. ("Knowledge distillation: A good teacher is patient and consistent", CVPR 2022): the
teacher sees exactly the image the student sees, after every augmentation, mixup/CutMix and camera composite
of the batch (consistent), so its soft labels describe that image and not the clean photo; and the student is
trained long on them (patient). The loss on every row is T^2 * KL(teacher(T) || student(T)), weighted by
`distill_weight` against the labels' cross-entropy (1.0: the teacher's answers alone, as that paper found
best). Empty frames (--empty-frames) keep their own loss and are distilled too: the teacher's doubt about a
garment-free scene is what the camera's 'uncertain' needs.

The teacher is any checkpoint `model_from_checkpoint` rebuilds, an `edgefashion ensemble` one included, that
reads the student's input: the same labels, input size, channels and normalisation.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..files import sha256_file
from ..meta import ModelMeta
from .checkpoints import checkpoint_file, load_checkpoint, model_from_checkpoint

# Meta fields a teacher must share with its student: the same input tensor must mean the same image to both,
# and logit i the same class.
SHARED_META = ("labels", "input_size", "in_chans", "mean", "std", "resize", "color", "interpolation")


class DistillError(ValueError):
    """A teacher that cannot teach this run; the message names the file and what differs."""


def load_teacher(path: str | Path, meta: ModelMeta, device: torch.device, *,
                 expect_sha256: str | None = None) -> "tuple[nn.Module, dict]":
    """The teacher model, frozen in eval mode on `device`, and what a checkpoint records of it ({file,
    sha256, model}). `expect_sha256`: a resumed run's record; another file under the same name is refused,
    since the rest of the run would learn from another teacher than its first epochs did."""
    f = checkpoint_file(path)
    ckpt = load_checkpoint(f)
    digest = sha256_file(f)
    if expect_sha256 and digest != expect_sha256:
        raise DistillError(f"--teacher {f}: the file changed since this run started (sha256 {digest[:12]}..., "
                           f"recorded {expect_sha256[:12]}...); resume with the original teacher")
    model, tmeta = model_from_checkpoint(ckpt)
    for name in SHARED_META:
        theirs, ours = getattr(tmeta, name), getattr(meta, name)
        if theirs != ours:
            raise DistillError(f"--teacher {f}: its {name} {theirs!r} differs from this run's {ours!r}; a teacher "
                               "must read the student's input and name the same classes")
    model.to(device)
    if device.type in ("cuda", "cpu"):
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), {"file": str(f), "sha256": digest, "model": ckpt["model"]}


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row T^2 * KL(softmax(teacher / T) || softmax(student / T)), in float32. T^2 keeps the gradient's
    scale independent of T (Hinton et al.)."""
    t = float(temperature)
    log_p_s = (student.float() / t).log_softmax(1)
    log_p_t = (teacher.float() / t).log_softmax(1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1) * (t * t)


__all__ = ["DistillError", "SHARED_META", "kd_loss", "load_teacher"]
