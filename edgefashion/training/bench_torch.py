"""The PyTorch baseline for `edgefashion bench --baseline torch`: the model an ONNX file was exported from,
rebuilt from its source checkpoint and run eagerly in FP32, as a user of plain PyTorch would run it.

Training half (imports torch); the torch-free bench only imports this module when --baseline torch is given.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..meta import ModelMeta
from .train import TrainingError, load_checkpoint, model_from_checkpoint


class BaselineError(ValueError):
    """The baseline model cannot be rebuilt; the message names the ONNX file."""


def source_checkpoint(onnx_path: Path, meta: ModelMeta) -> Path:
    """The checkpoint an export came from: the file's metadata, else report.json beside it."""
    candidates = [meta.extra.get("source_checkpoint")]
    report = Path(onnx_path).parent / "report.json"
    if report.is_file():
        try:
            candidates.append(json.loads(report.read_text()).get("source"))
        except (OSError, ValueError):
            pass
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    named = next((c for c in candidates if c), None)
    raise BaselineError(f"{onnx_path}: no PyTorch baseline: its source checkpoint "
                        f"{'(' + named + ') is not on this machine' if named else 'is not recorded'}")


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
