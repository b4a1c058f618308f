"""`edgefashion eval`: accuracy, per-class accuracy, confusion matrix and throughput of an exported model on
Fashion-MNIST IDX files or a class-folder data set, torch-free.

A data set's classes are matched to the model's labels by name, never by position: a folder with only some
of the classes, in another order, still scores right, and a class the model does not know is an error.
Photos are decoded, prepared and classified batch by batch, so memory stays flat on large folders.
"""
from __future__ import annotations

import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .. import data as efdata
from ..data import DataError, SplitSpec
from ..meta import Roi
from ..names import EVAL_SPLITS, FASHION_MNIST, TEST
from .preprocess import crop_roi, normalize, prepare

SPLITS = EVAL_SPLITS


def _norm(name: str) -> str:
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def match_labels(data_labels: Sequence[str], model_labels: Sequence[str], source: str = "data") -> List[int]:
    """For each data-set class, the index of the model label with the same name: exact first, else the same
    letters and digits ignoring case and punctuation ("T-Shirt" = "t_shirt" = "t-shirt"), when that is unique.
    A class with no match is a DataError naming it and the model's labels."""
    model_labels = list(model_labels)
    exact = {lab: i for i, lab in enumerate(model_labels)}
    loose: Dict[str, List[int]] = {}
    for i, lab in enumerate(model_labels):
        loose.setdefault(_norm(lab), []).append(i)
    out, unknown = [], []
    for name in data_labels:
        if name in exact:
            out.append(exact[name])
        elif len(loose.get(_norm(name), ())) == 1:
            out.append(loose[_norm(name)][0])
        else:
            unknown.append(name)
    if unknown:
        raise DataError(f"{source}: class {', '.join(repr(u) for u in unknown)} not among the model's labels "
                        f"({', '.join(model_labels)})")
    if len(set(out)) != len(out):
        raise DataError(f"{source}: two classes map to the same model label ({list(data_labels)})")
    return out


@dataclass
class EvalResult:
    data: str
    split: str
    labels: tuple  # the model's labels: rows/columns of `confusion`
    confusion: np.ndarray  # (K, K) int64, rows: true, columns: predicted
    seconds: float  # decode + preprocess + inference
    inference_seconds: float
    skipped: int = 0
    extra: dict = field(default_factory=dict)
    # Per-image predicted and true model-label indices, in evaluation order (images that could not be read are
    # left out): what a comparison across machines (edgefashion arm-check) needs beyond the confusion matrix.
    predicted: Optional[np.ndarray] = field(default=None, repr=False)
    truth: Optional[np.ndarray] = field(default=None, repr=False)
    # The image files behind `predicted`, for a class-folder data set (None for Fashion-MNIST's arrays): which
    # images a split holds, e.g. to check that val and test hold none that the model was trained on.
    files: Optional[List[str]] = field(default=None, repr=False)

    @property
    def images(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(1, self.images))

    def per_class(self) -> Dict[str, Optional[float]]:
        """Recall of each model label; None for a class the data has no image of."""
        rows = self.confusion.sum(1)
        return {lab: (float(self.confusion[i, i] / rows[i]) if rows[i] else None)
                for i, lab in enumerate(self.labels)}

    def to_dict(self) -> dict:
        n = self.images
        return {"data": self.data, "split": self.split, "images": n, "accuracy": self.accuracy,
                "per_class_accuracy": self.per_class(), "labels": list(self.labels),
                "confusion_matrix": self.confusion.tolist(), "skipped": self.skipped,
                "seconds": round(self.seconds, 4),
                "images_per_s": round(n / self.seconds, 1) if self.seconds else None,
                "inference_images_per_s": round(n / self.inference_seconds, 1) if self.inference_seconds else None,
                **self.extra}


def evaluate(clf, data: str, split: str = TEST, *, data_dir: Optional[str] = None, limit: Optional[int] = None,
             batch_size: int = 64, seed: int = 0, progress: Optional[Callable[[int, int], None]] = None,
             roi: "Roi | str | None" = None, split_spec: Optional[SplitSpec] = None) -> EvalResult:
    """Evaluate Classifier `clf` on `data` (fashion-mnist, clothing-small, or a class folder); `roi` (meta.Roi
    syntax) crops every image first, the whole image by default. Splits the data set does not ship are carved
    as the model's metadata records its training carved them (`split_spec` overrides it); `seed` picks the
    `limit` subset."""
    roi = clf.check_roi(roi)
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    meta = clf.meta
    root = efdata.resolve_data_root(data_dir)
    kind, path = efdata.resolve_dataset(data, root, download=False)
    k = meta.num_classes
    conf = np.zeros((k, k), np.int64)
    t_inf = 0.0
    skipped = 0
    preds: List[np.ndarray] = []
    truths: List[np.ndarray] = []
    t0 = time.perf_counter()

    def run(batch_u8: np.ndarray, truth: np.ndarray) -> None:
        nonlocal t_inf
        t = time.perf_counter()
        if roi.locates:  # whole images: the model finds the garment in each, then looks at it again
            pred = clf.located_logits(batch_u8, roi.margin).argmax(1)
        else:
            pred = clf.view_logits(normalize(batch_u8, meta), roi).argmax(1)
        t_inf += time.perf_counter() - t
        np.add.at(conf, (truth, pred), 1)
        preds.append(pred)
        truths.append(np.asarray(truth))

    # The model's own split parameters, so that val and test hold no image it was trained on.
    spec = split_spec or SplitSpec.from_meta(meta)
    sd = efdata.load_splits(kind, path, spec)
    items, y = sd.part(split)
    to_model = np.asarray(match_labels(sd.labels, meta.labels, str(sd.root)))
    idx = efdata.stratified_subset(y, limit, seed)
    y = to_model[y[idx]]
    files: Optional[List[str]] = None
    if kind == FASHION_MNIST:
        x = items[idx]
        t0 = time.perf_counter()  # the IDX files are read once; time what a device repeats per image
        for s in range(0, len(y), batch_size):
            run([im for im in x[s:s + batch_size]] if roi.locates else
                np.stack([prepare(crop_roi(im, roi), meta) for im in x[s:s + batch_size]]), y[s:s + batch_size])
            if progress:
                progress(min(s + batch_size, len(y)), len(y))
    else:
        paths: List[Path] = [items[i] for i in idx]
        if not paths:
            raise DataError(f"{sd.root}: no images in split {split!r}")
        files = []

        def load(p: Path) -> Optional[np.ndarray]:
            try:
                im = efdata.read_image(p)
                return im if roi.locates else prepare(crop_roi(im, roi), meta)
            except DataError:
                return None

        bad: List[Path] = []
        # OpenCV decodes and resizes without the GIL: threads overlap decoding with each other.
        with ThreadPoolExecutor() as pool:
            for s in range(0, len(paths), batch_size):
                chunk = list(pool.map(load, paths[s:s + batch_size]))
                ok = [i for i, im in enumerate(chunk) if im is not None]
                bad += [paths[s + i] for i, im in enumerate(chunk) if im is None]
                if ok:
                    batch = [chunk[i] for i in ok]
                    run(batch if roi.locates else np.stack(batch), y[s:s + batch_size][ok])
                    files += [str(paths[s + i]) for i in ok]
                if progress:
                    progress(min(s + batch_size, len(paths)), len(paths))
        skipped = len(bad)
        if bad:
            warnings.warn(f"skipped {len(bad)} unreadable image(s) in {sd.root} ({', '.join(map(str, bad[:3]))}"
                          f"{', ...' if len(bad) > 3 else ''})", stacklevel=2)
        if skipped == len(paths):
            raise DataError(f"{sd.root}: none of the {skipped} images could be read")
    seconds = time.perf_counter() - t0
    return EvalResult(data=str(data), split=split, labels=tuple(meta.labels), confusion=conf, seconds=seconds,
                      inference_seconds=t_inf, skipped=skipped,
                      extra={"model": str(clf.path), "roi": str(roi), "split_spec": spec.to_dict()},
                      predicted=np.concatenate(preds).astype(np.int64) if preds else np.zeros(0, np.int64),
                      truth=np.concatenate(truths).astype(np.int64) if truths else np.zeros(0, np.int64),
                      files=files)


def format_report(r: EvalResult) -> str:
    d = r.to_dict()
    lines = [f"{d['model']} on {d['data']} ({d['split']}, {d['images']} images): accuracy {d['accuracy']:.4f}",
             f"{d['images_per_s']} images/s end to end, {d['inference_images_per_s']} images/s inference"]
    if r.skipped:
        lines.append(f"skipped {r.skipped} unreadable images")
    w = max(len(s) for s in r.labels)
    lines.append(f"{'class':<{w}}  {'acc':>6}  {'n':>6}")
    rows = r.confusion.sum(1)
    for i, (lab, acc) in enumerate(r.per_class().items()):
        lines.append(f"{lab:<{w}}  {'-' if acc is None else f'{acc:.3f}':>6}  {rows[i]:>6}")
    return "\n".join(lines)
