"""clothing-small: Alexey Grigorev's 10-class subset of the Clothing Dataset (CC0), 3,781 photos split into
train/validation/test folders of one folder per class."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Optional

from ..files import sha256_file
from ..names import CLOTHING_SMALL
from .common import DataError, one_line
# Imported under another name: `download` is this module's on/off parameter.
from .download import download as fetch_url

CLOTHING_SMALL_URL = "https://github.com/alexeygrigorev/clothing-dataset-small/archive/refs/heads/master.zip"
CLOTHING_SMALL_DIR = CLOTHING_SMALL


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract after checking every member stays inside `dest` (no absolute paths, no `..`)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                posix = PurePosixPath(name.replace("\\", "/"))
                if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
                    raise DataError(f"{archive}: unsafe path in archive: {name!r}")
            zf.extractall(dest)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise DataError(f"{archive}: not a valid zip archive ({one_line(e)})") from None


def _find_split_root(top: Path) -> Optional[Path]:
    """The folder holding train/ in the extracted tree (GitHub puts it in `<repo>-<branch>/`)."""
    for dirpath, dirnames, _ in os.walk(top):
        if "train" in dirnames:
            return Path(dirpath)
        if len(Path(dirpath).relative_to(top).parts) >= 3:
            dirnames.clear()
    return None


def ensure_clothing_small(root: Path, download: bool = True, url: Optional[str] = None) -> Path:
    """`root/clothing-small`, downloaded and extracted first if it has no train/ folder."""
    root = Path(root)
    target = root / CLOTHING_SMALL_DIR
    if (target / "train").is_dir():
        return target
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DataError(f"{target}: exists but has no train/ folder; remove it to download clothing-small again")
    if not download:
        raise DataError(f"clothing-small not found: {target} has no train/ folder; "
                        "run `edgefashion data download clothing-small` or allow downloads")
    url = url or CLOTHING_SMALL_URL
    try:
        _install(url, root, target)
    except OSError as e:  # disk full, permissions: the user's to fix, so one line as well
        raise DataError(f"{target}: cannot install clothing-small ({one_line(e)})") from None
    return target


def _install(url: str, root: Path, target: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "clothing-dataset-small.zip"
    work = Path(tempfile.mkdtemp(prefix=".clothing-small-", dir=root))
    try:
        # GitHub publishes no checksum for a branch archive (and regenerates it at will), so there is nothing
        # to verify against; the hash is printed so that a run can be compared with another.
        fetch_url(url, archive)
        print(f"sha256 {sha256_file(archive)} {url} (no published checksum to compare with)", file=sys.stderr)
        _safe_extract(archive, work)
        found = _find_split_root(work)
        if found is None:
            raise DataError(f"{url}: the archive has no train/ folder; is it clothing-dataset-small?")
        # Same file system (both inside root), so the data set appears in one step, complete or not at all.
        if target.is_dir():
            target.rmdir()  # empty, checked above; os.replace cannot replace a directory on every OS
        os.replace(found, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        archive.unlink(missing_ok=True)
