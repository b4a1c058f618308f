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
from .zoo import ENSEMBLE, BoxHead, Ensemble, GarmentHead, build_ensemble, create_model, split_features

FRAME_W, FRAME_H = 640, 480
OFFSET = (0.15, 0.12)  # of the frame's width / height, each way


def make_frames(paths, labels, backgrounds, n: int, meta: ModelMeta, seed: int,
                keep_frames: bool = False) -> dict:
    """n camera-like frames of garments from `paths` over `backgrounds`: the model's preprocessed input
    (float32 N,C,S,S, as runtime.preprocess gives it), the true boxes (float32 N,4, fractions of the model's view),
    the labels, which background each frame shows (`scene`, indices into `backgrounds`) and, with `keep_frames`,
    the 640x480 frames themselves."""
    rng = np.random.default_rng(seed)
    mattes: dict = {}
    xs, boxes, ys, frames, scenes = [], [], [], [], []
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
        b = int(rng.integers(len(backgrounds)))
        frame = scene.view_of(backgrounds[b], rng, FRAME_W, FRAME_H)
        scenes.append(b)
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
            "y": np.asarray(ys, np.int64), "scene": np.asarray(scenes, np.int64), "frames": frames}


def make_empty_frames(backgrounds, n: int, meta: ModelMeta, seed: int, keep_frames: bool = False) -> dict:
    """n garment-free camera frames (views of `backgrounds` under the same camera conditions as make_frames'),
    preprocessed as the runtime does (`x`), which background each shows (`scene`) and, with `keep_frames`, the
    frames themselves: what the camera sees between garments."""
    rng = np.random.default_rng(seed)
    xs, scenes, frames = [], [], []
    for _ in range(n):
        b = int(rng.integers(len(backgrounds)))
        frame = scene.view_of(backgrounds[b], rng, FRAME_W, FRAME_H)
        blur = (int(rng.integers(5, 16)), float(rng.uniform(0, 180))) if rng.random() < 0.25 else None
        frame = scene.finish(frame, scene.Look.random(rng), rng, blur)
        xs.append(preprocess([frame], meta)[0])
        scenes.append(b)
        if keep_frames:
            frames.append(frame)
    return {"x": np.stack(xs).astype(np.float32), "scene": np.asarray(scenes, np.int64), "frames": frames}


@torch.no_grad()
def boxes_of(box_head: nn.Module, f: torch.Tensor, batch: int = 128) -> np.ndarray:
    """The box head's boxes for feature maps `f` (N, C, G, G), in `features`' batches."""
    return torch.cat([box_head(f[i:i + batch]) for i in range(0, len(f), batch)]).numpy()


def located_views(frames: list, boxes: np.ndarray, meta: ModelMeta, margin: float) -> np.ndarray:
    """The camera's second view of each frame (roi auto:`margin`): the mirrored square around its box (the box
    head's, fractions of the model's view), preprocessed as FrameRunner does it (Classifier.located_logits)."""
    crops = []
    for frame, b in zip(frames, boxes):
        x0, y0, x1, y1 = located_crop(frame.shape[0], frame.shape[1], meta, b, margin)
        crops.append(frame[y0:y1, x0:x1])
    return np.ascontiguousarray(preprocess(crops, meta)[..., ::-1])


GARMENT_CV_FOLDS = 5
GARMENT_CV_REJECT = 0.9  # the camera's bar: 90% of empty frames 'uncertain' (benchmarks/camera/run.py)


def garment_head_cv(fg: torch.Tensor, sg: np.ndarray, fe: torch.Tensor, se: np.ndarray, channels: int,
                    folds: int = GARMENT_CV_FOLDS, seed: int = 0, fe_second: torch.Tensor | None = None) -> dict:
    """How the garment head does on scenes it never saw: the training scenes split into `folds` groups, a head
    fitted without each group scores that group's frames (garment frames `fg` and empty ones `fe`, pooled
    features, with their scenes `sg`, `se`). Returns the garment logit below which GARMENT_CV_REJECT of those
    unseen empty frames fall (`cut`: a background logit that keeps that promise on new scenes), the garment
    frames kept above it (one view), and the scenes that are rejected least. With `fe_second`, the empty frames'
    second view as the camera runs them (roi auto: the mirrored located square), an empty frame's score is the
    mean of its two views', as the camera averages them: the box head finds the most garment-like part of an
    empty scene, and that view scores higher (`cut_one_view` keeps the whole frame's alone).

    Why: the calibration scenes (calib/) were then five landscapes and renders, and a threshold fitted there
    rejected 87% of the benchmark's empty photographs, not 90%; the training scenes include cluttered real
    photographs, on which a head that has not seen them is least sure (benchmarks/camera/README.md, "A garment
    detector")."""
    n_scenes = int(max(sg.max(), se.max())) + 1
    fold_of = np.empty(n_scenes, np.int64)
    fold_of[np.random.default_rng(seed).permutation(n_scenes)] = np.arange(n_scenes) % folds
    og, oe, oe2 = np.empty(len(fg)), np.empty(len(fe)), np.empty(len(fe))
    for k in range(folds):
        tg, te = fold_of[sg] == k, fold_of[se] == k
        head = fit_garment_head(fg[torch.from_numpy(~tg)], fe[torch.from_numpy(~te)], channels)
        with torch.no_grad():
            og[tg] = head(fg[torch.from_numpy(tg)][:, :, None, None])[:, 0].numpy()
            oe[te] = head(fe[torch.from_numpy(te)][:, :, None, None])[:, 0].numpy()
            if fe_second is not None:
                oe2[te] = head(fe_second[torch.from_numpy(te)][:, :, None, None])[:, 0].numpy()
    one_view = float(np.quantile(oe, GARMENT_CV_REJECT))
    score = oe if fe_second is None else (oe + oe2) / 2
    cut = float(np.quantile(score, GARMENT_CV_REJECT))
    per_scene = {int(b): float((score[se == b] <= cut).mean()) for b in np.unique(se)}
    return {"folds": folds, "reject": GARMENT_CV_REJECT, "cut": round(cut, 4), "two_views": fe_second is not None,
            "cut_one_view": round(one_view, 4), "garment_kept_one_view": round(float((og > one_view).mean()), 4),
            "auroc_one_view": round(_auroc(og, oe), 4),
            "scenes_below_80": sum(v < 0.8 for v in per_scene.values()), "per_scene_rejected": per_scene}


def fit_garment_head(garment: torch.Tensor, empty: torch.Tensor, channels: int, l2: float = 5e-3) -> GarmentHead:
    """Logistic regression of 'garment' against 'empty scene' on pooled feature maps (N, C), the two classes
    weighted equally, on standardised features with an L2 penalty, solved by L-BFGS (a convex problem: no
    schedule to tune); the standardisation is folded into the head's one linear layer."""
    x = torch.cat([garment, empty]).double()
    y = torch.cat([torch.ones(len(garment)), torch.zeros(len(empty))]).double()
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x = (x - mu) / sd
    weight = torch.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(x @ w + b, y, weight=weight) + l2 * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    head = GarmentHead(channels)
    lin = head.net[-1]
    with torch.no_grad():
        lin.weight.copy_((w / sd).float()[None])
        lin.bias.copy_((b - (w * mu / sd).sum()).float())
    return head.eval()


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
                lr: float = 3e-3, seed: int = 0, data_dir: str | None = None, garment: bool = True,
                empty_frames: int | None = None, camera_margin: float = LOCATE_MARGIN,
                log: Callable[[str], None] = print) -> dict:
    """Train a box head on `src`'s frozen trunk and, with `garment`, a garment-or-empty head on the same map
    (`empty_frames` garment-free training scenes, a quarter of `frames` by default; cross-validated over the
    training scenes as the camera will run it, roi auto:`camera_margin`); write `out`/best.pt (the
    ensemble checkpoint with them) and return the report (box errors on validation frames, top-1 of the whole
    frame vs whole + located crop, and how well each score tells garment frames from empty ones)."""
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
    garment_head = None
    if garment:
        n_empty = max(64, frames // 4) if empty_frames is None else int(empty_frames)
        empty = make_empty_frames(scene.backgrounds("train"), n_empty, meta, seed + 2, keep_frames=True)
        fe_map = features(trunk, empty["x"])  # one trunk pass: its pooled map for the head, its boxes for the crops
        fe = fe_map.mean((2, 3))
        second = located_views(empty["frames"], boxes_of(head, fe_map), meta, camera_margin)
        del fe_map
        fe_second = features(trunk, second).mean((2, 3))
        del empty["frames"]
        fg = f.mean((2, 3))
        garment_head = fit_garment_head(fg, fe, int(f.shape[1]))
        cv = garment_head_cv(fg, tr["scene"], fe, empty["scene"], int(f.shape[1]), seed=seed, fe_second=fe_second)
        cv["camera_margin"] = camera_margin
        names = [p.name for p in scene.background_paths("train")]
        cv["per_scene_rejected"] = {names[b]: round(v, 4) for b, v in cv["per_scene_rejected"].items()}
        log(f"locate: garment head on {len(f)} garment and {n_empty} empty training frames; on scenes it did not "
            f"see ({cv['folds']}-fold over the training scenes): {cv['reject']:.0%} of empty frames below "
            f"{cv['cut']:.4f} as the camera runs roi auto:{camera_margin:g} (the whole frame alone: "
            f"{cv['cut_one_view']:.4f}, {cv['garment_kept_one_view']:.3f} of garment frames above), "
            f"{cv['scenes_below_80']} scenes rejected under 80% ({time.perf_counter() - t0:.0f} s)")
    located = Ensemble(members, flip=flip, locator=head, garment=garment_head).eval()
    va = make_frames(*ds.splits[VAL], scene.backgrounds("calib"), val_frames, meta, seed + 1, keep_frames=True)
    va_empty = make_empty_frames(scene.backgrounds("calib"), max(16, val_frames // 2), meta, seed + 3)["x"]
    report = evaluate_locator(located, va, meta, empty=va_empty)
    log(f"locate: validation frames: box |error| cx {report['box']['cx']:.3f} cy {report['box']['cy']:.3f} "
        f"w {report['box']['w']:.3f} h {report['box']['h']:.3f}, IoU {report['box']['iou']:.3f}; top-1 whole "
        f"frame {report['top1_frame']:.3f}, frame + located square {report['top1_located']:.3f}")
    for name, r in report["empty_vs_garment"].items():
        log(f"locate: {name}: AUROC {r['auroc']:.3f}, garment frames kept with 90% of empty frames rejected "
            f"{r['garment_kept_at_90']:.3f}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    new_meta = dict(ckpt["meta"])
    new_meta["model"] = f"{meta.model}-locate"
    loc_args = {"channels": int(f.shape[1]), "grid": int(f.shape[2]), "margin": LOCATE_MARGIN,
                "garment": garment_head is not None}
    save_checkpoint(out / "best.pt", {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "edgefashion": ckpt.get("edgefashion"),
        "model": ENSEMBLE, "model_args": {**args, "locator": loc_args}, "meta": new_meta,
        "config": ckpt.get("config"), "epoch": ckpt.get("epoch"), "state_dict": located.state_dict(),
        "locator": {"source": str(src), "frames": frames, "epochs": epochs, "lr": lr, "seed": seed,
                    "garment_head": garment_head is not None, **({"garment_cv": cv} if garment else {}),
                    **report},
    })
    log(f"locate: wrote {out / 'best.pt'} ({time.perf_counter() - t0:.0f} s)")
    return report


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties half."""
    order = np.sort(neg)
    lo, hi = np.searchsorted(order, pos, "left"), np.searchsorted(order, pos, "right")
    return float((lo + (hi - lo) / 2).sum() / (len(pos) * len(neg)))


def _separation(pos: np.ndarray, neg: np.ndarray) -> dict:
    cut = np.quantile(neg, GARMENT_CV_REJECT)
    return {"auroc": round(_auroc(pos, neg), 4), "garment_kept_at_90": round(float((pos > cut).mean()), 4)}


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(1, keepdims=True)))[:, 0]


@torch.no_grad()
def evaluate_locator(model: Ensemble, va: dict, meta: ModelMeta, margin: float = LOCATE_MARGIN,
                     empty: np.ndarray | None = None) -> dict:
    """Box errors and top-1 on the validation frames and, given `empty` frames, how well the logits' energy
    (logsumexp(logits / 16), what the camera reads without a garment head) and the garment head each rank
    garment frames above empty ones (whole frame, one view)."""
    logits, box, *g = model(torch.from_numpy(va["x"]))
    logits, box = logits.numpy(), box.numpy()
    sep = {}
    if empty is not None:
        e_logits, _, *e_g = model(torch.from_numpy(empty))
        sep["energy_t16"] = _separation(_logsumexp(logits / 16), _logsumexp(e_logits.numpy() / 16))
        if g:
            sep["garment_head"] = _separation(g[0].numpy()[:, 0], e_g[0].numpy()[:, 0])
    crops = []
    for frame, b in zip(va["frames"], box):
        x0, y0, x1, y1 = located_crop(frame.shape[0], frame.shape[1], meta, b, margin)
        crops.append(frame[y0:y1, x0:x1])
    crop_logits = model(torch.from_numpy(preprocess(crops, meta)))[0]
    both = logits + crop_logits.numpy()
    return {"box": box_errors(box, va["box"]), "val_frames": int(len(box)), "empty_vs_garment": sep,
            "top1_frame": float((logits.argmax(1) == va["y"]).mean()),
            "top1_located": float((both.argmax(1) == va["y"]).mean())}
