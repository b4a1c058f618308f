"""Pictures the runtime can draw without matplotlib (it is not a runtime dependency): a confusion matrix."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..files import atomic_write_bytes


def _text(img, s, org, scale=0.45, color=(30, 30, 30), thick=1):
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def confusion_image(conf: np.ndarray, labels: Sequence[str], title: str = "") -> np.ndarray:
    """Row-normalised confusion matrix (rows: true class) as a BGR image; each cell shows the count and its
    shade the fraction of its row."""
    conf = np.asarray(conf, dtype=np.int64)
    k = len(labels)
    cell = 52 if k <= 12 else max(18, 620 // k)
    label_w = 10 + 8 * max(len(s) for s in labels)
    top = 60
    w = label_w + k * cell + 20
    h = top + k * cell + label_w
    img = np.full((h, w, 3), 255, np.uint8)
    rows = conf.sum(1, keepdims=True)
    frac = conf / np.maximum(rows, 1)
    for i in range(k):
        for j in range(k):
            shade = int(255 * (1 - frac[i, j]))
            color = (255, shade, shade) if i != j else (shade, 255 - (255 - shade) // 3, shade)
            x0, y0 = label_w + j * cell, top + i * cell
            cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), color, -1)
            cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), (200, 200, 200), 1)
            if cell >= 30:
                txt = str(conf[i, j])
                _text(img, txt, (x0 + 4, y0 + cell // 2 + 5), 0.4, (0, 0, 0) if frac[i, j] < 0.6 else (255, 255, 255))
        _text(img, labels[i], (5, top + i * cell + cell // 2 + 5))
    # Column labels written vertically: draw on a rotated strip.
    strip = np.full((label_w, k * cell, 3), 255, np.uint8)
    strip = cv2.rotate(strip, cv2.ROTATE_90_CLOCKWISE)
    for j in range(k):
        _text(strip, labels[j], (5, j * cell + cell // 2 + 5))
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    img[top + k * cell:top + k * cell + label_w, label_w:label_w + k * cell] = strip
    _text(img, title or "confusion matrix (rows: true, columns: predicted)", (5, 22), 0.55, thick=1)
    _text(img, "rows: true class, columns: predicted", (5, 45), 0.4, (90, 90, 90))
    return img


def save_png(img: np.ndarray, path: str | Path) -> None:
    """Encode first, then write atomically: a failed write never leaves a broken PNG behind."""
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"{path}: could not encode PNG")
    atomic_write_bytes(Path(path), buf.tobytes())


def save_confusion_png(conf: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "") -> None:
    save_png(confusion_image(conf, labels, title), path)
