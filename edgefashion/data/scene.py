"""Camera scenes: a garment photo cut out of its product-shot background and held up in front of a real scene.

Shared by the camera benchmark (benchmarks/camera/), the camera-domain training augmentation
(training/camera_aug.py, which takes the cut-out masks and background photographs from here) and, later, the
demo. numpy and OpenCV only, so the runtime half can use it.

- `garment_mask(bgr)`: the garment's alpha matte, by GrabCut seeded with a rectangle a little inside the photo
  (clothing-small's photos are garments laid on a bed, a floor or a door, roughly centred); when GrabCut finds
  too little the whole photo is kept, as if a print of it were held up.
- `backgrounds(kind)`: the images in edgefashion/backgrounds/train, calib or heldout (README.md there: sources,
  licences, the split).
- `render_frame(...)`: one camera frame with lighting, colour cast, blur and sensor noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from .common import DataError

BACKGROUND_DIR = Path(__file__).resolve().parents[1] / "backgrounds"
BACKGROUND_SETS = ("train", "calib", "heldout")
_MASK_SIDE = 128  # GrabCut on a small copy: ~50 ms a photo on one core, and the matte is smooth anyway
_INSET = 0.04  # the seed rectangle's margin: garments in clothing-small rarely touch the photo's border
_MIN_AREA = 0.12  # below this fraction of the photo GrabCut has lost the garment: keep the whole photo


def background_paths(kind: str = "train") -> List[Path]:
    if kind not in BACKGROUND_SETS:
        raise ValueError(f"background set must be one of {BACKGROUND_SETS}, got {kind!r}")
    files = sorted(p for p in (BACKGROUND_DIR / kind).glob("*.jpg") if p.is_file())
    if not files:
        raise DataError(f"{BACKGROUND_DIR / kind}: no background photographs (run "
                        f"benchmarks/camera/make_backgrounds.py)")
    return files


def backgrounds(kind: str = "train") -> List[np.ndarray]:
    """The background photographs of a set, BGR uint8."""
    out = []
    for p in background_paths(kind):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"{p}: not a readable image")
        out.append(img)
    return out


def garment_mask(bgr: np.ndarray, side: int = _MASK_SIDE, seed: int = 0) -> np.ndarray:
    """float32 alpha (H, W) in [0, 1]: 1 on the garment, 0 on the photo's own background, soft at the edge."""
    h, w = bgr.shape[:2]
    img = bgr if bgr.ndim == 3 and bgr.shape[2] == 3 else cv2.cvtColor(
        bgr.reshape(h, w, -1)[:, :, 0], cv2.COLOR_GRAY2BGR)
    s = side / max(h, w)
    small = cv2.resize(img, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA) \
        if s < 1 else img
    sh, sw = small.shape[:2]
    gc = np.zeros((sh, sw), np.uint8)
    rect = (max(1, int(sw * _INSET)), max(1, int(sh * _INSET)), sw - 2 * max(1, int(sw * _INSET)),
            sh - 2 * max(1, int(sh * _INSET)))
    cv2.setRNGSeed(seed)  # GrabCut's GMM initialisation is random: seeded, the matte is reproducible
    try:
        cv2.grabCut(small, gc, rect, np.zeros((1, 65)), np.zeros((1, 65)), 4, cv2.GC_INIT_WITH_RECT)
        fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
    except cv2.error:  # a flat image: GrabCut cannot build its colour models
        fg = np.zeros((sh, sw), np.uint8)
    if fg.mean() < _MIN_AREA:
        fg[:] = 1
    else:
        # Keep the garment's parts (two shoes are two components) and drop specks; fill holes the garment's own
        # light patches left, so the scene never shows through a white print on a T-shirt.
        n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        if n > 2:
            areas = stats[1:, cv2.CC_STAT_AREA]
            keep = np.flatnonzero(areas >= 0.15 * areas.max()) + 1
            fg = np.isin(lab, keep).astype(np.uint8)
        if not fg[0, 0]:
            outside = fg.copy()
            cv2.floodFill(outside, np.zeros((sh + 2, sw + 2), np.uint8), (0, 0), 1)
            fg = np.maximum(fg, 1 - outside)  # 0 in `outside` = not reachable from the corner: a hole
    alpha = cv2.resize(fg.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    k = max(3, (max(h, w) // 150) | 1)
    return np.clip(cv2.GaussianBlur(alpha, (k, k), 0), 0, 1)


def bbox(alpha: np.ndarray, level: float = 0.5) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the matte's garment."""
    ys, xs = np.nonzero(alpha > level)
    if not len(ys):
        return 0, 0, alpha.shape[1], alpha.shape[0]
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def garment_height(rng: np.random.Generator) -> float:
    """A held-up garment's share of the frame's height: 80% in [0.5, 0.9], the rest at the extremes [0.4, 0.5)
    and (0.9, 1]. The camera benchmark's videos and the locator's training frames draw it alike."""
    u = rng.random()
    if u < 0.8:
        return float(rng.uniform(0.5, 0.9))
    return float(rng.uniform(0.4, 0.5) if u < 0.9 else rng.uniform(0.9, 1.0))


def view_of(bg: np.ndarray, rng: np.random.Generator, width: int = 640, height: int = 480) -> np.ndarray:
    """A random camera view of a background photograph: a crop of 50-100% of it at the frame's aspect,
    mirrored half the time, resized to width x height."""
    h, w = bg.shape[:2]
    aspect = width / height
    cw = min(w, h * aspect)
    scale = rng.uniform(0.5, 1.0)
    cw, ch = max(8, int(cw * scale)), max(8, int(cw * scale / aspect))
    x = int(rng.integers(0, w - cw + 1))
    y = int(rng.integers(0, h - ch + 1))
    out = cv2.resize(bg[y:y + ch, x:x + cw], (width, height), interpolation=cv2.INTER_AREA
                     if cw > width else cv2.INTER_LINEAR)
    return out[:, ::-1].copy() if rng.random() < 0.5 else out


def paste(frame: np.ndarray, garment: np.ndarray, alpha: np.ndarray, cx: float, cy: float,
          height: float, angle: float = 0.0) -> None:
    """Alpha-blend the garment (cropped to its matte's box) into `frame`, in place, centred at (cx, cy), its box
    `height` pixels high (width by aspect, capped to the frame's width), rotated by `angle` degrees."""
    x0, y0, x1, y1 = bbox(alpha)
    g, a = garment[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    gh, gw = g.shape[:2]
    s = min(height / gh, frame.shape[1] / gw)
    m = cv2.getRotationMatrix2D((gw / 2, gh / 2), angle, s)
    m[0, 2] += cx - gw / 2
    m[1, 2] += cy - gh / 2
    fh, fw = frame.shape[:2]
    # Warp only over the garment's footprint: a 640x480 warp per frame would cost several milliseconds.
    corners = cv2.transform(np.float32([[[0, 0]], [[gw, 0]], [[0, gh]], [[gw, gh]]]), m).reshape(-1, 2)
    bx0, by0 = np.floor(corners.min(0)).astype(int) - 1
    bx1, by1 = np.ceil(corners.max(0)).astype(int) + 1
    bx0, by0, bx1, by1 = max(0, bx0), max(0, by0), min(fw, bx1), min(fh, by1)
    if bx0 >= bx1 or by0 >= by1:
        return
    m[0, 2] -= bx0
    m[1, 2] -= by0
    size = (bx1 - bx0, by1 - by0)
    gw_ = cv2.warpAffine(g, m, size, flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    aw = cv2.warpAffine(a, m, size, flags=cv2.INTER_LINEAR, borderValue=0)[:, :, None]
    region = frame[by0:by1, bx0:bx1]
    region[:] = (gw_.astype(np.float32) * aw + region.astype(np.float32) * (1 - aw)).astype(np.uint8)


@dataclass
class Look:
    """One item's camera conditions: exposure and white balance, focus, sensor noise."""
    gain: float = 1.0
    offset: float = 0.0
    cast: Tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel gain, BGR: a white-balance error
    noise: float = 0.0  # sensor noise sigma, in grey levels
    defocus: float = 0.0  # Gaussian sigma in pixels

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Look":
        return cls(gain=float(rng.uniform(0.6, 1.3)), offset=float(rng.uniform(-30, 25)),
                   cast=tuple(float(c) for c in rng.uniform(0.85, 1.15, 3)), noise=float(rng.uniform(2, 8)),
                   defocus=float(rng.choice([0.0, 0.0, 0.0, rng.uniform(0.5, 1.8)])))


def motion_kernel(length: int, angle: float) -> np.ndarray:
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1.0
    m = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle, 1.0)
    k = cv2.warpAffine(k, m, (length, length))
    return k / max(k.sum(), 1e-6)


def finish(frame: np.ndarray, look: Look, rng: np.random.Generator, blur: Optional[Tuple[int, float]] = None
           ) -> np.ndarray:
    """Camera effects on a composed frame: defocus, motion blur (length, angle), exposure, colour cast, noise."""
    f = frame
    if look.defocus > 0:
        f = cv2.GaussianBlur(f, (0, 0), look.defocus)
    if blur is not None and blur[0] >= 3:
        f = cv2.filter2D(f, -1, motion_kernel(int(blur[0]), blur[1]))
    x = f.astype(np.float32) * (np.float32(look.gain) * np.asarray(look.cast, np.float32)) + np.float32(look.offset)
    if look.noise > 0:
        # Mostly luminance noise shared by the channels, some per channel (chroma), as small sensors show.
        x += rng.normal(0.0, look.noise * 0.8, x.shape[:2] + (1,)).astype(np.float32)
        x += rng.normal(0.0, look.noise * 0.5, x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)
