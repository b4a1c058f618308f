"""The reports the commands write, as typed records: `train`'s results.json, `export`'s report.json, `bench`'s
JSON (eval's is runtime.evaluate.EvalResult).

Each file is written by one module and read by others (`reproduce` reads a run's results and its export's report,
`export` a run's results and a re-quantized file's report, `bench --baseline torch` an export's source), so its
keys are defined once, here. Nested parts (a file's accuracy and latency, the parity and cross-CPU checks) stay
plain dicts: their keys belong to the stage that measures them. A file written by another version keeps the keys
this one does not know (`extra`), so reading and writing it again loses nothing. Standard library only: the runtime
reads these too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Optional, Type, TypeVar

from .files import atomic_write_text

R = TypeVar("R", bound="Report")


_REQUIRED: Any = object()  # a marker default: the field must be in the file (fields after `extra` need a default)


def _req() -> Any:
    return field(default=_REQUIRED)


class ReportError(ValueError):
    """A report file that cannot be read, or is not a report of the kind asked for."""


@dataclass
class Report:
    KIND: ClassVar[str] = "report"  # what a file of this kind is called in an error
    OMIT_NONE: ClassVar[tuple] = ()  # fields left out of the file while unset (a part not made), rather than null
    extra: dict = field(default_factory=dict, repr=False)  # keys this version does not define

    def __post_init__(self) -> None:
        unset = [f.name for f in fields(self) if getattr(self, f.name) is _REQUIRED]
        if unset:
            raise TypeError(f"{type(self).__name__}: missing {', '.join(unset)}")

    def to_dict(self) -> dict:
        """The JSON object: every field, except those in OMIT_NONE that are None."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "extra" or (v is None and f.name in self.OMIT_NONE):
                continue
            out[f.name] = v
        out.update(self.extra)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write(self, path: str | Path) -> Path:
        atomic_write_text(Path(path), self.to_json())
        return Path(path)

    @classmethod
    def from_dict(cls: Type[R], d: dict, where: str = "a report") -> R:
        if not isinstance(d, dict):
            raise ReportError(f"{where}: not a JSON object")
        names = {f.name for f in fields(cls)} - {"extra"}
        required = [f.name for f in fields(cls) if f.default is _REQUIRED]
        missing = [k for k in required if k not in d]
        if missing:
            raise ReportError(f"{where}: not a {cls.KIND}: no {', '.join(missing)}")
        return cls(**{k: v for k, v in d.items() if k in names},
                   extra={k: v for k, v in d.items() if k not in names and k != "extra"})

    @classmethod
    def read(cls: Type[R], path: str | Path) -> R:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ReportError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ReportError(f"{path}: not readable as JSON ({e})") from None
        return cls.from_dict(d, str(path))


@dataclass
class TrainReport(Report):
    """results.json of a run folder: the best epoch scored on the test split, and how the run went."""
    KIND = "training run's results.json"
    model: str = _req()
    data: str = _req()
    labels: list = _req()
    params: int = _req()
    img_size: int = _req()
    in_chans: int = _req()
    test_accuracy: float = _req()
    test_loss: float = _req()
    test_images: int = _req()
    per_class_accuracy: dict = _req()
    confusion_matrix: list = _req()
    train_accuracy: float = _req()
    best_val_accuracy: float = _req()
    best_epoch: int = _req()
    epochs_run: int = _req()
    stop_reason: str = _req()
    train_seconds: float = _req()
    device: Optional[str] = None
    world_size: Optional[int] = None
    split_sizes: Optional[dict] = None
    source: Optional[str] = None  # the zoo entry's source (which report's model it is)
    edgefashion: Optional[str] = None
    torch: Optional[str] = None
    python: Optional[str] = None


@dataclass
class ExportReport(Report):
    """report.json of a model folder: the FP32 and INT8 files' accuracy, latency and size, and every check's
    outcome (parity, accuracy guard, cross-CPU, ARM, --quantize auto's decision)."""
    KIND = "model folder's report.json"
    OMIT_NONE = ("int8", "size_ratio", "accuracy_drop_pp", "max_drop_pp", "accuracy_guard", "cross_cpu", "arm",
                 "auto", "own_roi", "photo_roi", "out_dir")
    model: str = _req()
    dataset: str = _req()
    source: str = _req()  # the checkpoint's (or re-quantized FP32 file's) name, never a machine's path
    source_kind: str = _req()  # "checkpoint" or "onnx"
    labels: list = _req()
    input: list = _req()  # [C, H, W]
    quantize: str = _req()
    fp32: dict = _req()
    parity: dict = _req()
    created: str = _req()
    source_sha256: Optional[str] = None
    opset: Optional[int] = None
    target: Optional[str] = None
    cpu: Optional[dict] = None
    onnxruntime: Optional[str] = None
    torch: Optional[str] = None
    edgefashion: Optional[str] = None
    latency_runs: Optional[int] = None
    split_sizes: Optional[dict] = None
    run: Optional[dict] = None  # the run's val/test accuracy
    int8: Optional[dict] = None
    size_ratio: Optional[float] = None
    accuracy_drop_pp: Optional[float] = None
    max_drop_pp: Optional[float] = None
    accuracy_guard: Optional[str] = None
    cross_cpu: Optional[dict] = None
    arm: Optional[dict] = None
    auto: Optional[dict] = None
    # A located file whose roi is auto: its test accuracy as the runtime runs it with that roi (two views per
    # photo), beside the whole-image figures above that every check compares.
    own_roi: Optional[dict] = None
    # A file whose photo default (predict's and eval's) is not the whole image: its test accuracy so.
    photo_roi: Optional[dict] = None
    out_dir: Optional[str] = None  # where it was written (returned to the caller; not in the file)


@dataclass
class BenchReport(Report):
    """`edgefashion bench`'s JSON: the machine, the settings, and each model file's latency rows."""
    KIND = "bench results file"
    OMIT_NONE = ("files",)
    schema: int = _req()
    created: str = _req()
    host: str = _req()
    cpu: dict = _req()
    settings: dict = _req()
    models: list = _req()  # runtime.bench.ModelFile.to_dict() of each file
    edgefashion: Optional[str] = None
    onnxruntime: Optional[str] = None
    python: Optional[str] = None
    torch: Optional[str] = None
    peak_rss_mb: Optional[float] = None
    recommendations: list = field(default_factory=list)
    files: Optional[dict] = None  # where this report and its plot were written
