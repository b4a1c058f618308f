"""Export: a checkpoint -> one self-describing ONNX file (FP32) and its INT8 twin, verified before they land.

Steps: rebuild the model from the checkpoint; torch.onnx.export; write ModelMeta (labels, preprocessing) plus
provenance into ``metadata_props``; onnx.checker; parity of PyTorch vs onnxruntime on real validation images fed
through the runtime's own preprocessing; quantize (quantize.py); accuracy of both on the test split; latency;
report.json / report.md. Everything is built in a temporary folder beside the destination and swapped in only
when every check passed, so a failed export leaves an existing export folder as it was.

Exporter: the TorchScript exporter (``dynamo=False``). It still works in torch 2.14 (with a deprecation
warning), writes one self-contained file, folds BatchNorm into the convolutions in eval mode and names the
dynamic batch axis from ``dynamic_axes``; every zoo model (including the timm ones) exports with it at opset 17.
"""
from __future__ import annotations

import datetime as _dt
import io
import os
import secrets
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .. import __version__
from ..data.splits import SplitSpec
from ..files import sha256_file
from ..meta import ORT_DISABLED_OPTIMIZERS_KEY, MetaError, ModelMeta
from ..reports import ExportReport, ReportError, TrainReport
from ..names import (CHECKPOINTS, FP32_FILE, INT8_FILE, INT8_SUFFIX, REPORT_JSON, REPORT_MD, RESULTS_JSON, TEST, TRAIN,
                     VAL)
from ..runtime.classifier import BOX_OUTPUT, GARMENT_OUTPUT
from ..runtime.preprocess import normalize
from . import qat
from . import quantize as q
from .checkpoints import load_checkpoint, model_from_checkpoint

QUANTIZE_MODES = ("int8", "dynamic", "none", "auto")
MIN_OPSET = 17
PARITY_MIN_AGREEMENT = 0.999
FP32_NAME, INT8_NAME = FP32_FILE, INT8_FILE


class ExportError(RuntimeError):
    """An export that failed a check; nothing was written to the destination."""


# --- torch -> ONNX ---------------------------------------------------------------------------------------------

def export_onnx(model: torch.nn.Module, meta: ModelMeta, path: str | Path, *, opset: int = 17,
                doc: str = "", transform: Callable | None = None) -> None:
    """Write `model` as ONNX with `meta` in metadata_props; runs onnx.checker (full check) on the result.
    `transform(model_proto)`: a change to the exported graph before it is checked and written."""
    import onnx
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: edgefashion exports opset {MIN_OPSET} or newer")
    model = model.eval().cpu()
    x = torch.zeros(1, meta.in_chans, meta.input_size, meta.input_size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice is about torch's plans, not this export.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*TorchScript.*")
        try:
            # A located model (`edgefashion locate`) has a second output, the garment's box in its view, and
            # may have a third, whether there is a garment at all.
            outputs = ["logits"]
            if _located(model):
                outputs += [BOX_OUTPUT] + ([GARMENT_OUTPUT] if getattr(model, "garment", None) is not None else [])
            torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["input"], output_names=outputs,
                              dynamic_axes={"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
                              opset_version=opset, do_constant_folding=True)
        except Exception as e:
            raise ExportError(f"torch.onnx.export of {meta.model} failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    m = onnx.load_from_string(buf.getvalue())
    if transform is not None:
        transform(m)
    set_metadata(m, meta)
    m.producer_name, m.producer_version = "edgefashion", __version__
    m.doc_string = doc or f"edgefashion {meta.model} ({meta.dataset or 'unknown data'})"
    try:
        onnx.checker.check_model(m, full_check=True)
    except Exception as e:
        raise ExportError(f"{path}: onnx.checker rejected the exported model ({str(e).splitlines()[0]})") from None
    Path(path).write_bytes(m.SerializeToString())


def set_metadata(model_proto, meta: ModelMeta) -> None:
    """Replace the model's metadata_props with `meta`'s (other keys are dropped: this meta is the truth)."""
    del model_proto.metadata_props[:]
    for k, v in meta.to_onnx_props().items():
        p = model_proto.metadata_props.add()
        p.key, p.value = k, v


def rewrite_metadata(path: str | Path, meta: ModelMeta) -> None:
    import onnx
    m = onnx.load(str(path))
    set_metadata(m, meta)
    m.producer_name, m.producer_version = "edgefashion", __version__
    onnx.checker.check_model(m)
    Path(path).write_bytes(m.SerializeToString())


# --- checks ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def torch_logits(model: torch.nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = [_logits(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])))).float().numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out)


def _located(model: torch.nn.Module | None) -> bool:
    return getattr(model, "locator", None) is not None


def has_locator(source: "Source") -> bool:
    """A garment locator in the source: its torch model's box head, or an FP32 source file's box output."""
    if source.model is not None:
        return _located(source.model)
    from ..runtime.classifier import Classifier
    return source.kind == "onnx" and Classifier(source.path, threads=1).locates


def _logits(out):
    # A located model returns (logits, box); the checks here are about the logits.
    return out[0] if isinstance(out, tuple) else out


def parity(model: torch.nn.Module, onnx_path: str | Path, x: np.ndarray) -> dict:
    """PyTorch vs onnxruntime FP32 on the same preprocessed batch: max |logit diff| and top-1 agreement."""
    if len(x) == 0:
        raise ExportError("parity needs validation images; the validation split is empty")
    a = torch_logits(model, x)
    b = q.onnx_logits(onnx_path, x)
    return {"images": int(len(x)), "max_abs_logit_diff": float(np.abs(a - b).max()),
            "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean())}


def check_parity(p: dict, path: str | Path) -> None:
    if p["top1_agreement"] < PARITY_MIN_AGREEMENT:
        raise ExportError(f"{path}: parity failed: PyTorch and onnxruntime agree on top-1 for "
                          f"{p['top1_agreement']:.2%} of {p['images']} validation images (need >= "
                          f"{PARITY_MIN_AGREEMENT:.1%}; max |logit diff| {p['max_abs_logit_diff']:.3g})")


# --- data ------------------------------------------------------------------------------------------------------

def split_arrays(split, meta: ModelMeta, n: int | None = None, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A Split's uint8 NCHW images (already through runtime `prepare`) -> the runtime's float32 input via
    `normalize`, and labels. With `n`, a seeded random subset of n images."""
    idx = np.arange(len(split))
    if n is not None and n < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), size=n, replace=False))
    xs = split.x[torch.from_numpy(idx)].cpu().permute(0, 2, 3, 1).numpy()
    return normalize(xs, meta), split.y[torch.from_numpy(idx)].cpu().numpy()


def _load_run_data(ckpt: dict, meta: ModelMeta, data_dir: str | None):
    from .datasets import load_data
    cfg = ckpt.get("config") or {}
    if not cfg.get("data"):
        raise ExportError("checkpoint records no training data set; export needs it for parity and calibration")
    # The splits the run carved, as the model's metadata records them (files from before: SplitSpec's defaults).
    return load_data(cfg["data"], data_dir or cfg.get("data_dir"), model=ckpt["model"], img_size=meta.input_size,
                     in_chans=meta.in_chans, split=SplitSpec.from_meta(meta), limit=cfg.get("limit"), device="cpu",
                     download=False)


def _run_results(src: Path) -> TrainReport | None:
    """The run's results.json beside the checkpoint, if it has one (a checkpoint copied alone has none)."""
    p = (src if src.is_dir() else src.parent) / RESULTS_JSON
    try:
        return TrainReport.read(p) if p.is_file() else None
    except ReportError:
        return None


def checkpoint_file(src: Path) -> Path:
    """The file load_checkpoint reads for `src` (a run folder means its best.pt, else last.pt)."""
    if src.is_dir():
        for name in CHECKPOINTS:
            if (src / name).is_file():
                return src / name
    return src


def default_out_dir(src: str | Path, base: str | Path = "export") -> Path:
    """export/<model>-<dataset> from the checkpoint's meta."""
    ckpt = load_checkpoint(src)
    meta = ModelMeta.from_dict(ckpt["meta"])
    data = Path(meta.dataset or (ckpt.get("config") or {}).get("data") or "data").name
    return Path(base) / f"{meta.model}-{data}"


# --- the export, as named stages ---------------------------------------------------------------------------------

@dataclass
class Source:
    """What an export starts from: a training checkpoint (a torch model to export and check for parity), or
    an already exported FP32 ONNX file (re-quantized for another target; its parity was checked when it was
    exported)."""
    kind: str  # "checkpoint" or "onnx"
    path: Path  # the checkpoint file, or the FP32 .onnx file
    meta: ModelMeta
    cfg: dict  # data, data_dir, val_fraction, seed, limit: how to load the data the run used
    run: dict  # the run's val/test accuracy, for the report
    model: torch.nn.Module | None = None
    epoch: int | None = None
    recorded: ExportReport | None = None  # the ONNX source's report.json, when there is one

    @property
    def qat(self) -> bool:
        """A quantization-aware trained checkpoint: its INT8 file comes from its own fake quantization."""
        return self.kind == "checkpoint" and qat.is_qat(self.cfg)


def onnx_source_file(src: Path) -> Path | None:
    """The FP32 ONNX file `src` names (a .onnx file, or an export folder without checkpoints), else None."""
    if src.is_file() and src.suffix == ".onnx":
        return src
    if src.is_dir() and (src / FP32_NAME).is_file() and checkpoint_file(src) == src:
        return src / FP32_NAME
    return None


def load_source(src: Path) -> Source:
    onnx_file = onnx_source_file(src)
    if onnx_file is None:
        ckpt = load_checkpoint(src)
        model, meta = model_from_checkpoint(ckpt)
        results = _run_results(src)
        return Source("checkpoint", checkpoint_file(src), meta, ckpt.get("config") or {},
                      {"val_accuracy": results and results.best_val_accuracy,
                       "test_accuracy": results and results.test_accuracy},
                      model=model, epoch=ckpt.get("epoch"))
    from ..runtime.classifier import read_meta
    if onnx_file.name.endswith(INT8_SUFFIX):
        raise ExportError(f"{onnx_file}: an INT8 file; export re-quantizes from the FP32 {FP32_NAME} beside it")
    meta = read_meta(onnx_file)
    if meta.extra.get("precision", "fp32") != "fp32":
        raise ExportError(f"{onnx_file}: its metadata says precision {meta.extra.get('precision')}, not fp32")
    if not meta.dataset:
        raise ExportError(f"{onnx_file}: its metadata names no data set; export needs it for calibration")
    spec = SplitSpec.from_meta(meta)
    cfg = {"data": meta.dataset, "seed": spec.seed}
    report_file = onnx_file.parent / REPORT_JSON
    try:
        recorded = ExportReport.read(report_file) if report_file.is_file() else None
    except ReportError as e:
        raise ExportError(str(e)) from None
    return Source("onnx", onnx_file, meta, cfg, (recorded and recorded.run) or {}, epoch=meta.extra.get("epoch"),
                  recorded=recorded)


def provenance(source: Source, created: str) -> dict:
    """What the files say about where they came from: a file name and its sha256, never a machine's path."""
    extra = {k: v for k, v in source.meta.extra.items() if k not in _DERIVED_KEYS}
    if source.kind == "checkpoint":
        extra.update(source_checkpoint=source.path.name, source_checkpoint_sha256=sha256_file(source.path),
                     val_accuracy=source.run.get("val_accuracy"), test_accuracy=source.run.get("test_accuracy"),
                     epoch=source.epoch, mflops=_mflops(source.model, source.meta))
    else:
        # Files exported before provenance was made portable held the exporting machine's absolute path.
        if extra.get("source_checkpoint"):
            extra["source_checkpoint"] = Path(str(extra["source_checkpoint"])).name
        extra.update(requantized_from=source.path.name, requantized_from_sha256=sha256_file(source.path))
    extra.update(dataset=source.meta.dataset or source.cfg.get("data"), edgefashion_version=__version__,
                 exported=created, precision="fp32")
    return extra


# Keys an INT8 file adds to its FP32 twin's metadata: dropped when an FP32 file is the source again.
_DERIVED_KEYS = ("quantization", "onnx_test_accuracy", "onnx_val_accuracy", ORT_DISABLED_OPTIMIZERS_KEY,
                 "cross_cpu", "requantized_from", "requantized_from_sha256", "own_roi_test_accuracy",
                 "photo_roi_test_accuracy")


@dataclass
class RunData:
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    calib_x: np.ndarray
    split_sizes: dict


def load_run_data(source: Source, data_dir: str | None, calib_size: int, parity_images: int,
                  log: Callable[[str], None]) -> RunData:
    log(f"loading {source.cfg.get('data')} for parity, calibration and accuracy")
    bundle = _load_run_data({"config": source.cfg, "model": source.meta.model}, source.meta, data_dir)
    n_val = len(bundle.splits[VAL])
    if source.kind == "checkpoint" and n_val < parity_images:
        log(f"warning: the validation split has {n_val} images, fewer than --parity-images {parity_images}; "
            f"parity uses all {n_val}")
    val_x, val_y = split_arrays(bundle.splits[VAL], source.meta)
    test_x, test_y = split_arrays(bundle.splits[TEST], source.meta)
    calib_x, _ = split_arrays(bundle.splits[TRAIN], source.meta, calib_size, seed=int(source.cfg.get("seed", 0)))
    return RunData(val_x, val_y, test_x, test_y, calib_x, {k: len(v) for k, v in bundle.splits.items()})


def stage_fp32(source: Source, meta: ModelMeta, fp32: Path, data: RunData, *, opset: int, parity_images: int,
               latency_runs: int, log: Callable[[str], None]) -> tuple[dict, dict]:
    """model.onnx and its checks: (the FP32 report, the parity report)."""
    if source.kind == "checkpoint":
        log(f"exporting {meta.model} to ONNX opset {opset}")
        # A QAT run's FP32 file is its float twin: the fine-tuned weights without the fake quantization.
        model = qat.float_twin(source.model) if source.qat else source.model
        export_onnx(model, meta, fp32, opset=opset)
        par = parity(model, fp32, data.val_x[:parity_images])
        log(f"parity on {par['images']} val images: top-1 agreement {par['top1_agreement']:.4%}, "
            f"max |logit diff| {par['max_abs_logit_diff']:.2e}")
        check_parity(par, fp32)
    else:
        log(f"re-quantizing the exported FP32 file {source.path}")
        shutil.copyfile(source.path, fp32)
        rewrite_metadata(fp32, meta)
        par = {**((source.recorded and source.recorded.parity) or {}), "recorded_at_fp32_export": True}
    rep = {"path": FP32_NAME, "size_bytes": fp32.stat().st_size,
           "val_accuracy": q.onnx_accuracy(fp32, data.val_x, data.val_y),
           "test_accuracy": q.onnx_accuracy(fp32, data.test_x, data.test_y)}
    lat = q.measure_latency(fp32, (1, meta.in_chans, meta.input_size, meta.input_size), runs=latency_runs)
    rep.update(latency_ms_b1_t1=lat["median_ms"], latency_p90_ms_b1_t1=lat["p90_ms"])
    return rep, par


def stage_quantize(mode: str, settings: q.QuantSettings, fp32: Path, int8: Path, meta: ModelMeta, data: RunData, *,
                   calib_methods: Sequence[str], per_channel: Sequence[bool], latency_runs: int,
                   log: Callable[[str], None], qat_model: torch.nn.Module | None = None,
                   opset: int = 17) -> tuple[dict, dict]:
    """model.int8.onnx with its metadata: (the INT8 report, the INT8 file's metadata extra). `qat_model`: a
    quantization-aware trained model, whose own fake quantization becomes the QDQ file (no calibration)."""
    if qat_model is not None and mode == "int8":
        log(f"writing the QDQ file from the quantization-aware training's fake quantization (uint8 activations, "
            f"7-bit per-channel weights: the portable target's integers; target {settings.target})")
        export_onnx(qat.for_export(qat_model), meta, int8, opset=opset,
                    transform=lambda m: log(f"  {qat.fold_weight_quantizers(m)} weights stored as int8"))
        qrep = {"mode": "static", "format": "QDQ", "method": "qat", "per_channel": True, "reduce_range": True,
                "activation_type": "QUInt8", "weight_type": "QInt8", "target": settings.target,
                "isa": settings.isa, "reason": "quantization-aware training (train --qat)"}
    else:
        log(f"quantizing ({mode}, target {settings.target}); {settings.reason}")
        qrep = (q.quantize_static_search(fp32, int8, data.calib_x, data.val_x, data.val_y, settings,
                                         methods=calib_methods, per_channel=per_channel, log=log)
                if mode == "int8" else q.quantize_dynamic_file(fp32, int8, settings))
    extra = {**meta.extra, "precision": "int8", "quantization": {k: v for k, v in qrep.items() if k != "candidates"}}
    if qrep.get(ORT_DISABLED_OPTIMIZERS_KEY):
        extra[ORT_DISABLED_OPTIMIZERS_KEY] = qrep[ORT_DISABLED_OPTIMIZERS_KEY]
    # Written before measuring: the runtime opens the file as its metadata says (optimizers switched off).
    rewrite_metadata(int8, meta.replace(extra=extra))
    rep = {"path": INT8_NAME, "val_accuracy": q.onnx_accuracy(int8, data.val_x, data.val_y),
           "test_accuracy": q.onnx_accuracy(int8, data.test_x, data.test_y)}
    lat = q.measure_latency(int8, (1, meta.in_chans, meta.input_size, meta.input_size), runs=latency_runs)
    rep.update(latency_ms_b1_t1=lat["median_ms"], latency_p90_ms_b1_t1=lat["p90_ms"], **qrep)
    extra.update(onnx_test_accuracy=rep["test_accuracy"], onnx_val_accuracy=rep["val_accuracy"])
    rewrite_metadata(int8, meta.replace(extra=extra))
    rep["size_bytes"] = int8.stat().st_size
    return rep, extra


def stage_guard(report: ExportReport, quantize: str, max_drop: float, allow_drop: bool, out_dir: Path,
                log: Callable[[str], None]) -> None:
    f, i = report.fp32, report.int8
    drop = round((f["test_accuracy"] - i["test_accuracy"]) * 100, 4)
    report.size_ratio = round(i["size_bytes"] / f["size_bytes"], 4)
    report.accuracy_drop_pp, report.max_drop_pp = drop, max_drop
    log(f"test accuracy fp32 {f['test_accuracy']:.4f}, int8 {i['test_accuracy']:.4f} (drop {drop:+.2f} pp)")
    if drop > max_drop and quantize == "auto":
        # auto does not fail on an INT8 loss: it keeps FP32 instead (_auto_keep).
        report.accuracy_guard = "exceeded, auto keeps fp32"
        return
    report.accuracy_guard = _apply_guard(
        f"INT8 test accuracy {i['test_accuracy']:.4f} is {drop:.2f} pp below FP32 {f['test_accuracy']:.4f} "
        f"(--max-drop {max_drop} pp)" if drop > max_drop else None, allow_drop, out_dir, log)


def stage_cross_cpu(int8: Path, meta: ModelMeta, extra: dict, settings: q.QuantSettings, *, subset: int,
                    data_dir: str | None, allow_disagreement: bool, out_dir: Path,
                    log: Callable[[str], None]) -> dict:
    """Run the INT8 file on every CPU family its target claims (emulated where the host is another family) and
    require the native answers, image by image; the results go into its metadata as "cross_cpu". `eval` runs it
    as users do (its photo roi); a located file whose camera roi is auto is run that way too ("camera_roi"),
    since there the box it computes decides the second view's crop."""
    from ..meta import Roi
    from ..runtime import emulate
    host = emulate.host_family()
    cpus = [emulate.FAMILY_CPU[f] for f in settings.families]
    rois = [None] + ([meta.roi] if Roi.parse(meta.roi).locates else [])
    checked, bad = {}, []
    for roi in rois:
        # An AVX2 host is itself the x86-avx2 family, but its users' CPUs are checked as they are emulated.
        try:
            r = emulate.cpu_check([str(int8)], cpus, subset=subset, data=meta.dataset, data_dir=data_dir,
                                  max_drop=1e9, log=log, roi=roi)
        except emulate.ArmError as e:
            raise ExportError(f"cross-CPU check of target {settings.target}: {e} (--no-cpu-check skips it; the "
                              f"file then says it is unverified)") from None
        rows = {row["cpu"]: row for row in r["rows"]}
        families = {}
        for row in rows.values():
            families.setdefault(row["family"], []).append(
                {k: row[k] for k in ("cpu", "how", "images", "accuracy", "agreement", "disagreements")})
        what = f"roi {roi}: " if roi else ""
        bad += [f"{what}{row['cpu']} ({row['family']}): {row['disagreements']} of {row['images']} differ"
                for row in rows.values() if row["family"] in settings.families and row["disagreements"]]
        for row in rows.values():
            log(f"  cross-CPU{' (roi ' + roi + ')' if roi else ''}: {row['cpu']:<8} {row['family']:<9} "
                f"[{row['how']}] acc {row['accuracy']:.4f}, agreement with native {row['agreement']:.2%} "
                f"({row['disagreements']} differ)")
        checked[roi] = families
    result = {"target": settings.target, "claimed_families": list(settings.families), "host_family": host,
              "split": TEST, "subset": subset, "families": checked[None], "verified": not bad,
              "accepted_disagreement": bool(bad) and allow_disagreement}
    if len(rois) > 1:
        result["camera_roi"] = {"roi": meta.roi, "families": checked[meta.roi]}
    if bad and not allow_disagreement:
        raise ExportError(f"--target {settings.target}: the INT8 file answers differently on a CPU family it "
                          f"claims: {'; '.join(bad)}; nothing written to {out_dir} (another --target, or "
                          f"--allow-disagreement to keep it with the disagreement recorded)")
    rewrite_metadata(int8, meta.replace(extra={**extra, "cross_cpu": result}))
    return result


def stage_int8(report: ExportReport, opts: "ExportOptions", settings: q.QuantSettings, tmp: Path, meta: ModelMeta,
               data: RunData, out_dir: Path, log: Callable[[str], None], source: Source) -> None:
    """Quantize, guard the accuracy, check the answers on every CPU family of the target: report.int8,
    .accuracy_guard, .cross_cpu."""
    int8 = tmp / INT8_NAME
    report.int8, extra = stage_quantize(opts.mode, settings, tmp / FP32_NAME, int8, meta, data,
                                        calib_methods=opts.calib_methods, per_channel=opts.per_channel,
                                        latency_runs=opts.latency_runs, log=log,
                                        qat_model=source.model if source.qat else None, opset=opts.opset)
    stage_guard(report, opts.quantize, opts.max_drop, opts.allow_drop, out_dir, log)
    if opts.cpu_check:
        report.cross_cpu = stage_cross_cpu(int8, meta, extra, settings, subset=opts.cpu_check_subset,
                                           data_dir=opts.data_dir, allow_disagreement=opts.allow_disagreement,
                                           out_dir=out_dir, log=log)
    else:
        report.cross_cpu = {"target": settings.target, "verified": None, "reason": "not checked (--no-cpu-check)"}
        rewrite_metadata(int8, meta.replace(extra={**extra, "cross_cpu": report.cross_cpu}))


def stage_own_roi(report: ExportReport, tmp: Path, meta: ModelMeta, source: Source, opts: "ExportOptions",
                  log: Callable[[str], None]) -> None:
    """The whole-image figures are the ones the parity and accuracy-drop checks compare (one pass, PyTorch's own
    view). A file is also run with other views: a located file with the camera's roi auto (report.own_roi,
    metadata extra.own_roi_test_accuracy), and any file whose photo default is not the whole image, as
    `predict` and `eval` run it by default (report.photo_roi, extra.photo_roi_test_accuracy, the figure `eval`
    gives). Each is scored on the test photos with the runtime's own decoding."""
    from ..meta import Roi
    if Roi.parse(meta.roi).locates and has_locator(source):
        report.own_roi = _score_roi(tmp, meta, source, opts, meta.roi, "own_roi_test_accuracy", log)
    if not Roi.parse(meta.photo_roi).is_full:
        report.photo_roi = _score_roi(tmp, meta, source, opts, meta.photo_roi, "photo_roi_test_accuracy", log)


def _score_roi(tmp: Path, meta: ModelMeta, source: Source, opts: "ExportOptions", roi: str, key_meta: str,
               log: Callable[[str], None]) -> dict:
    from ..runtime.classifier import Classifier
    from ..runtime.evaluate import evaluate
    data = meta.dataset or str(source.cfg.get("data") or "")
    spec = SplitSpec.from_meta(meta)
    out = {"roi": roi}
    for name, key in ((FP32_NAME, "fp32_test_accuracy"), (INT8_NAME, "int8_test_accuracy")):
        path = tmp / name
        if path.is_file():
            clf = Classifier(path, threads=1)
            # A run trained on a --limit subset is scored on as many test photos (a stratified pick).
            out[key] = evaluate(clf, data, "test", data_dir=opts.data_dir, roi=roi, split_spec=spec,
                                limit=source.cfg.get("limit")).accuracy
            rewrite_metadata(path, clf.meta.replace(extra={**clf.meta.extra, key_meta: out[key]}))
    log(f"test accuracy with roi {roi}: fp32 {out['fp32_test_accuracy']:.4f}"
        + (f", int8 {out['int8_test_accuracy']:.4f}" if "int8_test_accuracy" in out else ""))
    return out


# What an export folder holds that export writes; anything else in it (a COMMAND or README someone put there)
# is the user's, and a new export into the folder keeps it.
EXPORT_FILES = frozenset({FP32_NAME, INT8_NAME, REPORT_JSON, REPORT_MD})


def stage_write(report: ExportReport, tmp: Path, out_dir: Path) -> None:
    """report.json and report.md beside the files, the user's own files of the old folder copied over,
    everything synced, then the folder swapped into place."""
    report.write(tmp / REPORT_JSON)
    (tmp / REPORT_MD).write_text(report_markdown(report))
    if out_dir.is_dir():
        for f in out_dir.iterdir():
            if f.is_file() and not f.is_symlink() and f.name not in EXPORT_FILES and not (tmp / f.name).exists():
                shutil.copy2(f, tmp / f.name)
    _fsync_dir_files(tmp)
    _swap_into_place(tmp, out_dir)


@dataclass(frozen=True)
class ExportOptions:
    """export_checkpoint's keyword options (the CLI's flags), checked once before any work."""
    quantize: str = "int8"
    opset: int = 17
    calib_size: int = 300
    max_drop: float = 0.5
    allow_drop: bool = False
    data_dir: str | None = None
    parity_images: int = 256
    calib_methods: Sequence[str] = q.CALIB_METHODS
    per_channel: Sequence[bool] = (False, True)
    latency_runs: int = 200
    cpu: dict | None = None
    target: str = "portable"
    cpu_check: bool = True
    cpu_check_subset: int = 2000
    allow_disagreement: bool = False
    check_arm: bool = False
    arm_subset: int = 2000
    camera_roi: str | None = None
    camera_smooth: float | None = None
    camera_threshold: float | None = None
    camera_temperature: float | None = None
    camera_background_logit: float | str | None = None  # a number, "none" (clear it) or None (the source's)
    photo_roi: str | None = None  # predict's and eval's default (ModelMeta.photo_roi); None: the source's

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZE_MODES:
            raise ExportError(f"--quantize {self.quantize!r}: choose from {', '.join(QUANTIZE_MODES)}")
        if self.parity_images < 1:
            raise ExportError(f"--parity-images must be positive, got {self.parity_images}")
        if self.mode == "int8" and self.calib_size < 1:
            raise ExportError(f"--calib-size must be positive for int8, got {self.calib_size}")

    @property
    def mode(self) -> str:
        """The quantization that runs: auto quantizes as int8, then decides which file to keep (_auto_keep)."""
        return "int8" if self.quantize == "auto" else self.quantize

    @property
    def camera(self) -> dict:
        out = {k: v for k, v in (("roi", self.camera_roi), ("smooth", self.camera_smooth),
                                  ("threshold", self.camera_threshold),
                                  ("temperature", self.camera_temperature)) if v is not None}
        b = self.camera_background_logit
        if b is not None:
            out["background_logit"] = None if b == "none" else _number(b, "--camera-background-logit")
        if self.photo_roi is not None:
            out["photo_roi"] = self.photo_roi
        return out


def stage_meta(source: Source, opts: ExportOptions, created: str) -> ModelMeta:
    """The files' metadata: the source's, with its data set, split, provenance and the camera's defaults."""
    from ..meta import Roi
    for option, value in (("--camera-roi", opts.camera_roi), ("--photo-roi", opts.photo_roi)):
        if value is None:
            continue
        try:
            auto = Roi.parse(value).locates
        except ValueError:
            auto = False  # the replace() below names the bad value
        if auto and not has_locator(source):
            raise ExportError(f"{option} {value}: {source.path} has no garment locator (make one "
                              "with `edgefashion locate`)")
    try:  # before the data is loaded: a bad camera default fails at once
        return source.meta.replace(dataset=source.meta.dataset or str(source.cfg.get("data") or ""),
                                   split=source.meta.split or SplitSpec.from_meta(source.meta).to_dict(),
                                   extra=provenance(source, created), **opts.camera)
    except MetaError as e:
        raise ExportError(f"--camera-roi/--camera-smooth/--camera-threshold/--camera-temperature/"
                          f"--camera-background-logit/--photo-roi: {e}") from None


def _number(v, option: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ExportError(f"{option}: a number or none, got {v!r}") from None


def new_report(source: Source, meta: ModelMeta, opts: ExportOptions, settings: q.QuantSettings, host_cpu: dict,
               created: str, data: RunData, fp32_rep: dict, par: dict) -> ExportReport:
    return ExportReport(
        model=meta.model, dataset=meta.dataset, source=source.path.name,
        source_sha256=meta.extra.get("source_checkpoint_sha256") or meta.extra.get("requantized_from_sha256"),
        source_kind=source.kind, opset=opts.opset, labels=list(meta.labels), input=list(meta_shape(meta)),
        quantize=opts.quantize, target=settings.target, fp32=fp32_rep, parity=par, cpu=host_cpu,
        onnxruntime=_ort_version(), torch=torch.__version__, edgefashion=__version__, created=created,
        latency_runs=opts.latency_runs, split_sizes=data.split_sizes, run=source.run)


def export_checkpoint(src: str | Path, out_dir: str | Path | None = None, *,
                      log: Callable[[str], None] = print, **options) -> ExportReport:
    """Export `src` into `out_dir` (default export/<model>-<dataset>); returns the report (also report.json).
    `src`: a run folder or checkpoint, or an exported FP32 model.onnx (or its folder) to quantize again, e.g.
    for another --target. `options`: ExportOptions' fields. Raises ExportError when a check fails; the
    destination is then left as it was.

    quantize: "int8" static QDQ (calibration searched on the validation split), "dynamic", "none", or "auto"
    (int8 static, kept only when within max_drop and faster than FP32 on this CPU; see _auto_keep).
    target: the CPU families the INT8 answers must hold on (quantize.target_settings); with `cpu_check` they
    are verified there image by image. `cpu` overrides detect_cpu() for target "native". camera_roi /
    camera_smooth / camera_threshold / camera_temperature: the camera's defaults to record in the files
    (ModelMeta.roi, .smooth, .threshold, .temperature)."""
    opts = ExportOptions(**options)
    host_cpu = q.detect_cpu() if opts.cpu is None else opts.cpu
    settings = q.target_settings(opts.target, host_cpu)  # an unknown target fails before any work
    source = load_source(Path(src))
    out_dir = _out_dir(Path(src), source, out_dir)
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    meta = stage_meta(source, opts, created)
    data = load_run_data(source, opts.data_dir, opts.calib_size, opts.parity_images, log)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_sibling(out_dir, "tmp")
    try:
        fp32_rep, par = stage_fp32(source, meta, tmp / FP32_NAME, data, opset=opts.opset,
                                   parity_images=opts.parity_images, latency_runs=opts.latency_runs, log=log)
        report = new_report(source, meta, opts, settings, host_cpu, created, data, fp32_rep, par)
        if opts.quantize != "none":
            stage_int8(report, opts, settings, tmp, meta, data, out_dir, log, source)
        stage_own_roi(report, tmp, meta, source, opts, log)
        if opts.check_arm:
            _check_arm(report, tmp, opts, source.cfg, out_dir, log)
        if opts.quantize == "auto":
            _auto_keep(report, tmp, (1, *meta_shape(meta)), opts.latency_runs, log)
        stage_write(report, tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    report.out_dir = str(out_dir)
    log(f"wrote {out_dir}")
    return report


def _out_dir(src: Path, source: Source, out_dir: str | Path | None) -> Path:
    if out_dir is None:
        out_dir = default_out_dir(src) if source.kind == "checkpoint" else source.path.parent
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a folder")
    return out_dir


def meta_shape(meta: ModelMeta) -> tuple[int, int, int]:
    return (meta.in_chans, meta.input_size, meta.input_size)


def _check_arm(report: ExportReport, tmp: Path, opts: ExportOptions, cfg: dict, out_dir: Path,
               log: Callable[[str], None]) -> None:
    """--check-arm: the files' accuracy under emulated Raspberry Pi 4 (aarch64, Cortex-A72) onnxruntime on a
    test subset, into report.arm; the accuracy guard applies to the ARM figure too, as a Pi user gets it."""
    from ..runtime import emulate as arm
    max_drop, allow_drop = opts.max_drop, opts.allow_drop
    log(f"checking on an emulated Raspberry Pi 4 (qemu-aarch64, {opts.arm_subset} test images)")
    try:
        a = arm.export_check(tmp / FP32_NAME, tmp / INT8_NAME if opts.mode != "none" else None,
                             str(cfg.get("data")), subset=opts.arm_subset,
                             data_dir=opts.data_dir or cfg.get("data_dir"), log=log)
    except arm.ArmError as e:
        raise ExportError(f"--check-arm: {e}") from None
    report.arm = a
    if not a["fp32_agreement_ok"]:
        raise ExportError(f"--check-arm: FP32 top-1 agreement x86 vs ARM {a['fp32']['agreement']:.2%} is below "
                          f"{arm.MIN_FP32_AGREEMENT:.1%}; nothing written to {out_dir}")
    drop = a.get("int8_drop_pp")
    if drop is None:
        return
    log(f"on ARM: fp32 {a['fp32']['arm_accuracy']:.4f}, int8 {a['int8']['arm_accuracy']:.4f} (drop {drop:+.2f} pp; "
        f"int8 agrees with x86 on {a['int8']['agreement']:.2%})")
    a["accuracy_guard"] = _apply_guard(
        f"INT8 accuracy on ARM {a['int8']['arm_accuracy']:.4f} is {drop:.2f} pp below FP32 "
        f"{a['fp32']['arm_accuracy']:.4f} on {a['fp32']['images']} test images (--max-drop {max_drop} pp)"
        if drop > max_drop else None, allow_drop, out_dir, log)


def _apply_guard(loss: str | None, allow_drop: bool, out_dir: Path, log: Callable[[str], None]) -> str:
    """The accuracy guard, on x86 and on ARM alike: `loss` says what INT8 lost beyond the limit (None: within
    it). Fails the export unless --allow-drop; returns the status the report records."""
    if loss is None:
        return "passed"
    if not allow_drop:
        raise ExportError(f"{loss}; nothing written to {out_dir} (--allow-drop keeps it anyway)")
    log(f"warning: {loss}; kept because of --allow-drop")
    return "exceeded, allowed"


def _mflops(model: torch.nn.Module, meta: ModelMeta) -> float | None:
    from .zoo import model_mflops
    try:
        return round(model_mflops(model, meta.in_chans, meta.input_size), 3)
    except Exception:  # a count is a nicety; an exotic layer must not fail the export
        return None


def _auto_keep(report: ExportReport, tmp: Path, shape: tuple, runs: int, log: Callable[[str], None]) -> None:
    """--quantize auto: keep INT8 only when it is within --max-drop of FP32's accuracy AND faster on this CPU
    (batch 1, 1 thread, interleaved timing); otherwise remove model.int8.onnx, as FP32 is then the better
    file here. The decision and both latencies go into report.auto."""
    from ..runtime.bench import compare_latency
    if report.int8 is None:
        return
    c = compare_latency(tmp / FP32_NAME, tmp / INT8_NAME, shape, runs=max(runs, 50))
    drop, limit = report.accuracy_drop_pp, report.max_drop_pp
    faster = c["b_over_a"] < 1
    keep = "int8" if faster and drop <= limit else "fp32"
    why = (f"int8 {c['b_ms']:.3g} ms vs fp32 {c['a_ms']:.3g} ms (int8/fp32 {c['b_over_a']:.2f}, b1 t1 on "
           f"{(report.cpu or {}).get('machine', '?')}); accuracy drop {drop:+.2f} pp (limit {limit} pp)")
    report.auto = {"kept": keep, "fp32_ms": c["a_ms"], "int8_ms": c["b_ms"], "int8_over_fp32": c["b_over_a"],
                   "accuracy_drop_pp": drop, "max_drop_pp": limit, "batch": c["batch"], "threads": c["threads"],
                   "runs": c["runs"], "reason": why}
    log(f"auto: keeping {keep}: {why}")
    if keep == "fp32":
        (tmp / INT8_NAME).unlink()
        # What INT8 measured stays in the report, under auto, without claiming a file that is not there.
        report.auto["int8"], report.int8, report.size_ratio = report.int8, None, None


def _ort_version() -> str:
    import onnxruntime
    return onnxruntime.__version__


def _fsync_dir_files(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def _new_sibling(out_dir: Path, kind: str) -> Path:
    """A fresh hidden folder beside `out_dir` (same file system, so renames are atomic). mkdir rather than
    mkdtemp: the export folder should get the user's normal permissions, not mkdtemp's 0700."""
    while True:
        p = out_dir.parent / f".{out_dir.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            p.mkdir()
            return p
        except FileExistsError:
            continue


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Replace `out_dir` by the finished `tmp` folder with renames only (same file system, so each is atomic);
    the old folder is moved aside first and deleted only once the new one is in place."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- report.md -------------------------------------------------------------------------------------------------

def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:.2f}%"


def report_markdown(report: ExportReport) -> str:
    r = report.to_dict()  # a view of report.json: the nested checks are read as they are written
    f, i = r["fp32"], r.get("int8")
    lines = [f"# {r['model']} on {r['dataset']}: export report", "",
             f"Created {r['created']} by edgefashion {r['edgefashion']} (onnxruntime {r['onnxruntime']}, "
             f"torch {r['torch']}), opset {r['opset']}, input {'x'.join(map(str, r['input']))}.", "",
             "| | FP32 | INT8 |", "|---|---|---|"]
    row = lambda name, a, b: lines.append(f"| {name} | {a} | {b if i else '-'} |")  # noqa: E731
    row("file", f"`{f['path']}`", f"`{i['path']}`" if i else "")
    row("size", f"{f['size_bytes'] / 1024:.1f} KiB", f"{i['size_bytes'] / 1024:.1f} KiB ({r['size_ratio']:.1%})" if i else "")
    row("test accuracy", _pct(f["test_accuracy"]), _pct(i["test_accuracy"]) if i else "")
    for key, what in (("photo_roi", "`predict`'s and `eval`'s default"), ("own_roi", "the camera's")):
        own = r.get(key)
        if own:
            row(f"test accuracy, roi {own['roi']} ({what})", _pct(own["fp32_test_accuracy"]),
                _pct(own.get("int8_test_accuracy")) if i else "")
    row("val accuracy", _pct(f["val_accuracy"]), _pct(i["val_accuracy"]) if i else "")
    row("latency b1 t1 (median / p90)", f"{f['latency_ms_b1_t1']:.3f} / {f['latency_p90_ms_b1_t1']:.3f} ms",
        f"{i['latency_ms_b1_t1']:.3f} / {i['latency_p90_ms_b1_t1']:.3f} ms" if i else "")
    p = r["parity"]
    if "top1_agreement" in p:
        lines += ["", f"Parity (PyTorch vs onnxruntime FP32, {p['images']} validation images): top-1 agreement "
                  f"{p['top1_agreement']:.2%}, max |logit diff| {p['max_abs_logit_diff']:.2e}"
                  + (", recorded when the FP32 file was exported from its checkpoint." if p.get("recorded_at_fp32_export")
                     else ".")]
    if i:
        how = ("quantization-aware training (the ranges its fake quantization learned; no calibration)"
               if i.get("method") == "qat" else f"calibration {i['method']} on {i['calib_size']} training images")
        lines += ["", f"Quantization: {i['mode']} {i['format']}, {how}, per-channel {i['per_channel']}, activations "
                  f"{i['activation_type']}, weights {i['weight_type']}, reduce_range {i['reduce_range']} "
                  f"({i['reason']}).",
                  f"Accuracy drop {r['accuracy_drop_pp']:+.2f} pp (limit {r['max_drop_pp']} pp): {r['accuracy_guard']}."]
        fb = i.get("first_block_fp32") or {}
        if fb.get("tried"):
            lines += ["", f"First convolution block in FP32 (QDQ propagation off): {fb['reason']}."]
        if i.get("candidates"):
            lines += ["", f"Candidates (chosen on {i['selected_on']}):", "", "| method | per-channel | val accuracy |",
                      "|---|---|---|"]
            lines += [f"| {c['method']} | {c['per_channel']} | {_pct(c['val_accuracy'])} |" for c in i["candidates"]]
    cc = r.get("cross_cpu") or {}
    if cc.get("families"):
        lines += ["", f"Target {cc['target']}: its answers must hold on {', '.join(cc['claimed_families'])}. "
                  f"Cross-CPU check on {cc['subset']} test images at most (host: {cc['host_family']}):", "",
                  "| CPU | family | how | images | accuracy | agreement with native |", "|---|---|---|---|---|---|"]
        for fam, runs in cc["families"].items():
            lines += [f"| {x['cpu']} | {fam} | {x['how']} | {x['images']} | {_pct(x['accuracy'])} | "
                      f"{x['agreement']:.2%} ({x['disagreements']} differ) |" for x in runs]
        if cc.get("accepted_disagreement"):
            lines += ["", "The file disagrees on a claimed family and was kept with --allow-disagreement."]
    elif cc:
        lines += ["", f"Target {cc['target']}: cross-CPU check {cc.get('reason', 'not run')}."]
    if r.get("auto"):
        lines += ["", f"--quantize auto kept {r['auto']['kept']}: {r['auto']['reason']}."]
    if r.get("arm"):
        a = r["arm"]
        lines += ["", f"Emulated ARM ({a['cpu']}, onnxruntime {a['onnxruntime']}), {a['fp32']['images']} test images: "
                  f"FP32 {_pct(a['fp32']['arm_accuracy'])} (x86 agreement {a['fp32']['agreement']:.2%})"
                  + (f", INT8 {_pct(a['int8']['arm_accuracy'])} (x86 agreement {a['int8']['agreement']:.2%}; "
                     f"drop {a['int8_drop_pp']:+.2f} pp: {a.get('accuracy_guard')})" if a.get("int8") else "")
                  + ". Accuracy only: emulated timings are not a Pi's speed."]
    return "\n".join(lines) + "\n"
