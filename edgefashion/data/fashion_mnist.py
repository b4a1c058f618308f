"""Zalando's Fashion-MNIST (MIT licence): 60,000 + 10,000 greyscale 28x28 images in IDX files."""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..names import FASHION_MNIST, TEST, TRAIN
from .common import DataError
from .download import download_first
from .idx import GZIP_MAGIC, _gunzip, read_idx

FASHION_MNIST_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

FASHION_MNIST_DIR = FASHION_MNIST
FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)

# (images, labels) file names per split, as published (with .gz).
FASHION_MNIST_FILES = {
    TRAIN: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    TEST: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_COUNTS = {TRAIN: 60000, TEST: 10000}

# sha256 of each file's DECOMPRESSED bytes (the raw IDX file). This is what downloads are checked against:
# mirrors and caches re-compress the files, which changes the .gz bytes but never the content.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
# md5 of the official .gz files, as Zalando publishes them. For reference only: a re-compressed copy of the
# same data has another md5, so they are not used for verification.
FASHION_MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


def _content_sha256(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith(GZIP_MAGIC):
        raw, complete = _gunzip(raw, path)
        if not complete:
            raise DataError(f"{path}: truncated gzip file")
    return hashlib.sha256(raw).hexdigest()


def _verifier(name: str):
    def verify(tmp: Path) -> None:
        got, wanted = _content_sha256(tmp), FASHION_MNIST_SHA256[name]
        if got != wanted:
            raise DataError(f"checksum mismatch of the decompressed {name}: expected sha256 {wanted}, got {got}")
    return verify


def _find(folder: Path, name: str) -> Optional[Path]:
    """The file as published (`X.gz`) or decompressed (`X`); the raw one loads faster."""
    for candidate in (folder / name[:-3], folder / name):
        if candidate.is_file():
            return candidate
    return None


def holds_fashion_mnist(folder: Path) -> bool:
    """Whether `folder` itself holds the Fashion-MNIST files (at least the training images)."""
    return _find(Path(folder), FASHION_MNIST_FILES["train"][0]) is not None


def _fetch_missing(folder: Path, download: bool, mirrors: Optional[Sequence[str]]) -> Dict[str, Path]:
    paths: Dict[str, Path] = {}
    missing = []
    for names in FASHION_MNIST_FILES.values():
        for name in names:
            found = _find(folder, name)
            if found is None:
                missing.append(name)
            else:
                paths[name] = found
    if missing and not download:
        raise DataError(f"Fashion-MNIST not found: {folder} lacks {', '.join(missing)} (or their ungzipped "
                        "versions); run `edgefashion data download fashion-mnist` or allow downloads")
    bases = list(mirrors) if mirrors is not None else list(FASHION_MNIST_MIRRORS)
    for name in missing:
        urls = [base.rstrip("/") + "/" + name for base in bases]
        paths[name] = download_first(urls, folder / name, verify=_verifier(name))
    return paths


def _check_split(split: str, images: np.ndarray, labels: np.ndarray, img_path: Path, lab_path: Path) -> None:
    n = FASHION_MNIST_COUNTS[split]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{img_path}: expected uint8 images of 28x28, got {images.dtype} of shape {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{lab_path}: expected a 1-D uint8 label array, got {labels.dtype} {labels.shape}")
    if len(images) != n:
        raise DataError(f"{img_path}: expected {n} {split} images, found {len(images)}")
    if len(labels) != n:
        raise DataError(f"{lab_path}: expected {n} {split} labels, found {len(labels)}")
    if labels.size and labels.max() > 9:
        raise DataError(f"{lab_path}: labels must be 0..9, found {int(labels.max())}")


def load_fashion_mnist(root: Path, download: bool = True,
                       mirrors: Optional[Sequence[str]] = None) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """{"train": (images, labels), "test": (images, labels)}: uint8 (N, 28, 28) and int64 (N,), from
    `root/fashion-mnist` (downloaded there first if missing and `download`). `mirrors` are base URLs."""
    root = Path(root)
    # Also accept the fashion-mnist folder itself, as users often point at it.
    folder = root if holds_fashion_mnist(root) else root / FASHION_MNIST_DIR
    paths = _fetch_missing(folder, download, mirrors)
    # zlib releases the GIL, so the two large files decompress in parallel.
    with ThreadPoolExecutor(max_workers=4) as pool:
        arrays = dict(zip(paths, pool.map(read_idx, paths.values())))
    out = {}
    for split, (img_name, lab_name) in FASHION_MNIST_FILES.items():
        images, labels = arrays[img_name], arrays[lab_name]
        _check_split(split, images, labels, paths[img_name], paths[lab_name])
        out[split] = (images, labels.astype(np.int64))
    return out


def fashion_mnist_sha256_report(folder: Path) -> Dict[str, str]:
    """Decompressed sha256 of each file in `folder`, to check a copy by hand."""
    return {name: _content_sha256(p) for name in FASHION_MNIST_SHA256
            if (p := _find(Path(folder), name)) is not None}

