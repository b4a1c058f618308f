"""Training curves (matplotlib, from the [train] extra); the confusion matrix comes from the runtime's
OpenCV drawing so `edgefashion eval --plot` draws the same picture on a device without matplotlib."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..files import atomic_write_bytes
from ..runtime.plots import save_confusion_png


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")  # no display needed, and never pops a window
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [h["train_loss"] for h in history], label="train")
    a1.plot(ep, [h["val_loss"] for h in history], label="validation")
    a1.set_xlabel("epoch"); a1.set_ylabel("loss"); a1.legend(); a1.grid(alpha=0.3)
    a2.plot(ep, [h["train_acc"] for h in history], label="train")
    a2.plot(ep, [h["val_acc"] for h in history], label="validation")
    a2.set_xlabel("epoch"); a2.set_ylabel("accuracy"); a2.legend(); a2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def plot_confusion(conf: np.ndarray, labels: list[str], path: Path, title: str = "") -> None:
    save_confusion_png(conf, labels, path, title)
