"""Verified, atomic downloads: stream to a `.part` file beside the destination, check it, then rename.
A destination path therefore only ever holds a complete, verified file."""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import click

from .. import __version__
from .common import DataError, one_line

CHUNK = 1 << 20
USER_AGENT = f"edgefashion/{__version__}"


class DownloadInterrupted(DataError):
    """Ctrl-C during a download: still a DataError (one-line message, temp file gone), but mirrors must not
    be tried after it, since the user asked to stop."""


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _describe(url: str, exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"{url}: HTTP {exc.code} {one_line(exc.reason)}"
    if isinstance(exc, urllib.error.URLError):
        return f"{url}: {one_line(exc.reason)}"
    return f"{url}: {type(exc).__name__}: {one_line(exc)}"


def download(url: str, dest: Union[str, Path], *, sha256: Optional[str] = None, md5: Optional[str] = None,
             progress: bool = True, timeout: float = 60,
             verify: Optional[Callable[[Path], None]] = None) -> Path:
    """Download `url` (http, https or file) to `dest` and return `dest`.

    The checksums, when given, are of the downloaded bytes; `verify(tmp_path)` may check the content further
    (raising DataError) before the file is moved into place. Any failure removes the temporary file and
    raises DataError.
    """
    dest = Path(dest)
    tmp = part_path(dest)
    # Never fetch anything behind the user's back.
    print(f"downloading {url} -> {dest}", file=sys.stderr)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        hashers = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=timeout) as resp, open(tmp, "wb") as out:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            show = progress and total is not None
            bar_context = (click.progressbar(length=total, label=dest.name, file=sys.stderr) if show
                           else contextlib.nullcontext(None))
            with bar_context as bar:
                for chunk in iter(lambda: resp.read(CHUNK), b""):
                    out.write(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        if total is not None and tmp.stat().st_size != total:
            raise DataError(f"{url}: connection closed early: got {tmp.stat().st_size} of {total} bytes")
        for name, wanted in (("sha256", sha256), ("md5", md5)):
            got = hashers[name].hexdigest()
            if wanted is not None and got != wanted.lower():
                raise DataError(f"{url}: checksum mismatch: expected {name} {wanted.lower()}, got {got}")
        if verify is not None:
            try:
                verify(tmp)
            except DataError as e:
                raise DataError(f"{url}: {e}") from None
        os.replace(tmp, dest)
        return dest
    except KeyboardInterrupt:
        tmp.unlink(missing_ok=True)
        raise DownloadInterrupted(f"{url}: download to {dest} interrupted") from None
    except DataError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:  # network, HTTP, disk: all are "this download failed"
        tmp.unlink(missing_ok=True)
        raise DataError(f"download failed: {_describe(url, e)}") from e


def download_first(urls: Sequence[str], dest: Union[str, Path], **kwargs) -> Path:
    """Try the mirrors in order; the first that gives a verified file wins."""
    failures = []
    for url in urls:
        try:
            return download(url, dest, **kwargs)
        except DownloadInterrupted:
            raise
        except DataError as e:
            print(f"  failed: {e}", file=sys.stderr)
            failures.append(str(e))
    if not failures:
        raise DataError(f"{dest}: no download URLs given")
    raise DataError(f"could not download {Path(dest).name} from any of {len(failures)} mirror(s): "
                    + " | ".join(failures))
