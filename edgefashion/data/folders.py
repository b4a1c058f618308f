"""Photo data sets stored as one folder of images per class, split into train/validation/test folders or not.

This is the layout of clothing-small and of most clothing data sets (the Carousell "Clothes Dataset" too).
Splits that the data set does not ship are carved out of its training images by splits.py, stratified and
seeded, so every machine gets the same split for the same SplitSpec.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .common import DataError, one_line
from .splits import SplitSpec, assign

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
# Folder names that are never classes: macOS resource forks that zip files made on a Mac carry along.
_NOT_CLASSES = frozenset({"__MACOSX"})
_SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val"), "test": ("test",)}

PathLike = Union[str, Path]
Split = Tuple[List[Path], np.ndarray]


@dataclass
class FolderDataset:
    """`labels`: sorted class names; `splits["train" | "val" | "test"]`: (image paths, int64 label indices)."""
    root: Path
    labels: Tuple[str, ...]
    splits: Dict[str, Split]


def _subfolders(folder: Path) -> List[Path]:
    with os.scandir(folder) as it:
        dirs = [Path(e.path) for e in it
                if e.is_dir() and not e.name.startswith(".") and e.name not in _NOT_CLASSES]
    return sorted(dirs, key=lambda p: p.name)


def _image_files(folder: Path) -> List[Path]:
    with os.scandir(folder) as it:
        files = [Path(e.path) for e in it
                 if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
                 and e.is_file()]
    return sorted(files, key=lambda p: p.name)


def find_splits(root: PathLike) -> Dict[str, Path]:
    """{"train": ..., "val": ..., "test": ...} for the split folders that `root` has (val may be called
    validation/ or val/, any case), or {} if it has no train/ folder, i.e. is not split."""
    root = Path(root)
    if not root.is_dir():
        return {}
    by_name = {p.name.lower(): p for p in _subfolders(root)}
    if "train" not in by_name:
        return {}
    splits: Dict[str, Path] = {}
    for key, names in _SPLIT_NAMES.items():
        found = [by_name[n] for n in names if n in by_name]
        if len(found) > 1:
            raise DataError(f"{root}: both {found[0].name}/ and {found[1].name}/ present; keep one of them")
        if found:
            splits[key] = found[0]
    return splits


def list_class_folder(folder: PathLike) -> Dict[str, List[Path]]:
    """Class name -> sorted image paths, for a folder holding one subfolder of images per class. Files that
    are not images by extension, and hidden files, are ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    classes: Dict[str, List[Path]] = {}
    for sub in _subfolders(folder):
        files = _image_files(sub)
        if not files:
            raise DataError(f"{sub}: empty class folder: no {'/'.join(sorted(IMAGE_EXTENSIONS))} images in it")
        classes[sub.name] = files
    if not classes:
        raise DataError(f"{folder}: no class folders found (expected one subfolder of images per class)")
    return classes


def _unwrap(root: Path) -> Path:
    """Archives usually extract to one top folder (e.g. Clothes_Dataset/<class>/...): step into it when it
    is the only thing there and it holds folders itself."""
    for _ in range(3):
        if find_splits(root):
            return root
        subs = _subfolders(root)
        if len(subs) != 1 or _image_files(root) or not _subfolders(subs[0]):
            return root
        root = subs[0]
    return root


def _flatten(classes: Dict[str, List[Path]], labels: Sequence[str]) -> Split:
    paths: List[Path] = []
    ys: List[int] = []
    for i, name in enumerate(labels):
        paths += classes[name]
        ys += [i] * len(classes[name])
    return paths, np.asarray(ys, np.int64)


def load_folder_dataset(root: PathLike, spec: Optional[SplitSpec] = None, *, val_fraction: float = 0.2,
                        test_fraction: float = 0.2, seed: int = 0) -> FolderDataset:
    """Index (not decode) a class-folder data set. Shipped splits are used as they are; the missing ones are
    carved out of train as `spec` says (splits.py), else as the loose val_fraction/test_fraction/seed say."""
    if spec is None:
        spec = SplitSpec(val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    base = _unwrap(root)
    folders = find_splits(base)
    if folders:
        per_split = {key: list_class_folder(folder) for key, folder in folders.items()}
        labels = tuple(sorted(per_split["train"]))
        for key, classes in per_split.items():
            if set(classes) != set(labels):
                missing = sorted(set(labels) - set(classes))
                extra = sorted(set(classes) - set(labels))
                raise DataError(f"{folders[key]}: class folders differ from {folders['train']}: "
                                f"missing {missing or 'none'}, extra {extra or 'none'}")
        splits = {key: _flatten(classes, labels) for key, classes in per_split.items()}
    else:
        classes = list_class_folder(base)
        labels = tuple(sorted(classes))
        splits = {"train": _flatten(classes, labels)}
    if len(labels) < 2:
        raise DataError(f"{base}: only one class folder ({labels[0]}); a classifier needs at least two")
    return FolderDataset(base, labels, assign(splits, spec))


def read_image(path: PathLike) -> np.ndarray:
    """Decode an image file as 3-channel BGR uint8 (greyscale and alpha images converted)."""
    import cv2  # imported here so that indexing data sets and `import edgefashion.data` stay light

    path = Path(path)
    try:
        # cv2.imread cannot open non-ASCII paths on Windows; numpy's reader can.
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({one_line(e.strerror or e)})") from None
    if buf.size == 0:
        raise DataError(f"{path}: empty file, not an image")
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error:
        img = None
    if img is None:
        raise DataError(f"{path}: not a readable image (corrupt or unsupported format)")
    return img


def _describe_files(bad: List[Path]) -> Tuple[str, str]:
    """(common folder, up to three names in it) for a one-line message about some files."""
    try:
        folder = os.path.commonpath([str(p.parent) for p in bad])
        names = [os.path.relpath(p, folder) for p in bad[:3]]
    except ValueError:  # a mix of relative and absolute paths
        folder, names = ".", [str(p) for p in bad[:3]]
    return folder, ", ".join(names) + (", ..." if len(bad) > 3 else "")


def load_images(paths: Sequence[PathLike], prepare: Callable[[np.ndarray], np.ndarray],
                workers: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Decode and `prepare` every file in threads (OpenCV releases the GIL). Returns the stacked uint8
    outputs and the indices into `paths` that they come from; unreadable files are skipped with one
    warning that counts them."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("load_images: no image files given")

    def decode(path: Path) -> Optional[np.ndarray]:
        try:
            img = read_image(path)
        except DataError:
            return None
        return np.asarray(prepare(img))

    out: Optional[np.ndarray] = None
    kept: List[int] = []
    bad: List[Path] = []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for i, (path, x) in enumerate(zip(paths, pool.map(decode, paths))):
            if x is None:
                bad.append(path)
                continue
            if out is None:
                # Filled in place: no list of arrays plus a stacked copy at the peak.
                out = np.empty((len(paths),) + x.shape, np.uint8)
            if x.shape != out.shape[1:] or x.dtype != np.uint8:
                raise ValueError(f"prepare() returned {x.dtype} {x.shape} for {path}, "
                                 f"expected uint8 {out.shape[1:]} as for the first image")
            out[len(kept)] = x
            kept.append(i)
    if out is None:
        folder, names = _describe_files(bad)
        raise DataError(f"{folder}: none of the {len(bad)} images could be read ({names})")
    if bad:
        folder, names = _describe_files(bad)
        noun = "image" if len(bad) == 1 else "images"
        warnings.warn(f"skipped {len(bad)} unreadable {noun} in {folder} ({names})", stacklevel=2)
        out = out[:len(kept)].copy()
    return out, np.asarray(kept, np.int64)
