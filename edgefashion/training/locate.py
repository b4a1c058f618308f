"""A garment locator for the camera (`edgefashion locate CHECKPOINT --out RUN`, then `camera --roi auto`).

Why: on a camera frame the garment fills 40-100% of the height and the rest is a room. Classifying the square
around the garment as well as the whole frame, with the classifier unchanged, lifts the calibration video's items
right at the camera's operating point from 73.0% to 75.9% (benchmarks/camera/README.md, "A garment locator").
The model already knows where the garment is: its last feature map holds it. A small head (zoo.BoxHead) learns
to read the box (cx, cy, w, h in fractions of the model's view) from that map, with the trunk frozen, so the
classifier's logits stay exactly what they were and its photo accuracy with them.

Training frames are made as the camera benchmark's videos are (data.scene): the checkpoint's TRAINING photos,
their garment cut out and pasted at 40-100% of a 640x480 frame's height, up to 15% off-centre and slightly
rotated, in front of views of the TRAINING scenes (edgefashion/backgrounds/train/), under random exposure, colour
cast, noise, defocus and motion blur; the box is the pasted garment's. Validation frames are the validation
photos over the calibration scenes. Each frame goes through the runtime's own preprocessing (runtime.preprocess),
so the box is learnt in the coordinates the camera reads it in.

The result is an ensemble checkpoint (model "ensemble", model_args.locator): the same members and mirrored view
as the source, plus the head; its graph has two outputs, `logits` and `box`, and export handles it like any
checkpoint.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .. import data as efdata
from ..data import scene
from ..meta import LOCATE_MARGIN, ModelMeta
from ..names import TRAIN, VAL
from ..runtime.preprocess import located_crop, preprocess, view_box
from .checkpoints import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, TrainingError, checkpoint_split, is_ensemble,
                          load_checkpoint, save_checkpoint)
from .zoo import ENSEMBLE, BoxHead, Ensemble, build_ensemble, create_model, split_features

FRAME_W, FRAME_H = 640, 480
OFFSET = (0.15, 0.12)  # of the frame's width / height, each way


def make_frames(paths, labels, backgrounds, n: int, meta: ModelMeta, seed: int,
                keep_frames: bool = False) -> dict:
    """n camera-like frames of garments from `paths` over `backgrounds`: the model's preprocessed input
    (float32 N,C,S,S, as runtime.preprocess gives it), the true boxes (float32 N,4, fractions of the model's view), the labels and, with
    `keep_frames`, the 640x480 frames themselves."""
    rng = np.random.default_rng(seed)
    mattes: dict = {}
    xs, boxes, ys, frames = [], [], [], []
    vx, vy, vw, vh = view_box(FRAME_H, FRAME_W, meta)
    for _ in range(n):
        i = int(rng.integers(len(paths)))
        if i not in mattes:
            img = efdata.read_image(paths[i])
            mattes[i] = (img, scene.garment_mask(img, seed=i))
        img, alpha = mattes[i]
        look = scene.Look.random(rng)
        height = scene.garment_height(rng) * FRAME_H
        cx = FRAME_W / 2 + rng.uniform(-OFFSET[0], OFFSET[0]) * FRAME_W
        cy = FRAME_H / 2 + rng.uniform(-OFFSET[1], OFFSET[1]) * FRAME_H
        frame = scene.view_of(backgrounds[int(rng.integers(len(backgrounds)))], rng, FRAME_W, FRAME_H)
        scene.paste(frame, img, alpha, cx, cy, height, float(rng.normal(0, 2)))
        x0, y0, x1, y1 = scene.bbox(alpha)
        s = min(height / (y1 - y0), FRAME_W / (x1 - x0))  # paste's scale: by height, capped to the width
        blur = (int(rng.integers(5, 16)), float(rng.uniform(0, 180))) if rng.random() < 0.25 else None
        frame = scene.finish(frame, look, rng, blur)
        xs.append(preprocess([frame], meta)[0])
        boxes.append(((cx - vx) / vw, (cy - vy) / vh, (x1 - x0) * s / vw, (y1 - y0) * s / vh))
        ys.append(int(labels[i]))
        if keep_frames:
            frames.append(frame)
    return {"x": np.stack(xs).astype(np.float32), "box": np.asarray(boxes, np.float32),
            "y": np.asarray(ys, np.int64), "frames": frames}


def source_members(ckpt: dict) -> tuple[list, bool, dict]:
    """The source checkpoint's networks (with weights), whether it averages the mirrored view, and its
    model_args as an ensemble's (a plain checkpoint is an ensemble of one)."""
    if is_ensemble(ckpt):
        args = dict(ckpt["model_args"])
        if args.get("locator"):
            raise TrainingError("the checkpoint already has a locator; give the one it was made from")
        model = build_ensemble(args)
        model.load_state_dict(ckpt["state_dict"])
        return list(model.members), model.flip, args
    member = create_model(ckpt["model"], **ckpt["model_args"])
    member.load_state_dict(ckpt["state_dict"])
    return [member], False, {"members": [{"model": ckpt["model"], "model_args": ckpt["model_args"]}], "flip": False}


@torch.no_grad()
def features(trunk: nn.Module, x: np.ndarray, batch: int = 128) -> torch.Tensor:
    return torch.cat([trunk(torch.from_numpy(x[i:i + batch])) for i in range(0, len(x), batch)])


def box_errors(pred: np.ndarray, true: np.ndarray) -> dict:
    """Mean absolute error of each coordinate (fractions of the view) and the mean IoU of the boxes."""
    def corners(b):
        return b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
    ax0, ay0, ax1, ay1 = corners(pred)
    bx0, by0, bx1, by1 = corners(true)
    iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih
    union = np.clip(ax1 - ax0, 0, None) * np.clip(ay1 - ay0, 0, None) + (bx1 - bx0) * (by1 - by0) - inter
    err = np.abs(pred - true).mean(0)
    return {"cx": float(err[0]), "cy": float(err[1]), "w": float(err[2]), "h": float(err[3]),
            "iou": float(np.mean(inter / np.maximum(union, 1e-9)))}


def fit_locator(src: str | Path, out: str | Path, *, frames: int = 8000, val_frames: int = 400, epochs: int = 60,
                lr: float = 3e-3, seed: int = 0, data_dir: str | None = None,
                log: Callable[[str], None] = print) -> dict:
    """Train a box head on `src`'s frozen trunk; write `out`/best.pt (the ensemble checkpoint with it) and
    return the report (box errors on validation frames, and top-1 of the whole frame vs whole + located crop)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    ckpt = load_checkpoint(src)
    meta = ModelMeta.from_dict({**ckpt["meta"], "split": checkpoint_split(ckpt).to_dict()})
    if meta.domain != "photo":
        raise TrainingError(f"{src}: a {meta.domain} model; the locator is for photo models on a camera")
    members, flip, args = source_members(ckpt)
    for m in members:
        m.eval()
    trunk, _ = split_features(members[0])
    root = efdata.resolve_data_root(data_dir)
    _, path = efdata.resolve_dataset(meta.dataset, root, download=False)
    ds = efdata.load_folder_dataset(path, checkpoint_split(ckpt))
    if tuple(ds.labels) != tuple(meta.labels):
        raise TrainingError(f"{path}: its classes {ds.labels} are not the checkpoint's {list(meta.labels)}")
    tr = make_frames(*ds.splits[TRAIN], scene.backgrounds("train"), frames, meta, seed)
    log(f"locate: {frames} training frames ({time.perf_counter() - t0:.0f} s)")
    f = features(trunk, tr["x"])
    del tr["x"]
    if f.shape[2] != f.shape[3]:
        raise TrainingError(f"{src}: a {tuple(f.shape[2:])} feature map; the box head needs a square one")
    head = BoxHead(int(f.shape[1]), int(f.shape[2]))
    target = torch.from_numpy(tr["box"])
    opt = torch.optim.AdamW(head.parameters(), lr / 3, weight_decay=1e-2)
    batch = 128
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * ((len(f) + batch - 1) // batch))
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        perm = torch.randperm(len(f), generator=g)
        total = 0.0
        for i in range(0, len(f), batch):
            idx = perm[i:i + batch]
            loss = nn.functional.smooth_l1_loss(head(f[idx]), target[idx], beta=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if (epoch + 1) % 10 == 0 or epoch == epochs - 1:
            log(f"locate: epoch {epoch + 1}/{epochs} loss {total / len(f):.4f}")
    head.eval()
    located = Ensemble(members, flip=flip, locator=head).eval()
    va = make_frames(*ds.splits[VAL], scene.backgrounds("calib"), val_frames, meta, seed + 1, keep_frames=True)
    report = evaluate_locator(located, va, meta)
    log(f"locate: validation frames: box |error| cx {report['box']['cx']:.3f} cy {report['box']['cy']:.3f} "
        f"w {report['box']['w']:.3f} h {report['box']['h']:.3f}, IoU {report['box']['iou']:.3f}; top-1 whole "
        f"frame {report['top1_frame']:.3f}, frame + located square {report['top1_located']:.3f}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    new_meta = dict(ckpt["meta"])
    new_meta["model"] = f"{meta.model}-locate"
    loc_args = {"channels": int(f.shape[1]), "grid": int(f.shape[2]), "margin": LOCATE_MARGIN}
    save_checkpoint(out / "best.pt", {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "edgefashion": ckpt.get("edgefashion"),
        "model": ENSEMBLE, "model_args": {**args, "locator": loc_args}, "meta": new_meta,
        "config": ckpt.get("config"), "epoch": ckpt.get("epoch"), "state_dict": located.state_dict(),
        "locator": {"source": str(src), "frames": frames, "epochs": epochs, "lr": lr, "seed": seed, **report},
    })
    log(f"locate: wrote {out / 'best.pt'} ({time.perf_counter() - t0:.0f} s)")
    return report


@torch.no_grad()
def evaluate_locator(model: Ensemble, va: dict, meta: ModelMeta, margin: float = LOCATE_MARGIN) -> dict:
    logits, box = model(torch.from_numpy(va["x"]))
    logits, box = logits.numpy(), box.numpy()
    crops = []
    for frame, b in zip(va["frames"], box):
        x0, y0, x1, y1 = located_crop(frame.shape[0], frame.shape[1], meta, b, margin)
        crops.append(frame[y0:y1, x0:x1])
    crop_logits, _ = model(torch.from_numpy(preprocess(crops, meta)))
    both = logits + crop_logits.numpy()
    return {"box": box_errors(box, va["box"]), "val_frames": int(len(box)),
            "top1_frame": float((logits.argmax(1) == va["y"]).mean()),
            "top1_located": float((both.argmax(1) == va["y"]).mean())}
