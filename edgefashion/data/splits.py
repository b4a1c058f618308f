"""The one place where train/val/test splits are decided.

A data set ships some splits (Fashion-MNIST: train and test; clothing-small: all three; a plain class folder:
none, so all of it counts as train). The splits it does not ship are carved out of its training images,
stratified by class and seeded: first test (`test_fraction` of train), then val (`val_fraction` of what is
left). The result depends only on the data set's files, the SplitSpec and numpy's PCG64 stream, so training,
export and `eval` get the same images as long as they use the same SplitSpec. Training records its SplitSpec
in the checkpoint and the model's metadata (ModelMeta.split); whoever scores a model later reads it from there,
never from its own defaults.

numpy only: the runtime uses this module too.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..names import ALL, SPLITS, TEST, TRAIN, VAL

# The order in which missing splits are carved: test first, so the test images do not depend on val_fraction.
_CARVE_ORDER = (TEST, VAL)

Items = Union[np.ndarray, List[Path]]  # decoded images (Fashion-MNIST) or image files (class folders)
Part = Tuple[Items, np.ndarray]  # (items, int64 class indices)


@dataclass(frozen=True)
class SplitSpec:
    """The parameters that decide the splits a data set does not ship. The defaults are what every model made
    before the parameters were recorded used, so a file without them reads as SplitSpec()."""
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= float(v) <= 1:
                raise ValueError(f"split {name} must be a number in [0, 1], got {v!r}")
            object.__setattr__(self, name, float(v))
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"split seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> "SplitSpec":
        """Missing keys (or no dict at all: a file made before splits were recorded) take the defaults; keys
        this version does not know are ignored, so a newer file still opens."""
        d = d or {}
        return cls(**{k: d[k] for k in ("val_fraction", "test_fraction", "seed") if d.get(k) is not None})

    @classmethod
    def from_meta(cls, meta: Any) -> "SplitSpec":
        """The SplitSpec a model was trained with, from its ModelMeta (an exported file or a checkpoint)."""
        return cls.from_dict(getattr(meta, "split", None))

    def __str__(self) -> str:
        return f"val {self.val_fraction:g}, test {self.test_fraction:g}, seed {self.seed}"


DEFAULT_SPLIT = SplitSpec()


def _split_count(n: int, fraction: float) -> int:
    if fraction <= 0:
        return 0
    if fraction >= 1:
        return n
    # Half-up rounding, not Python's round-half-to-even, so the count is what a reader expects.
    k = int(math.floor(fraction * n + 0.5))
    # Leave every class in both parts when it has the samples for it.
    return min(max(k, 1), n - 1) if n >= 2 else k


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted index arrays (keep, split): each class gives round(fraction * n_c) of its samples to `split`
    (at least 1 and at most n_c - 1 when n_c >= 2), chosen by np.random.default_rng(seed), so the result
    depends only on the labels (in order), the fraction and the seed."""
    labels = np.asarray(labels)
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    keep, split = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = _split_count(len(idx), fraction)
        split.append(idx[:k])
        keep.append(idx[k:])
    return np.sort(np.concatenate(keep)).astype(np.int64), np.sort(np.concatenate(split)).astype(np.int64)


def carve(labels: np.ndarray, spec: SplitSpec, missing: Collection[str]) -> Dict[str, np.ndarray]:
    """Sorted indices into a data set's shipped training images (their `labels`) of what stays "train" and of
    each split in `missing` ("test", "val") carved out of them."""
    unknown = set(missing) - set(_CARVE_ORDER)
    if unknown:
        raise ValueError(f"only test and val can be carved out of train, not {sorted(unknown)}")
    labels = np.asarray(labels)
    rest = np.arange(len(labels), dtype=np.int64)
    out: Dict[str, np.ndarray] = {}
    for name in _CARVE_ORDER:
        if name in missing:
            fraction = spec.test_fraction if name == TEST else spec.val_fraction
            keep, part = stratified_split(labels[rest], fraction, spec.seed)
            out[name] = rest[part]
            rest = rest[keep]
    out[TRAIN] = rest
    return out


def _take(items: Items, idx: np.ndarray) -> Items:
    if isinstance(items, np.ndarray):
        return items[idx]
    return [items[i] for i in idx]


def assign(shipped: Mapping[str, Part], spec: SplitSpec = DEFAULT_SPLIT) -> Dict[str, Part]:
    """train, val and test of a data set that ships `shipped` (train at least): shipped splits as they are,
    the others carved out of train by `spec`."""
    if TRAIN not in shipped:
        raise ValueError("a data set needs a train split to carve the others from")
    items, y = shipped[TRAIN]
    y = np.asarray(y, np.int64)
    idx = carve(y, spec, [s for s in _CARVE_ORDER if s not in shipped])
    parts = {name: (_take(items, i), y[i]) for name, i in idx.items()}
    return {name: parts[name] if name in parts else shipped[name] for name in SPLITS}


@dataclass
class SplitData:
    """A data set cut into train/val/test. `splits[name]`: (items, int64 indices into `labels`); `everything`:
    all its images in the data set's own order, for `eval --split all`."""
    kind: str  # "fashion-mnist" or "folder"
    root: Path
    labels: Tuple[str, ...]
    splits: Dict[str, Part]
    spec: SplitSpec = DEFAULT_SPLIT
    everything: Optional[Part] = field(default=None, repr=False)

    def part(self, name: str) -> Part:
        """The items and labels of split `name` (train, val, test, or all)."""
        if name == ALL:
            if self.everything is not None:
                return self.everything
            return concat([self.splits[s] for s in SPLITS])
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}; choose from {', '.join(SPLITS)} or all")
        return self.splits[name]


def concat(parts: Sequence[Part]) -> Part:
    ys = np.concatenate([y for _, y in parts]).astype(np.int64)
    if all(isinstance(items, np.ndarray) for items, _ in parts):
        return np.concatenate([items for items, _ in parts]), ys
    return [p for items, _ in parts for p in items], ys


def stratified_subset(labels: np.ndarray, limit: Optional[int], seed: int = 0) -> np.ndarray:
    """Sorted indices of a stratified, seeded subset of at most `limit` items (all of them without a limit):
    what `--limit` takes from a split."""
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ValueError(f"--limit must be positive, got {limit}")
    return stratified_split(labels, limit / n, seed)[1]
