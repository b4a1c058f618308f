"""Data sets for edgefashion: Fashion-MNIST (IDX files) and photo data sets stored as class folders.

numpy, OpenCV and the standard library only (no torch), so the runtime can read data too. Importing this
package does nothing but define things: no downloads, no file system access.
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple, Union

from ..names import CLOTHING_SMALL, FASHION_MNIST, TEST, TRAIN
from .clothing import CLOTHING_SMALL_URL, ensure_clothing_small
from .common import DataError, resolve_data_root
from .download import download, download_first
from .fashion_mnist import FASHION_MNIST_DIR, FASHION_MNIST_LABELS, holds_fashion_mnist, load_fashion_mnist
from .folders import FolderDataset, load_folder_dataset, load_images, read_image
from .idx import read_idx
from .splits import DEFAULT_SPLIT, SPLITS, SplitData, SplitSpec, assign, concat, stratified_split, stratified_subset

__all__ = [
    "CLOTHING_SMALL_URL", "DEFAULT_SPLIT", "DataError", "FASHION_MNIST_LABELS", "FolderDataset", "SPLITS",
    "SplitData", "SplitSpec", "download", "download_first", "ensure_clothing_small", "load_fashion_mnist",
    "load_folder_dataset", "load_images", "load_splits", "read_idx", "read_image", "resolve_data_root",
    "resolve_dataset", "stratified_split", "stratified_subset",
]


def resolve_dataset(name_or_path: str, data_root: Path, download: bool = True) -> Tuple[str, Path]:
    """("fashion-mnist", its folder under the data root) or ("folder", a class-folder data set).

    The names "fashion-mnist" and "clothing-small" are the bundled data sets (clothing-small is downloaded
    here if missing and allowed; Fashion-MNIST by its loader). Anything else must be an existing folder,
    as given or under the data root."""
    data_root = Path(data_root)
    if name_or_path == FASHION_MNIST:
        return FASHION_MNIST, data_root / FASHION_MNIST_DIR
    if name_or_path == CLOTHING_SMALL:
        return "folder", ensure_clothing_small(data_root, download=download)
    for candidate in (Path(name_or_path).expanduser(), data_root / name_or_path):
        if candidate.is_dir():
            # Resolved, so that "." or "../x" still give the data set a name (the folder's).
            folder = candidate.resolve()
            # A folder holding the Fashion-MNIST files themselves (e.g. a copy made by hand).
            if holds_fashion_mnist(folder):
                return FASHION_MNIST, folder
            return "folder", folder
    raise DataError(f"unknown data set {name_or_path!r}: not {FASHION_MNIST!r}, {CLOTHING_SMALL!r} or an existing "
                    f"folder (also looked in {data_root})")


def load_splits(kind: str, path: Union[str, Path], spec: SplitSpec = DEFAULT_SPLIT, *,
                download: bool = False) -> SplitData:
    """The splits of a data set as `data.resolve_dataset` names it: ("fashion-mnist", its folder) or
    ("folder", a class-folder data set). Images of a folder are listed, not decoded."""
    path = Path(path)
    if kind == FASHION_MNIST:
        raw = load_fashion_mnist(path.parent if path.name == FASHION_MNIST_DIR else path, download=download)
        everything = concat([raw[TRAIN], raw[TEST]])
        return SplitData(kind, path, tuple(FASHION_MNIST_LABELS), assign(raw, spec), spec, everything)
    if kind != "folder":
        raise ValueError(f"unknown data set kind {kind!r}")
    ds = load_folder_dataset(path, spec=spec)
    return SplitData(kind, ds.root, ds.labels, ds.splits, spec)
