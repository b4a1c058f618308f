"""The one preprocessing definition: image or camera frame -> model input, driven by ModelMeta alone.

Training builds its photo cache with `prepare`, normalises batches with the same formula as `normalize`, and
export/calibration/runtime call these functions, so a model sees the same pixels everywhere.

Two steps, split so training can cache the expensive one:
- `prepare(bgr, meta)`: geometry and colour -> uint8 HxWxC at the model's input size (cached by training);
- `normalize(uint8 batch, meta)`: uint8 NHWC -> float32 NCHW, (x/255 - mean) / std.

Before them, `crop_roi(frame, roi)` takes the region of interest (`--roi`; meta.Roi): a view into the frame, so
it costs nothing, and everything after it is the same for a cropped frame as for a photo.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..meta import ModelMeta, Roi

_INTERP = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "cubic": cv2.INTER_CUBIC}

# Fashion-MNIST frames: analyse the object on a small copy, so a 640x480 frame costs well under a millisecond.
_ANALYSIS_SIDE = 96
_OBJECT_MARGIN = 0.08  # Fashion-MNIST objects nearly touch the border; keep a thin margin like theirs


def _to_gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    if img.shape[2] == 1:
        return img[:, :, 0]
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def _to_bgr(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img.reshape(img.shape[0], img.shape[1]), cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def _square(height: int, width: int) -> tuple:
    """(x0, y0, side) of the centred square of a height x width image."""
    s = min(height, width)
    return (width - s) // 2, (height - s) // 2, s


def _center_square(img: np.ndarray) -> np.ndarray:
    x, y, s = _square(*img.shape[:2])
    return img[y:y + s, x:x + s]


def _resize(img: np.ndarray, size: int, meta: ModelMeta) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return cv2.resize(img, (size, size), interpolation=_INTERP[meta.interpolation])


def fashion_mnist_domain(img: np.ndarray, size: int = 28) -> np.ndarray:
    """Map a real-world picture into Fashion-MNIST's domain: greyscale, a light object on a black background,
    cropped to the object and centred in a square, resized to `size`.

    Fashion-MNIST was made from product photos on white backgrounds: inverted, trimmed to the object and
    scaled so its longer side fills the image. We do the same: the background's brightness is read from the
    image border (median); a light background is inverted; the object is the bounding box of the pixels that
    differ from the background (Otsu threshold on a small copy); that box is padded to a square and resized.
    """
    gray = _to_gray(img)
    h, w = gray.shape
    border = np.concatenate([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]])
    if np.median(border) > 127:
        gray = 255 - gray
    scale = _ANALYSIS_SIDE / max(h, w)
    small = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA) \
        if scale < 1 else gray
    _, mask = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    pts = cv2.findNonZero(mask)
    if pts is not None:
        x, y, bw, bh = cv2.boundingRect(pts)
        inv = 1.0 / scale if scale < 1 else 1.0
        x0, y0 = int(x * inv), int(y * inv)
        x1, y1 = min(w, int(np.ceil((x + bw) * inv))), min(h, int(np.ceil((y + bh) * inv)))
        gray = gray[y0:y1, x0:x1]
    ch, cw = gray.shape
    side = int(round(max(ch, cw) * (1 + 2 * _OBJECT_MARGIN)))
    canvas = np.zeros((side, side), np.uint8)
    oy, ox = (side - ch) // 2, (side - cw) // 2
    canvas[oy:oy + ch, ox:ox + cw] = gray
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)


def crop_roi(img: np.ndarray, roi: "Roi | str | None") -> np.ndarray:
    """The region of interest of an image, as a view (no copy); a roi that does not crop (None, full, auto,
    flip) returns `img` itself."""
    roi = Roi.parse(roi)
    if not roi.crops:
        return img
    x0, y0, x1, y1 = roi.box(img.shape[0], img.shape[1])
    return img[y0:y1, x0:x1]


def view_box(height: int, width: int, meta: ModelMeta) -> tuple:
    """(x0, y0, w, h): the part of a height x width image that `prepare` shows the model, in its pixels: the
    centred square for `center_crop`, all of it otherwise. A located garment's box (fractions of the model's
    view) maps back into the image through it."""
    if meta.resize == "center_crop":
        x, y, s = _square(height, width)
        return x, y, s, s
    return 0, 0, width, height


def located_crop(height: int, width: int, meta: ModelMeta, box, margin: float) -> tuple:
    """(x0, y0, x1, y1) of the square around a located garment, `box` = (cx, cy, w, h) in fractions of the
    model's view of a height x width image, its side `margin` times the box's longer side, clipped to the
    image. The whole view when the box is degenerate (under 16 px: no garment found, or nonsense)."""
    vx, vy, vw, vh = view_box(height, width, meta)
    cx, cy = vx + float(box[0]) * vw, vy + float(box[1]) * vh
    side = max(float(box[2]) * vw, float(box[3]) * vh) * margin
    if not (np.isfinite(cx) and np.isfinite(cy) and np.isfinite(side)):
        return vx, vy, vx + vw, vy + vh
    x0, x1 = max(0, int(cx - side / 2)), min(width, int(cx + side / 2))
    y0, y1 = max(0, int(cy - side / 2)), min(height, int(cy + side / 2))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return vx, vy, vx + vw, vy + vh
    return x0, y0, x1, y1


def prepare(img: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """An image as OpenCV decodes it (BGR, BGRA or greyscale uint8) -> uint8 (S, S, C) in the model's colour
    order, C = meta.in_chans."""
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    size = meta.input_size
    if meta.domain == "fashion-mnist":
        # A square single-channel image is taken to be in the domain already (a Fashion-MNIST sample) and only
        # resized; anything else is a real-world picture that needs mapping.
        if (img.ndim == 2 or img.shape[2] == 1) and img.shape[0] == img.shape[1]:
            out = _resize(img.reshape(img.shape[0], img.shape[1]), size, meta)
        else:
            out = fashion_mnist_domain(img, size)
        out = out[:, :, None]
        return np.repeat(out, 3, axis=2) if meta.in_chans == 3 else out
    if meta.resize == "center_crop":
        img = _center_square(img)
    img = _resize(img, size, meta)
    if meta.color == "gray":
        return _to_gray(img)[:, :, None]
    return cv2.cvtColor(_to_bgr(img), cv2.COLOR_BGR2RGB)


def normalize(batch: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """uint8 (N, H, W, C) or (N, H, W) -> float32 (N, C, H, W). Training does the same in torch:
    x.float() / 255, then (x - mean) / std."""
    if batch.ndim == 3:
        batch = batch[..., None]
    x = batch.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(meta.mean, np.float32)) / np.asarray(meta.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess(images: Sequence[np.ndarray], meta: ModelMeta, roi: "Roi | str | None" = None) -> np.ndarray:
    """Images as OpenCV decodes them -> one float32 NCHW batch; `roi` crops each image first (default: whole)."""
    roi = Roi.parse(roi)
    return normalize(np.stack([prepare(crop_roi(im, roi), meta) for im in images]), meta)
