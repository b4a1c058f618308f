"""The PyTorch baseline for `edgefashion bench --baseline torch`: the model an ONNX file was exported from,
rebuilt from its source checkpoint and run eagerly in FP32, as a user of plain PyTorch would run it.

Training half (imports torch); the torch-free bench only imports this module when --baseline torch is given.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..files import sha256_file
from ..meta import ModelMeta
from ..names import REPORT_JSON
from ..reports import ExportReport, ReportError
from .checkpoints import TrainingError, load_checkpoint, model_from_checkpoint


class BaselineError(ValueError):
    """The baseline model cannot be rebuilt; the message names the ONNX file."""


def source_checkpoint(onnx_path: Path, meta: ModelMeta) -> Path:
    """The checkpoint an export came from. Files record its name and sha256, not the exporting machine's path:
    it is looked for beside the export, in the run folders next to it (../*/NAME) and in ./runs/*/, and taken
    when its sha256 matches (files from before the sha256 was recorded: the recorded path, or the name)."""
    onnx_path = Path(onnx_path)
    recorded = meta.extra.get("source_checkpoint")
    digest = meta.extra.get("source_checkpoint_sha256")
    if not recorded:
        report = onnx_path.parent / REPORT_JSON
        try:
            recorded = ExportReport.read(report).source if report.is_file() else None
        except ReportError:
            recorded = None
    if not recorded:
        raise BaselineError(f"{onnx_path}: no PyTorch baseline: its source checkpoint is not recorded")
    name = Path(str(recorded)).name
    found = [Path(str(recorded))] if Path(str(recorded)).is_absolute() else []
    for root in (onnx_path.parent, onnx_path.parent.parent, Path.cwd() / "runs"):
        found += [root / name, *sorted(root.glob(f"*/{name}"))]
    for c in found:
        if c.is_file() and (digest is None or sha256_file(c) == digest):
            return c
    raise BaselineError(f"{onnx_path}: no PyTorch baseline: its source checkpoint {name}"
                        f"{' (sha256 ' + digest[:12] + '...)' if digest else ''} is not on this machine "
                        f"(looked beside the export, in ../*/ and ./runs/*/)")


@lru_cache(maxsize=None)
def _model(ckpt_path: str) -> torch.nn.Module:
    try:
        model, _ = model_from_checkpoint(load_checkpoint(ckpt_path))
    except TrainingError as e:
        raise BaselineError(f"no PyTorch baseline: {e}") from None
    return model.eval().float()


def torch_runner(onnx_path: Path, meta: ModelMeta, threads: int) -> Callable[[np.ndarray], object]:
    """A function that runs one NCHW float32 batch through the source model in eager FP32 on `threads`
    intra-op threads. The threads are set here, once: set_num_threads inside the timed call would be timed."""
    model = _model(str(source_checkpoint(Path(onnx_path), meta).resolve()))
    torch.set_num_threads(int(threads))
    cache: dict = {}

    @torch.inference_mode()
    def run(x: np.ndarray):
        # The same array arrives every round; converting it once keeps the conversion out of the timing, as
        # onnxruntime also gets its numpy input ready-made.
        t = cache.get(id(x))
        if t is None:
            t = cache[id(x)] = torch.from_numpy(x)
        return model(t)

    return run
