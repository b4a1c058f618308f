"""What every data module shares: the error type and where data sets live on disk."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

DATA_ENV = "EDGEFASHION_DATA"
DEFAULT_DATA_ROOT = Path("~/.cache/edgefashion")


class DataError(Exception):
    """Bad input data (missing, corrupt, inconsistent, undownloadable). The message is one line that names
    the file or folder and what is wrong with it, so a CLI can show it as is."""


def resolve_data_root(data_dir: Optional[Union[str, Path]] = None) -> Path:
    """The data root: `data_dir`, else $EDGEFASHION_DATA, else ~/.cache/edgefashion."""
    # An empty string (e.g. `EDGEFASHION_DATA= cmd`) means "not set", not "the current directory".
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(DATA_ENV) or DEFAULT_DATA_ROOT
    return Path(chosen).expanduser()


def one_line(text: object) -> str:
    """Exception texts from the standard library sometimes span lines; our messages must not."""
    return " ".join(str(text).split())
