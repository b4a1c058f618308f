"""Training: a dataclass config and plain functions (`train_one_epoch`, `evaluate`, `fit`) that write
self-describing checkpoints (model name and args, labels, preprocessing, config, epoch; checkpoints.py reads
them back and rebuilds their model alone).

`fit` is a few named stages carrying one `RunState`: setup (or resume) -> per epoch: train, validate,
schedule / early stop, checkpoint -> final test on the best epoch.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import __version__
from ..data.splits import SplitSpec
from ..files import atomic_write_text
from ..meta import ModelMeta
from ..reports import TrainReport
from ..names import (BEST_CHECKPOINT, CONFIG_JSON, LAST_CHECKPOINT, METRICS_CSV, RESULTS_JSON, TEST,
                     TRAIN, VAL)
from . import qat
from .datasets import AUGMENTATIONS, DataBundle, Split, batch_to_input, load_data
from .distill import kd_loss, load_teacher
from .distributed import Dist, all_reduce_sum, broadcast_object, setup, shard, teardown
from .zoo import count_params, create_model, get_entry
# Checkpoint files live in .checkpoints; their names stay importable from here, where scripts have found them.
from .checkpoints import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, TrainingError, checkpoint_file,  # noqa: F401
                          checkpoint_split, config_split, load_checkpoint, load_init_weights, model_from_checkpoint,
                          save_checkpoint)

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("plateau", "cosine", "none")
CAMERA_EMPTY_FRAMES = 0.1
# What an empty frame is trained towards (TrainConfig.empty_loss).
EMPTY_LOSSES = ("uniform", "energy")


@dataclass
class TrainConfig:
    """Every knob of a run. None means "the model's recipe in the zoo, else the seeds' default" and is filled in
    by `resolve_config`; the resolved config is what run folders and checkpoints record."""
    model: str = "cnn4"
    data: str = "fashion-mnist"
    data_dir: str | None = None
    img_size: int | None = None
    in_chans: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    scheduler: str | None = None
    warmup_epochs: int | None = None
    early_stopping: bool | None = None
    patience: int | None = None
    plateau_factor: float = 0.3
    plateau_patience: int = 3
    augment: str | None = None
    label_smoothing: float | None = None
    mixup: float | None = None  # Beta(alpha, alpha) of mixup (Zhang et al. 2018); 0 = off
    cutmix: float | None = None  # Beta(alpha, alpha) of CutMix (Yun et al. 2019); 0 = off
    # --augment camera: the share of each batch made garment-free scenes, trained towards the uniform
    # distribution with this weight, so that the camera shows 'uncertain' on an empty room. None: 0.1 with
    # camera augmentation, else 0.
    empty_frames: float | None = None
    empty_weight: float = 0.5
    # "uniform": outlier exposure (Hendrycks et al. 2019), an empty frame's target is the uniform distribution.
    # "energy": the camera's own rule is trained instead: P(garment) = sigmoid(logsumexp(logits)) is pushed
    # towards 1 on garment rows and 0 on empty rows by binary cross-entropy. Cross-entropy to the uniform
    # distribution does not change when every logit moves by the same amount, so outlier exposure teaches an
    # empty scene equal logits but not small ones, and the energy score the camera thresholds
    # (meta.DEFAULT_BACKGROUND_LOGIT) is only trained by accident; this trains it directly (the energy-bounded
    # fine-tuning of Liu et al., NeurIPS 2020, with a logistic loss in place of their squared hinges, so that
    # no margins need choosing: the model's output bias learns the offset, and T and B are calibrated after).
    empty_loss: str = "uniform"
    # Logit-adjusted loss (Menon et al., ICLR 2021): the garment cross-entropy is taken on logits + tau * log(prior),
    # prior = the training split's class shares, so the model's own logits learn the balanced classifier, as
    # if every class were equally common. clothing-small's train split holds 795 t-shirts and 112 skirts; a
    # camera sees whatever the user holds up. 0 = off (plain cross-entropy), 1 = the Bayes-balanced rule.
    logit_adjust: float = 0.0
    val_fraction: float = 0.2
    # Of train, for data sets that ship no test split (carved before val; see data/splits.py).
    test_fraction: float = 0.2
    limit: int | None = None  # at most this many images per split (stratified, seeded): quick runs and tests
    seed: int = 0
    # The seed that carves the splits a data set does not ship; None: `seed`. Runs that differ only in `seed`
    # (initialisation, batch order, augmentation) but share `split_seed` hold out the same images, so they can
    # be joined by `edgefashion ensemble`, whose test figure must not score an image some member trained on.
    split_seed: int | None = None
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA only
    # bfloat16 autocast on a CPU that computes it natively (AVX512-BF16 or AMX); off by default, as it changes
    # the arithmetic of runs that would otherwise repeat bit for bit. Measured here (AMD EPYC, AVX512-BF16, 2
    # threads, one epoch of `train --model resnet20 --data fashion-mnist --limit 10000`): 1,034 images/s against
    # 660 in float32.
    cpu_bf16: bool = False
    pretrained: bool = False
    init_weights: str | None = None
    eval_batch_size: int = 512
    # Quantization-aware training (qat.py): fine-tune the --init-weights model with fake quantization; the
    # export then writes its INT8 file from the fake quantization instead of calibrating.
    qat: bool = False
    # Knowledge distillation (distill.py): a trained checkpoint (an ensemble's too) whose answers on each
    # augmented batch the student learns, weighted against the labels by distill_weight (1.0: the teacher's
    # answers alone), both softened by distill_temperature.
    teacher: str | None = None
    distill_weight: float = 1.0
    distill_temperature: float = 1.0


def resolve_config(cfg: TrainConfig, data_kind: str | None = None) -> TrainConfig:
    entry = get_entry(cfg.model)
    filled = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if v is None and f.name in entry.recipe:
            # The zoo's recipe is complete: the model's own values over the seeds' common recipe (Adam 1e-3,
            # early stopping patience 5, reduce-LR-on-plateau, at most 40 epochs).
            v = entry.recipe[f.name]
        filled[f.name] = v
    if filled["img_size"] is None:
        filled["img_size"] = entry.img_size
    if filled["empty_frames"] is None:
        filled["empty_frames"] = CAMERA_EMPTY_FRAMES if filled["augment"] == "camera" else 0.0
    out = replace(cfg, **filled)
    if out.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {out.optimizer!r}; choose from {OPTIMIZERS}")
    if out.scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {out.scheduler!r}; choose from {SCHEDULERS}")
    if out.augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {out.augment!r}; choose from {AUGMENTATIONS}")
    for name in ("epochs", "batch_size", "img_size"):
        if int(getattr(out, name)) < 1:
            raise ValueError(f"{name} must be positive, got {getattr(out, name)}")
    for name in ("mixup", "cutmix", "label_smoothing"):
        if float(getattr(out, name)) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(out, name)}")
    if not 0 <= out.empty_frames < 1:
        raise ValueError(f"empty_frames must be in [0, 1), got {out.empty_frames}")
    if out.empty_weight < 0:
        raise ValueError(f"empty_weight must be >= 0, got {out.empty_weight}")
    if out.empty_frames and out.augment != "camera":
        raise ValueError(f"empty frames are made by --augment camera, not {out.augment!r}")
    if out.empty_loss not in EMPTY_LOSSES:
        raise ValueError(f"unknown empty_loss {out.empty_loss!r}; choose from {EMPTY_LOSSES}")
    if out.logit_adjust < 0:
        raise ValueError(f"logit_adjust must be >= 0, got {out.logit_adjust}")
    if not 0 < out.val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {out.val_fraction}")
    if not 0 <= out.test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {out.test_fraction}")
    if out.cpu_bf16 and not cpu_has_native_bf16():
        raise ValueError("--bf16 needs a CPU with native bfloat16 (AVX512-BF16 or AMX); this one has neither, "
                         "and emulated bfloat16 is slower than float32")
    if out.cpu_bf16 and out.qat:
        raise ValueError("--bf16 and --qat: fake quantization models float32 arithmetic; train it without --bf16")
    if out.qat and not out.init_weights:
        raise ValueError("--qat fine-tunes a trained model: give it one with --init-weights CHECKPOINT")
    if not 0 <= out.distill_weight <= 1:
        raise ValueError(f"distill_weight must be in [0, 1], got {out.distill_weight}")
    if not out.distill_temperature > 0:
        raise ValueError(f"distill_temperature must be > 0, got {out.distill_temperature}")
    return out


def split_spec(cfg: TrainConfig | dict) -> SplitSpec:
    """The SplitSpec of a run: how its data set's unshipped splits are carved. Takes a TrainConfig or the
    config dict a checkpoint records (older ones lack test_fraction: the default applies)."""
    return config_split(asdict(cfg) if isinstance(cfg, TrainConfig) else cfg)


def select_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"--device {name}: CUDA is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise TrainingError(f"--device {name}: MPS is not available on this machine")
    return dev


# --- one epoch, evaluation ----------------------------------------------------------------------------------

def cpu_has_native_bf16() -> bool:
    cpu = torch.cpu
    return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())


def _autocast(device: torch.device, amp: bool, cpu_bf16: bool = False):
    """Mixed precision: on CUDA with `amp`; on the CPU only with `cpu_bf16` (training: scores are taken in
    float32 there, as the exported file computes)."""
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if cpu_bf16 and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def _channels_last(device: torch.device) -> bool:
    # NHWC is what cuDNN's tensor cores and oneDNN's CPU convolutions want: measured here on 2 CPU cores, cnn4
    # trains ~1.5x faster at batch 32 with it.
    return device.type in ("cuda", "cpu")


def _lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Per-step learning-rate factor for the warm-up and cosine schedules (plateau is handled per epoch)."""
    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if cfg.scheduler == "cosine":
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return 1.0


def mix_batch(x: torch.Tensor, y: torch.Tensor, mixup: float, cutmix: float,
              g: torch.Generator) -> "tuple[torch.Tensor, torch.Tensor | None, float]":
    """Mixup or CutMix of a batch with its reverse: returns (mixed x, second labels or None, weight of the first).

    With both enabled each batch takes one of them at random (timm's switch). The batch is paired with its own
    reverse, so no extra images are drawn; lambda for CutMix is the exact kept area after clipping the box."""
    if not mixup and not cutmix:
        return x, None, 1.0
    use_cutmix = bool(cutmix) and (not mixup or torch.rand((), generator=g, device=g.device).item() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    # Beta(alpha, alpha) seeded from our generator, so a resumed run mixes the same way.
    seed = int(torch.randint(2**31 - 1, (1,), generator=g, device=g.device).item())
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    y2 = y.flip(0)
    if not use_cutmix:
        return lam * x + (1 - lam) * x.flip(0), y2, lam
    h, w = x.shape[-2:]
    cut = math.sqrt(1 - lam)
    ch, cw = int(h * cut), int(w * cut)
    c = torch.rand(2, generator=g, device=g.device)
    cy, cx = int(c[0] * h), int(c[1] * w)
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    x = x.clone()
    x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return x, y2, lam


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _log(*args) -> None:
    # Flushed: when stdout is a file or a pipe, print would hold a long run's epoch lines back until it ends.
    print(*args, flush=True)


def class_log_prior(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log of each class's share of the labels `y` (a class without examples counts as one, to stay finite)."""
    counts = torch.bincount(y.cpu(), minlength=num_classes)[:num_classes].clamp(min=1).float()
    return (counts / counts.sum()).log()


def batch_loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, meta: ModelMeta, cfg: TrainConfig,
               g: torch.Generator, *, channels_last: bool = False,
               teacher: nn.Module | None = None,
               log_prior: torch.Tensor | None = None) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
    """One training batch through augmentation, mixing and the model: (loss, the garment rows' logits, their
    labels). With --empty-frames some rows become garment-free scenes, which have no label. With a `teacher`,
    every row also learns the teacher's answer on that same augmented row (distill.py). With
    cfg.logit_adjust and `log_prior` (class_log_prior), the labels' cross-entropy sees the adjusted logits;
    everything else, the empty frames' loss included, sees the model's own."""
    device = xb.device
    empty = torch.rand(len(yb), generator=g, device=device) < cfg.empty_frames if cfg.empty_frames else None
    x = batch_to_input(xb, meta, cfg.augment, g, empty=empty)
    y = yb
    if empty is not None:
        # Garment rows first, mixed among themselves only; the empty rows after them.
        x, y = torch.cat([x[~empty], x[empty]]), y[~empty]
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ng = len(y)
    xg, y2, lam = mix_batch(x[:ng], y, cfg.mixup, cfg.cutmix, g)
    x = torch.cat([xg, x[ng:]]) if ng < len(x) else xg
    with _autocast(device, cfg.amp, cfg.cpu_bf16):
        logits = model(x)
        lg = logits[:ng].float()
        la = lg + cfg.logit_adjust * log_prior if cfg.logit_adjust and log_prior is not None else lg
        loss = F.cross_entropy(la, y, label_smoothing=cfg.label_smoothing) if ng else lg.sum()
        if y2 is not None and ng:
            loss = lam * loss + (1 - lam) * F.cross_entropy(la, y2, label_smoothing=cfg.label_smoothing)
        kd = None
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(x)
            kd = cfg.distill_weight * kd_loss(logits, t_logits, cfg.distill_temperature)
            if ng:
                loss = (1 - cfg.distill_weight) * loss + kd[:ng].mean()
        if ng < len(x):
            if cfg.empty_loss == "energy":
                # Every row, garment (target 1) or empty (0), scores P(garment) = sigmoid(logsumexp(logits)).
                target = torch.cat([torch.ones(ng, device=device), torch.zeros(len(x) - ng, device=device)])
                away = F.binary_cross_entropy_with_logits(logits.float().logsumexp(1), target, reduction="none")
            else:
                # Outlier exposure (Hendrycks et al. 2019): an empty scene's target is the uniform distribution,
                # so its top probability stays under the camera's threshold: 'uncertain'.
                away = -logits[ng:].float().log_softmax(1).mean(1)
            empty_sum = cfg.empty_weight * away.sum() + (kd[ng:].sum() if kd is not None else 0.0)
            loss = (loss * ng + empty_sum) / len(x)
    return loss, lg, y


def train_one_epoch(model: nn.Module, split: Split, meta: ModelMeta, optimizer: torch.optim.Optimizer,
                    cfg: TrainConfig, epoch: int, *, device: torch.device, scaler=None, base_lrs=None,
                    lr_scale: float = 1.0, progress: bool = True, dist: Dist = Dist(),
                    teacher: nn.Module | None = None) -> dict:
    """One pass over `split` in a seeded random order; returns loss, accuracy, images/s (summed over ranks).

    Under DDP every rank draws the same permutation and takes its shard of it, so the ranks together see
    each image once per epoch, as a single process does; `cfg.batch_size` is per process."""
    model.train()
    # Order, augmentation and dropout depend only on (seed, epoch): a resumed run sees the same batches.
    base_seed = cfg.seed * 100_003 + epoch
    g = torch.Generator(device=device)
    g.manual_seed(base_seed)
    perm = shard(torch.randperm(len(split), generator=g, device=device), dist, pad=True)
    if dist.enabled:
        # Other images per rank, so other augmentation and dropout draws too.
        g.manual_seed(base_seed + 7_919 * dist.rank)
    torch.manual_seed(base_seed + 7_919 * dist.rank)
    n = perm.numel()
    bs = cfg.batch_size
    steps = math.ceil(n / bs)
    channels_last = _channels_last(device)
    log_prior = class_log_prior(split.y, meta.num_classes).to(device) if cfg.logit_adjust else None
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = scored = 0  # images, and those with a label (not empty frames)
    t0 = time.perf_counter()
    bar = None
    if progress and _is_terminal(sys.stderr):
        from tqdm import tqdm
        bar = tqdm(total=n * dist.world, desc=f"epoch {epoch}/{cfg.epochs}", unit="img", leave=False,
                   file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
    elif progress:
        # A log file or a pipe would collect every carriage-return redraw of a bar: one plain line instead,
        # written as the epoch starts, so that a log shows which epoch is running while it runs.
        print(f"epoch {epoch}/{cfg.epochs}: training on {n * dist.world} images", file=sys.stderr, flush=True)
    try:
        for i in range(steps):
            if base_lrs is not None:
                f = _lr_factor(cfg, (epoch - 1) * steps + i, steps) * lr_scale
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * f
            idx = perm[i * bs:(i + 1) * bs]
            loss, lg, y = batch_loss(model, split.x[idx], split.y[idx], meta, cfg, g, channels_last=channels_last,
                                     teacher=teacher, log_prior=log_prior)
            ng = len(y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            loss_sum += loss.detach() * len(idx)
            correct += (lg.detach().argmax(1) == y).sum()
            scored += ng
            seen += len(idx)
            # Syncing with the device every step would stall a GPU; every 20 steps is enough to catch a NaN
            # early and to update the bar. Under DDP the check is reduced over ranks, so all stop together.
            if (i + 1) % 20 == 0 or i + 1 == steps:
                running = all_reduce_sum(loss_sum / seen, dist).item()
                if not math.isfinite(running):
                    raise TrainingError(f"loss became {running} in epoch {epoch} (step {i + 1}/{steps})")
                if bar is not None:
                    bar.update(seen * dist.world - bar.n)
                    bar.set_postfix(loss=f"{running / dist.world:.4f}", acc=f"{correct.item() / max(scored, 1):.4f}",
                                    ips=f"{seen * dist.world / (time.perf_counter() - t0):.0f}")
    finally:
        if bar is not None:
            bar.close()
    dt = time.perf_counter() - t0
    totals = all_reduce_sum(torch.stack([loss_sum, correct.float(), torch.tensor(float(seen), device=device),
                                         torch.tensor(float(scored), device=device)]), dist)
    loss_total, correct_total, seen_total, scored_total = totals.tolist()
    return {"loss": loss_total / seen_total, "acc": correct_total / max(scored_total, 1.0), "seconds": dt,
            "ips": seen_total / dt}


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, meta: ModelMeta, *, device: torch.device, batch_size: int = 512,
             amp: bool = True, num_classes: int | None = None, dist: Dist = Dist()) -> dict:
    """Loss, accuracy, per-class accuracy and confusion matrix (rows: true class, columns: predicted). Under
    DDP each rank scores its shard and the sums are reduced: the figures are those of the whole split."""
    model.eval()
    k = num_classes or meta.num_classes
    conf = torch.zeros(k, k, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    order = shard(torch.arange(len(split), device=device), dist, pad=False)
    for i in range(0, order.numel(), batch_size):
        idx = order[i:i + batch_size]
        x = batch_to_input(split.x[idx], meta)
        y = split.y[idx]
        if _channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        pred = logits.argmax(1)
        conf += torch.bincount(y * k + pred, minlength=k * k).view(k, k)
    all_reduce_sum(conf, dist)
    all_reduce_sum(loss_sum, dist)
    conf_np = conf.cpu().numpy()
    n = int(conf_np.sum())
    per_class = conf_np.diagonal() / np.maximum(conf_np.sum(1), 1)
    return {
        "loss": loss_sum.item() / max(n, 1),
        "acc": float(conf_np.diagonal().sum() / max(n, 1)),
        "per_class": per_class.tolist(),
        "confusion": conf_np.tolist(),
        "n": n,
    }


# --- the run ------------------------------------------------------------------------------------------------

def default_run_dir(cfg: TrainConfig, base: str | Path = "runs") -> Path:
    """runs/<model>-<data>, then -2, -3, ... so an earlier run is never overwritten."""
    data_name = Path(cfg.data).name if os.sep in cfg.data else cfg.data
    stem = Path(base) / f"{cfg.model}-{data_name}"
    path, i = stem, 2
    while path.exists():
        path = Path(f"{stem}-{i}")
        i += 1
    return path


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on biases and norm layers: standard for ResNets, harmless elsewhere.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=bool(cfg.nesterov and cfg.momentum))
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.Adam(groups, lr=cfg.lr)


def _write_metrics_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(history[0].keys()))
    w.writeheader()
    w.writerows(history)
    atomic_write_text(path, buf.getvalue())


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def fit(cfg: TrainConfig, out_dir: str | Path | None = None, *, resume: bool = False, progress: bool = True,
        log=_log) -> TrainReport:
    """Train `cfg.model` on `cfg.data`; write the run folder; return results.json's content.

    With `resume`, continue from `out_dir/last.pt`: its config wins (except a larger `epochs`), and as order,
    augmentation and dropout depend only on (seed, epoch), the resumed run reaches the same result.

    Launched by torchrun, each process trains a DistributedDataParallel replica on its shard of every epoch;
    metrics are reduced over ranks and only rank 0 writes the run folder, logs and checkpoints.
    """
    d, device_name = setup(cfg.device)
    finished = False
    try:
        report = _fit(replace(cfg, device=device_name), out_dir, resume=resume,
                      progress=progress and d.is_main, log=log if d.is_main else (lambda *a, **k: None), dist=d)
        finished = True
        return report
    finally:
        teardown(d, finished=finished)


def _fit(cfg: TrainConfig, out_dir, *, resume: bool, progress: bool, log, dist: Dist) -> TrainReport:
    """The run as stages around one RunState: config (resumed) -> run folder -> setup (data, model, optimiser;
    restored from last.pt) -> epochs (train, validate, schedule / early stop, checkpoint) -> final test."""
    cfg, ckpt = _resume_config(cfg, out_dir) if resume else (cfg, None)
    cfg = resolve_config(cfg)
    state = setup_run(cfg, _run_dir(cfg, out_dir, resume, dist), dist, ckpt, log)
    run_epochs(state, progress, log)
    return final_test(state, log)


# --- the run's state and its checkpoint ---------------------------------------------------------------------

@dataclass
class RunState:
    """What a run carries from stage to stage: its config, folder, data, model and optimiser, and the progress
    a checkpoint records. `checkpoint` writes it as a dict; `restore` reads one back."""
    cfg: TrainConfig  # resolved; what config.json and every checkpoint record
    out_dir: Path
    device: torch.device
    dist: Dist
    bundle: DataBundle
    model: nn.Module
    model_args: dict  # create_model's keyword arguments: with the name, they rebuild the model
    optimizer: torch.optim.Optimizer
    plateau: Any = None  # ReduceLROnPlateau, with --scheduler plateau
    scaler: Any = None  # GradScaler, for float16 autocast on CUDA
    net: nn.Module | None = None  # what trains: the model, or its DistributedDataParallel wrapper
    teacher: nn.Module | None = None  # --teacher, frozen
    teacher_record: dict = field(default_factory=dict)  # its file and sha256, kept in every checkpoint
    base_lrs: list[float] = field(default_factory=list)
    start_epoch: int = 1
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"val_acc": -1.0, "epoch": 0})
    bad_epochs: int = 0
    train_seconds: float = 0.0
    stop_reason: str = "max epochs"

    def __post_init__(self) -> None:
        if self.net is None:
            self.net = self.model
        if not self.base_lrs:
            self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]

    @property
    def meta(self) -> ModelMeta:
        return self.bundle.meta

    @property
    def epochs_done(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0

    def checkpoint(self, epoch: int) -> dict:
        """A self-describing checkpoint: `model_from_checkpoint` rebuilds the model from it alone, and
        `fit(resume=True)` continues the run from it. Tensors and plain types only (weights_only loading)."""
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "edgefashion": __version__,
            "model": self.cfg.model, "model_args": self.model_args, "meta": self.meta.to_dict(),
            "config": asdict(self.cfg), "epoch": epoch,
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.plateau.state_dict() if self.plateau else {},
            "scaler": self.scaler.state_dict() if self.scaler else {}, "history": self.history, "best": self.best,
            "bad_epochs": self.bad_epochs, "train_seconds": self.train_seconds, "rng": _rng_state(self.device),
            "world_size": self.dist.world, "teacher": self.teacher_record,
        }

    def restore(self, ckpt: dict) -> None:
        """Continue from `ckpt` (a checkpoint of this run): weights, optimiser, scheduler and progress."""
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.plateau is not None and ckpt.get("scheduler"):
            self.plateau.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.history = list(ckpt["history"])
        self.best = dict(ckpt["best"])
        self.bad_epochs = int(ckpt["bad_epochs"])
        self.train_seconds = float(ckpt["train_seconds"])
        self.start_epoch = int(ckpt["epoch"]) + 1

    def save(self, name: str, epoch: int) -> None:
        """Write checkpoint `name` of the run folder (rank 0 only; the others hold the same weights)."""
        if self.dist.is_main:
            save_checkpoint(self.out_dir / name, self.checkpoint(epoch))


# --- setup and resume ---------------------------------------------------------------------------------------

def _resume_config(cfg: TrainConfig, out_dir) -> tuple[TrainConfig, dict]:
    """The config of the run in `out_dir` (a larger `epochs`, another data_dir and device may be asked) and
    its last checkpoint."""
    if out_dir is None:
        raise TrainingError("--resume needs the run folder (--out DIR)")
    ckpt = load_checkpoint(Path(out_dir) / LAST_CHECKPOINT)  # every rank resumes from the same file
    saved = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in {f.name for f in fields(TrainConfig)}})
    epochs = max(saved.epochs, cfg.epochs) if cfg.epochs else saved.epochs
    return replace(saved, epochs=epochs, data_dir=cfg.data_dir or saved.data_dir, device=cfg.device), ckpt


def _run_dir(cfg: TrainConfig, out_dir, resume: bool, dist: Dist) -> Path:
    """The run folder, created. Rank 0 picks the (numbered) default; the others learn its name."""
    out_dir = Path(broadcast_object(str(out_dir) if out_dir is not None else str(default_run_dir(cfg)), dist))
    if not resume and (out_dir / LAST_CHECKPOINT).exists():
        # Never train over a finished or interrupted run: its checkpoints would be lost.
        raise TrainingError(f"{out_dir}: holds a run already; continue it with --resume or pick another --out")
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _load_bundle(cfg: TrainConfig, device: torch.device, dist: Dist, log) -> DataBundle:
    t_load = time.perf_counter()
    bundle = load_data(cfg.data, cfg.data_dir, model=cfg.model, img_size=cfg.img_size, in_chans=cfg.in_chans,
                       split=split_spec(cfg), limit=cfg.limit, device=device, quiet=not dist.is_main)
    meta = bundle.meta
    log(f"data: {bundle.name} ({', '.join(f'{k} {len(v)}' for k, v in bundle.splits.items())}) "
        f"{meta.input_size}px x{meta.in_chans} in {time.perf_counter() - t_load:.1f}s; device {device}"
        + (f"; {dist.world} processes, global batch {cfg.batch_size * dist.world}" if dist.enabled else ""))
    return bundle


def _build_model(cfg: TrainConfig, meta: ModelMeta, device: torch.device, *, fresh: bool,
                 log) -> tuple[nn.Module, dict]:
    """The model and its create_model arguments, on `device`. A fresh run starts from pretrained or
    --init-weights when asked; a resumed one gets its checkpoint's weights afterwards."""
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model_args = {"num_classes": meta.num_classes, "in_chans": meta.in_chans, "img_size": meta.input_size}
    model = create_model(cfg.model, pretrained=cfg.pretrained and fresh, **model_args)
    if cfg.init_weights and fresh:
        rep = load_init_weights(model, cfg.init_weights)
        log(f"init weights: {rep['loaded']} tensors from {cfg.init_weights}; kept fresh: {len(rep['missing'])}")
    if cfg.qat:
        # Fresh: BatchNorm folded from the trained statistics. Resumed: the checkpoint's weights replace them.
        model = qat.prepare(model, meta)
        log("quantization-aware training: BatchNorm folded into the convolutions, fake quantization inserted "
            "(uint8 activations, 7-bit per-channel weights); ranges frozen for the second half of the epochs")
    model.to(device)
    if _channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    return model, model_args


def setup_run(cfg: TrainConfig, out_dir: Path, dist: Dist, ckpt: dict | None, log) -> RunState:
    """Data, model, optimiser, scheduler and scaler; restored from `ckpt` when resuming. Writes config.json
    and, for a fresh run, last.pt at epoch 0, so that Ctrl-C in epoch 1 still leaves a resumable run."""
    device = select_device(cfg.device)
    bundle = _load_bundle(cfg, device, dist, log)
    cfg = replace(cfg, in_chans=bundle.meta.in_chans)
    model, model_args = _build_model(cfg, bundle.meta, device, fresh=ckpt is None, log=log)
    optimizer = _make_optimizer(model, cfg)
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience)
               if cfg.scheduler == "plateau" else None)
    scaler = (torch.amp.GradScaler("cuda")
              if device.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported() else None)
    state = RunState(cfg=cfg, out_dir=out_dir, device=device, dist=dist, bundle=bundle, model=model,
                     model_args=model_args, optimizer=optimizer, plateau=plateau, scaler=scaler)
    if cfg.teacher:
        state.teacher, state.teacher_record = load_teacher(
            cfg.teacher, bundle.meta, device, expect_sha256=((ckpt or {}).get("teacher") or {}).get("sha256"))
        log(f"distilling from {state.teacher_record['file']} ({state.teacher_record['model']}): weight "
            f"{cfg.distill_weight} against the labels, temperature {cfg.distill_temperature}")
    if ckpt is not None:
        state.restore(ckpt)
        log(f"resuming {out_dir} from epoch {state.start_epoch - 1}")
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        state.net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if dist.is_main:
        atomic_write_text(out_dir / CONFIG_JSON, json.dumps(asdict(cfg), indent=2) + "\n")
    if ckpt is None:
        state.save(LAST_CHECKPOINT, 0)
    log(f"model: {cfg.model} ({count_params(model):,} params) | {cfg.optimizer} lr {cfg.lr} | "
        f"batch {cfg.batch_size} | augment {cfg.augment} | scheduler {cfg.scheduler} | epochs <= {cfg.epochs} | "
        f"run folder {out_dir}")
    return state


# --- the epochs: train -> validate -> schedule / early stop -> checkpoint -----------------------------------

def _train_epoch(state: RunState, epoch: int, progress: bool) -> dict:
    cfg, optimizer = state.cfg, state.optimizer
    lr_scale = 1.0
    if state.plateau is not None and state.base_lrs[0]:
        # ReduceLROnPlateau lowers group['lr']; keep the per-step warm-up relative to that.
        lr_scale = optimizer.param_groups[0]["lr"] / state.base_lrs[0]
    use_steps = cfg.scheduler == "cosine" or cfg.warmup_epochs > 0
    return train_one_epoch(state.net, state.bundle.splits[TRAIN], state.meta, optimizer, cfg, epoch,
                           device=state.device, scaler=state.scaler, base_lrs=state.base_lrs if use_steps else None,
                           lr_scale=lr_scale, progress=progress, dist=state.dist, teacher=state.teacher)


def _score(state: RunState, split: str) -> dict:
    if state.cfg.qat:
        paused = qat.observers_paused(state.model)  # scoring must not move the quantization ranges
    else:
        paused = nullcontext()
    with paused:
        return evaluate(state.model, state.bundle.splits[split], state.meta, device=state.device,
                        batch_size=state.cfg.eval_batch_size, amp=state.cfg.amp, dist=state.dist)


def _validate(state: RunState, epoch: int) -> dict:
    va = _score(state, VAL)
    if not math.isfinite(va["loss"]):
        raise TrainingError(f"validation loss became {va['loss']} in epoch {epoch}")
    return va


def _schedule(state: RunState, epoch: int, tr: dict, va: dict) -> bool:
    """Step the plateau scheduler, keep the best epoch and the patience count, append the epoch to the
    history; True when the epoch is the best so far."""
    state.train_seconds += tr["seconds"]
    lr_now = state.optimizer.param_groups[0]["lr"]
    if state.plateau is not None:
        state.plateau.step(va["acc"])
    improved = va["acc"] > state.best["val_acc"]
    if improved:
        state.best = {"val_acc": va["acc"], "val_loss": va["loss"], "epoch": epoch}
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1
    state.history.append({"epoch": epoch, "train_loss": round(tr["loss"], 6), "train_acc": round(tr["acc"], 6),
                          "val_loss": round(va["loss"], 6), "val_acc": round(va["acc"], 6), "lr": lr_now,
                          "seconds": round(tr["seconds"], 3), "images_per_s": round(tr["ips"], 1)})
    return improved


def _early_stop(state: RunState) -> bool:
    cfg = state.cfg
    # Rank 0 decides and tells the others, so every rank leaves the loop at the same epoch.
    if broadcast_object(bool(cfg.early_stopping and state.bad_epochs >= cfg.patience), state.dist):
        state.stop_reason = f"early stopping: no val accuracy gain in {cfg.patience} epochs"
        return True
    return False


def _checkpoint(state: RunState, epoch: int, improved: bool) -> None:
    if improved:
        state.save(BEST_CHECKPOINT, epoch)
    state.save(LAST_CHECKPOINT, epoch)
    if state.dist.is_main:
        _write_metrics_csv(state.out_dir / METRICS_CSV, state.history)


class Terminated(KeyboardInterrupt):
    """SIGTERM during training: `kill`, `timeout`, `docker stop` and a cluster's preemption stop a run the
    way Ctrl-C does (last.pt stays resumable and the run says how to continue), exiting 128 + 15."""
    exit_code = 128 + signal.SIGTERM


@contextmanager
def _sigterm_interrupts():
    # Python's default for SIGTERM is to die at once, without the resume message; only the main thread may
    # install a handler (a run started from a notebook's worker thread keeps the default).
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_epochs(state: RunState, progress: bool, log) -> None:
    """Epochs from `state.start_epoch` until the last or early stopping. Ctrl-C or SIGTERM leaves last.pt
    resumable and says how to continue; a diverged run stops, keeping its last good epoch."""
    last = state.out_dir / LAST_CHECKPOINT
    try:
        with _sigterm_interrupts():
            _epoch_loop(state, progress, log)
    except KeyboardInterrupt:
        log(f"\ninterrupted: {last} holds epoch {state.epochs_done}; continue with "
            f"`edgefashion train --resume --out {state.out_dir}`")
        raise
    except TrainingError as e:
        raise TrainingError(f"{e}; stopped, {last} keeps the last good epoch ({state.epochs_done}); "
                            f"try a lower --lr") from None


def _epoch_loop(state: RunState, progress: bool, log) -> None:
    for epoch in range(state.start_epoch, state.cfg.epochs + 1):
        if state.cfg.qat and epoch == state.cfg.epochs // 2 + 1:
            # The second half trains with the file's ranges fixed, so that its best epoch is one the
            # INT8 file reproduces.
            qat.freeze_observers(state.model)
        tr = _train_epoch(state, epoch, progress)
        va = _validate(state, epoch)
        improved = _schedule(state, epoch, tr, va)
        _checkpoint(state, epoch, improved)
        log(f"epoch {epoch:3d}/{state.cfg.epochs}  train loss {tr['loss']:.4f} acc {tr['acc']:.4f}  "
            f"val loss {va['loss']:.4f} acc {va['acc']:.4f}  lr {state.history[-1]['lr']:.2e}  "
            f"{tr['seconds']:.1f}s ({tr['ips']:.0f} img/s){'  *' if improved else ''}")
        if _early_stop(state):
            break


# --- the final test -----------------------------------------------------------------------------------------

def final_test(state: RunState, log) -> TrainReport:
    """Restore the best epoch, score it on test (and train), write results.json and the plots; return the
    results."""
    best = state.best
    log(f"stopped: {state.stop_reason}; restoring the best epoch ({best['epoch']}, val acc {best['val_acc']:.4f})")
    broadcast_object(None, state.dist)  # a barrier: rank 0 has written best.pt before anyone reads it
    best_ckpt = load_checkpoint(state.out_dir / BEST_CHECKPOINT, map_location=state.device)
    state.model.load_state_dict(best_ckpt["state_dict"])
    te, tr = _score(state, TEST), _score(state, TRAIN)
    results = _results(state, te, tr)
    if state.dist.is_main:
        _write_results(state, results, te, log)
    return results


def _results(state: RunState, te: dict, tr: dict) -> TrainReport:
    cfg, meta, bundle = state.cfg, state.meta, state.bundle
    return TrainReport(
        model=cfg.model, data=bundle.name, labels=list(meta.labels), params=count_params(state.model),
        img_size=meta.input_size, in_chans=meta.in_chans,
        test_accuracy=te["acc"], test_loss=te["loss"], test_images=te["n"],
        per_class_accuracy=dict(zip(meta.labels, te["per_class"])), confusion_matrix=te["confusion"],
        train_accuracy=tr["acc"], best_val_accuracy=state.best["val_acc"], best_epoch=state.best["epoch"],
        epochs_run=state.epochs_done, stop_reason=state.stop_reason,
        train_seconds=round(state.train_seconds, 2), device=str(state.device), world_size=state.dist.world,
        split_sizes={k: len(v) for k, v in bundle.splits.items()},
        source=get_entry(cfg.model).source, edgefashion=__version__, torch=torch.__version__,
        python=platform.python_version(),
    )


def _write_results(state: RunState, results: TrainReport, te: dict, log) -> None:
    cfg, out_dir = state.cfg, state.out_dir
    results.write(out_dir / RESULTS_JSON)
    try:
        from .plots import plot_confusion, plot_curves
        plot_curves(state.history, out_dir / "curves.png", title=f"{cfg.model} on {state.bundle.name}")
        plot_confusion(np.asarray(te["confusion"]), list(state.meta.labels), out_dir / "confusion_matrix.png",
                       title=f"{cfg.model}: test accuracy {te['acc']:.4f}")
    except ImportError as e:  # matplotlib is in the [train] extra; say so rather than fail a finished run
        log(f"plots skipped: {e}")
    log(f"test accuracy {te['acc']:.4f} (loss {te['loss']:.4f}) on {te['n']} images; "
        f"train {state.train_seconds:.0f}s; results in {out_dir}")
