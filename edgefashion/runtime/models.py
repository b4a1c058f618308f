"""Where a command finds its model when no --model is given.

Bundled models live in a model folder: ``export/`` next to the package in a checkout
(``Path(edgefashion.__file__).parents[1] / "export"``), and ``edgefashion/models/`` inside an installed package.
Each folder holds one sub-folder per exported model (what `edgefashion export` writes) and a small
``default.json`` naming the default model of each kind, relative to that folder::

    export/
      default.json                  {"photo": "mobilenetv3-small-clothing-small/model.int8.onnx",
                                     "fashion-mnist": "cnn4-fashion-mnist/model.int8.onnx"}
      mobilenetv3-small-clothing-small/model.int8.onnx
      cnn4-fashion-mnist/model.int8.onnx

Kinds are ModelMeta domains: "photo" (the camera's and predict's default) and "fashion-mnist". The first folder
with a default.json that names the kind wins. A folder without default.json is used only when it holds exactly
one ``*/model.int8.onnx`` (a fresh checkout after one `edgefashion export`); with several, the user must say
which, so we never guess between models.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import edgefashion
from edgefashion.names import INT8_FILE

DEFAULTS_FILE = "default.json"
MODEL_FILE = INT8_FILE
KINDS = ("photo", "fashion-mnist")
NO_MODEL = "no bundled model found; pass --model PATH or run `edgefashion export`"


class NoModelError(FileNotFoundError):
    """No default model could be found; the message says what to do."""


def model_dirs() -> List[Path]:
    """The folders searched for bundled models, in order: the checkout's export/, then package data."""
    pkg = Path(edgefashion.__file__).resolve().parent
    return [pkg.parents[0] / "export", pkg / "models"]


def _from_folder(folder: Path, kind: str) -> Optional[Path]:
    defaults = folder / DEFAULTS_FILE
    if defaults.is_file():
        try:
            table = json.loads(defaults.read_text())
        except (OSError, ValueError) as e:
            raise NoModelError(f"{defaults}: not a readable JSON object ({e})") from None
        if not isinstance(table, dict):
            raise NoModelError(f"{defaults}: expected a JSON object like {{\"photo\": \"name/{MODEL_FILE}\"}}")
        if kind not in table:
            return None
        path = (folder / str(table[kind])).resolve()
        if not path.is_file():
            # default.json promises a model that is not there: an install or checkout problem worth naming.
            raise NoModelError(f"{defaults}: names {table[kind]!r} for {kind!r}, but {path} does not exist")
        return path
    found = sorted(folder.glob(f"*/{MODEL_FILE}"))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in found)
        raise NoModelError(f"{folder}: several models ({names}) and no {DEFAULTS_FILE} naming the default; "
                           f"pass --model PATH")
    return None


def default_model(kind: str = "photo", dirs: Optional[Sequence[Path]] = None) -> Path:
    """Path of the bundled default model of `kind`, or NoModelError."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    for folder in (model_dirs() if dirs is None else dirs):
        folder = Path(folder)
        if folder.is_dir():
            path = _from_folder(folder, kind)
            if path is not None:
                return path
    raise NoModelError(NO_MODEL)


def resolve_model(model: Optional[str], kind: str = "photo") -> Path:
    """--model as given (it must exist), or the bundled default of `kind`."""
    if model:
        path = Path(model).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        return path
    return default_model(kind)
