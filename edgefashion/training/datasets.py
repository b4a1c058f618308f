"""Torch views over `edgefashion.data`: whole splits as uint8 tensors on the training device, augmented there.

Fashion-MNIST (47 MB as uint8) and a few thousand cached photos fit in memory, so a Python data loader would
only starve the GPU: batches are sliced from one tensor, converted to float per batch and augmented on the
device. Photos are decoded and passed through the runtime's `prepare` once per run.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import data as efdata
from ..data.splits import SplitSpec
from ..meta import IMAGENET_MEAN, IMAGENET_STD, ModelMeta, fashion_mnist_meta, photo_meta
from ..runtime.preprocess import prepare

AUGMENTATIONS = ("none", "carousell", "resnet", "strong", "camera")


@dataclass
class Split:
    x: torch.Tensor  # uint8 (N, C, H, W)
    y: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class DataBundle:
    name: str  # "fashion-mnist" or the folder's name
    kind: str  # "fashion-mnist" or "folder"
    meta: ModelMeta
    splits: dict[str, Split]
    info: dict = field(default_factory=dict)


def make_meta(kind: str, model: str, labels, img_size: int, in_chans: int, dataset: str) -> ModelMeta:
    if kind == "fashion-mnist":
        meta = fashion_mnist_meta(model, labels, input_size=img_size)
        if in_chans == 3:
            meta = meta.replace(in_chans=3, color="rgb", mean=meta.mean * 3, std=meta.std * 3)
        return meta
    meta = photo_meta(model, labels, input_size=img_size, dataset=dataset)
    if in_chans == 1:
        # A greyscale photo model: ImageNet's luminance statistics, roughly.
        meta = meta.replace(in_chans=1, color="gray", mean=(sum(IMAGENET_MEAN) / 3,), std=(sum(IMAGENET_STD) / 3,))
    return meta


def _to_tensor(images: np.ndarray, labels: np.ndarray, device: torch.device) -> Split:
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return Split(x.contiguous().to(device), torch.from_numpy(labels.astype(np.int64)).to(device))


def load_data(data: str, data_dir: str | Path | None, *, model: str, img_size: int, in_chans: int | None,
              val_fraction: float = 0.2, seed: int = 0, limit: int | None = None,
              device: torch.device | str = "cpu", download: bool = True, quiet: bool = False,
              split: SplitSpec | None = None) -> DataBundle:
    """Load `data` (a set's name or a class-folder path) as uint8 tensors on `device`, with train/val/test
    splits. Splits the set does not ship are carved as `split` says (data/splits.py; default: `val_fraction`
    and `seed` with the default test fraction); the bundle's meta records it, so checkpoints and exported files
    say which images were held out."""
    device = torch.device(device)
    spec = split or SplitSpec(val_fraction=val_fraction, seed=seed)
    root = efdata.resolve_data_root(data_dir)
    kind, path = efdata.resolve_dataset(data, root, download=download)
    sd = efdata.load_splits(kind, path, spec, download=download)
    name = "fashion-mnist" if kind == "fashion-mnist" else Path(path).name
    meta = make_meta(kind, model, sd.labels, img_size, in_chans or (1 if kind == "fashion-mnist" else 3), name)
    meta = meta.replace(split=spec.to_dict())
    splits, info = {}, {"root": str(path), "split": spec.to_dict()}
    if kind == "fashion-mnist":
        for part, (x, y) in sd.splits.items():
            idx = efdata.stratified_subset(y, limit, spec.seed)
            x, y = x[idx], y[idx]
            if img_size != 28 or meta.in_chans != 1:
                x = np.stack([prepare(im, meta) for im in x])
            splits[part] = _to_tensor(x, y, device)
        return DataBundle(name, kind, meta, splits, info)

    info["skipped"] = {}
    for part, (paths, y) in sd.splits.items():
        idx = efdata.stratified_subset(y, limit, spec.seed)
        sel = [paths[i] for i in idx]
        if not quiet:
            print(f"decoding {len(sel)} {part} images at {img_size}px from {path}", file=sys.stderr)
        x, kept = efdata.load_images(sel, lambda bgr: prepare(bgr, meta))
        info["skipped"][part] = len(sel) - len(kept)
        splits[part] = _to_tensor(x, y[idx][kept], device)
    return DataBundle(name, kind, meta, splits, info)


# --- augmentation on the device --------------------------------------------------------------------------

def _rand(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def _affine(x: torch.Tensor, g: torch.Generator, *, rot_deg: float, zoom: tuple[float, float], shear: float,
            shift: float, aspect: tuple[float, float] = (1.0, 1.0), flip: bool = True) -> torch.Tensor:
    """Keras ImageDataGenerator-style random affine warp of a float batch; borders repeat the edge pixels
    like Keras' default fill_mode='nearest'."""
    n, dev = x.shape[0], x.device
    th = _rand(n, -rot_deg, rot_deg, g, dev) * (math.pi / 180)
    sh = _rand(n, -shear, shear, g, dev)
    # A zoom factor z > 1 shows more of the picture (the object gets smaller), as in Keras.
    z = _rand(n, zoom[0], zoom[1], g, dev)
    ar = torch.exp(_rand(n, math.log(aspect[0]), math.log(aspect[1]), g, dev))
    zx, zy = z * ar.sqrt(), z / ar.sqrt()
    tx, ty = _rand(n, -shift, shift, g, dev) * 2, _rand(n, -shift, shift, g, dev) * 2
    fx = torch.where(torch.rand(n, generator=g, device=dev) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=dev)
    c, s = torch.cos(th), torch.sin(th)
    # theta maps output coords to input coords: rotation @ shear @ zoom, then a horizontal flip.
    a = torch.stack([c * zx * fx, (-s + c * torch.tan(sh)) * zy, tx], 1)
    b = torch.stack([s * zx * fx, (c + s * torch.tan(sh)) * zy, ty], 1)
    theta = torch.stack([a, b], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _pad_crop_flip(x: torch.Tensor, g: torch.Generator, pad: int) -> torch.Tensor:
    """The CIFAR ResNet recipe: zero-pad by `pad`, take a random crop of the original size, flip half."""
    n, _, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=dev)
    rows = (oy[:, None] + torch.arange(h, device=dev)[None, :])  # (n, h)
    cols = (ox[:, None] + torch.arange(w, device=dev)[None, :])  # (n, w)
    flip = torch.rand(n, generator=g, device=dev) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bidx = torch.arange(n, device=dev)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2)


def _random_erase(x: torch.Tensor, g: torch.Generator, p: float = 0.5, area=(0.02, 0.25),
                  ratio=(0.3, 3.3)) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017) on a normalised batch: a random box per image set to 0, i.e. the
    data set's mean colour."""
    n, _, h, w = x.shape
    dev = x.device
    a = _rand(n, *area, g, dev) * h * w
    r = torch.exp(_rand(n, math.log(ratio[0]), math.log(ratio[1]), g, dev))
    eh = (a * r).sqrt().clamp(1, h).long()
    ew = (a / r).sqrt().clamp(1, w).long()
    y0 = (torch.rand(n, generator=g, device=dev) * (h - eh + 1)).long()
    x0 = (torch.rand(n, generator=g, device=dev) * (w - ew + 1)).long()
    on = torch.rand(n, generator=g, device=dev) < p
    ys = torch.arange(h, device=dev)[None, :]
    xs = torch.arange(w, device=dev)[None, :]
    my = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])
    mx = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])
    mask = (my[:, :, None] & mx[:, None, :] & on[:, None, None])[:, None]
    return x.masked_fill(mask, 0.0)


def _color_jitter(x: torch.Tensor, g: torch.Generator, strength: float = 0.3) -> torch.Tensor:
    """Brightness, contrast and saturation jitter on a [0, 1] batch, like lighting changes in front of a camera."""
    n, c, dev = x.shape[0], x.shape[1], x.device
    bright = _rand(n, 1 - strength, 1 + strength, g, dev)[:, None, None, None]
    contrast = _rand(n, 1 - strength, 1 + strength, g, dev)[:, None, None, None]
    x = x * bright
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    if c == 3:
        sat = _rand(n, 1 - strength, 1 + strength, g, dev)[:, None, None, None]
        gray = x.mean(dim=1, keepdim=True)
        x = (x - gray) * sat + gray
    return x.clamp_(0, 1)


def batch_to_input(xb: torch.Tensor, meta: ModelMeta, augment: str = "none",
                   g: torch.Generator | None = None, empty: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 NCHW batch -> normalised float NCHW input: the torch twin of runtime.preprocess.normalize, with
    the training augmentation in between when `augment` is not 'none'. `empty` (camera only): the images
    replaced by a background with no garment."""
    x = xb.float() / 255.0
    if augment != "none":
        assert g is not None
        size = x.shape[-1]
        if augment == "carousell":
            # The Carousell report's ImageDataGenerator: flip, rotate, zoom, shear, shift.
            x = _affine(x, g, rot_deg=20, zoom=(0.8, 1.2), shear=0.2, shift=0.2)
        elif augment == "resnet":
            x = _pad_crop_flip(x, g, pad=max(2, round(size / 8)))
        elif augment == "strong":
            x = _affine(x, g, rot_deg=10, zoom=(0.7, 1.25), shear=0.1, shift=0.15, aspect=(0.8, 1.25))
            x = _color_jitter(x, g)
        elif augment == "camera":
            # Garments composited onto real backgrounds under camera conditions (training/camera_aug.py), on
            # top of strong's colour jitter and erasing; strong's geometry for the photos left as they are.
            from .camera_aug import camera_augment
            x = camera_augment(x, xb, g, lambda t: _affine(t, g, rot_deg=10, zoom=(0.7, 1.25), shear=0.1,
                                                           shift=0.15, aspect=(0.8, 1.25)), empty=empty)
            x = _color_jitter(x, g)
        else:
            raise ValueError(f"unknown augmentation {augment!r}; choose from {AUGMENTATIONS}")
    if empty is not None and augment != "camera":
        raise ValueError(f"empty frames are made by the camera augmentation, not {augment!r}")
    mean = torch.tensor(meta.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(meta.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    x = (x - mean) / std
    if augment in ("resnet", "strong", "camera"):
        x = _random_erase(x, g)
    return x
