"""`edgefashion export`: ONNX + INT8 files that describe themselves, verified before they land."""
import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper

from conftest import REPO, run_cli
from edgefashion.cli import cli
from edgefashion.meta import MetaError, ModelMeta, fashion_mnist_meta, photo_meta
from edgefashion.runtime.classifier import Classifier, ModelError, Prediction, softmax
from edgefashion.training import export as ex
from edgefashion.training import quantize as q
from edgefashion.training.train import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, TrainConfig, fit, load_checkpoint,
                                        save_checkpoint)
from edgefashion.training.zoo import create_model, get_entry, list_models

# The cross-CPU check runs under emulation: tests that are not about it leave it out (test_cross_cpu_* run it).
FAST = dict(calib_size=32, calib_methods=("minmax",), per_channel=(True,), latency_runs=5, parity_images=256,
            cpu_check=False, log=lambda *a: None)


def _quiet(*a, **k):
    pass


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, shared_data):
    """A real cnn4 run: 1 epoch on 1,500 images per split (a few seconds on two cores)."""
    out = tmp_path_factory.mktemp("runs") / "cnn4"
    cfg = TrainConfig(model="cnn4", data="fashion-mnist", data_dir=str(shared_data), epochs=1, limit=1500,
                      batch_size=64)
    fit(cfg, out, progress=False, log=_quiet)
    return out


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "cnn4"
    report = ex.export_checkpoint(tiny_run, out, quantize="int8", max_drop=100.0,
                                  **{**FAST, "calib_size": 50, "calib_methods": ("minmax", "entropy"),
                                     "per_channel": (False, True)})
    return out, report


def _leftovers(parent: Path) -> list:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name or ".quant-" in p.name]


# --- files, metadata, report ---------------------------------------------------------------------------------

def test_export_writes_files_and_report(tiny_export):
    out, r = tiny_export
    assert sorted(p.name for p in out.iterdir()) == ["model.int8.onnx", "model.onnx", "report.json", "report.md"]
    on_disk = json.loads((out / "report.json").read_text())
    for key in ("model", "source", "opset", "fp32", "int8", "parity", "size_ratio", "accuracy_drop_pp", "cpu",
                "onnxruntime", "created"):
        assert key in on_disk, key
    for part in ("fp32", "int8"):
        for key in ("path", "size_bytes", "test_accuracy", "val_accuracy", "latency_ms_b1_t1"):
            assert key in on_disk[part], (part, key)
    i8 = on_disk["int8"]
    for key in ("format", "method", "per_channel", "reduce_range", "activation_type", "weight_type", "calib_size",
                "candidates", "reason"):
        assert key in i8, key
    # 50 calibration images: two batches of 25 (the histogram calibrators need equal batches)
    assert i8["format"] == "QDQ" and i8["calib_size"] == 50
    # every candidate measured on validation; the chosen one is the best of them
    assert len(i8["candidates"]) == 4
    # the first-block-FP32 variant of the best one was tried too, and kept only if faster at equal val accuracy
    fb = i8["first_block_fp32"]
    assert fb["tried"] and fb["nodes"][0].endswith("Conv") and fb["nodes"][-1].endswith("MaxPool")
    best = max(c["val_accuracy"] for c in i8["candidates"])
    if fb["kept"]:
        assert fb["ratio"] <= q.FIRST_BLOCK_MIN_GAIN and fb["val_accuracy"] >= best - q.FIRST_BLOCK_ACC_TOLERANCE
        assert i8["val_accuracy"] == pytest.approx(fb["val_accuracy"])
        assert i8["ort_disabled_optimizers"] == ["QDQPropagationTransformer"]
    else:
        assert i8["val_accuracy"] == pytest.approx(best)
        assert "ort_disabled_optimizers" not in i8
    # the file asks the runtime for the session it was measured with
    props = {p.key: p.value for p in onnx.load(str(out / "model.int8.onnx")).metadata_props}
    assert props.get("ort_disabled_optimizers") == ("QDQPropagationTransformer" if fb["kept"] else None)
    assert on_disk["parity"]["images"] == 256 and on_disk["parity"]["top1_agreement"] >= 0.999
    assert on_disk["size_ratio"] == pytest.approx(i8["size_bytes"] / on_disk["fp32"]["size_bytes"], abs=1e-3)
    assert on_disk["size_ratio"] < 0.4
    assert on_disk["opset"] >= 17
    assert "Parity" in (out / "report.md").read_text()
    # the folder gets the user's usual permissions (not a temp folder's 0700)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask


def test_onnx_graph_is_checked_with_dynamic_batch_and_current_opset(tiny_export):
    out, _ = tiny_export
    m = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(m, full_check=True)
    onnx.checker.check_model(onnx.load(str(out / "model.int8.onnx")))
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (outp,) = m.graph.input, m.graph.output
    assert inp.name == "input" and outp.name == "logits"
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert inp.type.tensor_type.elem_type == TensorProto.FLOAT


def test_metadata_round_trip(tiny_run, tiny_export):
    out, _ = tiny_export
    ckpt_meta = ModelMeta.from_dict(load_checkpoint(tiny_run)["meta"])
    results = json.loads((tiny_run / "results.json").read_text())
    for name in ("model.onnx", "model.int8.onnx"):
        meta = Classifier(out / name).meta
        # labels and preprocessing are the checkpoint's, unchanged
        assert meta.replace(extra={}) == ckpt_meta.replace(extra={})
        assert meta.labels == ckpt_meta.labels and meta.mean == ckpt_meta.mean and meta.domain == "fashion-mnist"
        e = meta.extra
        assert e["dataset"] == "fashion-mnist"
        assert e["val_accuracy"] == pytest.approx(results["best_val_accuracy"])
        assert e["test_accuracy"] == pytest.approx(results["test_accuracy"])
        assert e["edgefashion_version"] and e["exported"] and e["source_checkpoint"].endswith("best.pt")
    assert Classifier(out / "model.int8.onnx").meta.extra["precision"] == "int8"
    assert Classifier(out / "model.onnx").meta.extra["precision"] == "fp32"
    props = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert json.loads(props["labels"]) == list(ckpt_meta.labels)


def test_classifier_predicts_images(tiny_export, shared_data):
    out, _ = tiny_export
    clf = Classifier(out / "model.int8.onnx", threads=1)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (28, 28), dtype=np.uint8), rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)]
    preds = clf.predict_images(images, top_k=3)
    assert len(preds) == 2 and all(isinstance(p, Prediction) for p in preds)
    p = preds[0]
    assert len(p.labels) == len(p.indices) == len(p.probs) == 3
    assert list(p.probs) == sorted(p.probs, reverse=True) and 0 < sum(p.probs) <= 1.0 + 1e-6
    assert p.label == clf.labels[p.index]
    with pytest.raises(Exception):
        p.labels = ()  # immutable
    logits = clf.logits(np.zeros((5, 1, 28, 28), np.float32))
    assert logits.shape == (5, 10)
    with pytest.raises(ValueError, match="expected input"):
        clf.logits(np.zeros((1, 3, 28, 28), np.float32))
    assert clf.predict_images([]) == []


def test_softmax_is_stable():
    p = softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 1.0, 1.0]], np.float32))
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(1), 1)
    assert p[0, 0] == pytest.approx(1.0) and p[1, 0] == pytest.approx(1 / 3)


# --- refusing bad files -----------------------------------------------------------------------------------------

def test_corrupt_onnx_is_refused(tmp_path, tiny_export):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(ModelError, match="corrupt.onnx: not a valid ONNX model"):
        Classifier(bad)
    truncated = tmp_path / "truncated.onnx"
    data = (tiny_export[0] / "model.onnx").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated.onnx"):
        Classifier(truncated)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        Classifier(tmp_path / "missing.onnx")


def test_foreign_onnx_is_refused(tmp_path):
    node = helper.make_node("Relu", ["input"], ["logits"])
    graph = helper.make_graph([node], "foreign", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(foreign))
    with pytest.raises(MetaError, match="foreign.onnx: no edgefashion metadata"):
        Classifier(foreign)
    r = CliRunner().invoke(cli, ["inspect", str(foreign)])
    assert r.exit_code == 1 and "no edgefashion metadata" in r.output and "Traceback" not in r.output


def test_inspect_prints_metadata(tiny_export):
    r = CliRunner().invoke(cli, ["inspect", str(tiny_export[0] / "model.int8.onnx")])
    assert r.exit_code == 0, r.output
    assert "cnn4" in r.output and "t-shirt" in r.output.lower() and "precision: int8" in r.output


# --- checks that must fail ------------------------------------------------------------------------------------

def _perturbing_export(real):
    """export_onnx that writes a model with other weights than the one parity compares against."""
    def wrapped(model, meta, path, **kw):
        bad = copy.deepcopy(model)
        with torch.no_grad():
            last = [m for m in bad.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.weight.copy_(torch.randn_like(last.weight) * 3)
        return real(bad, meta, path, **kw)
    return wrapped


def test_parity_failure_is_detected_and_export_is_atomic(tiny_run, tmp_path, monkeypatch):
    dest = tmp_path / "exp"
    dest.mkdir()
    (dest / "model.onnx").write_bytes(b"previous export")
    monkeypatch.setattr(ex, "export_onnx", _perturbing_export(ex.export_onnx))
    with pytest.raises(ex.ExportError, match="parity failed: .* agree on top-1 for"):
        ex.export_checkpoint(tiny_run, dest, quantize="none", **FAST)
    # the existing export folder is exactly as it was, and no temporary folder is left behind
    assert [p.name for p in dest.iterdir()] == ["model.onnx"]
    assert (dest / "model.onnx").read_bytes() == b"previous export"
    assert _leftovers(tmp_path) == []


def test_parity_check_threshold():
    ex.check_parity({"images": 1000, "top1_agreement": 0.999, "max_abs_logit_diff": 0.0}, "m.onnx")
    with pytest.raises(ex.ExportError, match="m.onnx: parity failed"):
        ex.check_parity({"images": 1000, "top1_agreement": 0.998, "max_abs_logit_diff": 0.1}, "m.onnx")


def test_accuracy_guard_trips_and_allow_drop_keeps(tiny_run, tmp_path):
    dest = tmp_path / "guard"
    # max_drop -100 pp: any INT8 model "loses" more than that, so the guard must trip
    with pytest.raises(ex.ExportError, match=r"INT8 test accuracy 0\.\d+ is .* below FP32 0\.\d+ \(--max-drop -100"):
        ex.export_checkpoint(tiny_run, dest, max_drop=-100, **FAST)
    assert not dest.exists() and _leftovers(tmp_path) == []
    r = ex.export_checkpoint(tiny_run, dest, max_drop=-100, allow_drop=True, **FAST)
    assert r.accuracy_guard == "exceeded, allowed"
    assert (dest / "model.int8.onnx").is_file() and (dest / "report.json").is_file()
    # CLI: non-zero exit with the numbers on one line
    res = CliRunner().invoke(cli, ["export", str(tiny_run), "--out", str(tmp_path / "cli"), "--max-drop", "-100",
                                   "--calib-size", "32", "--calib-methods", "minmax", "--latency-runs", "5",
                                   "--no-cpu-check"])
    assert res.exit_code == 1, res.output
    err = res.output.strip().splitlines()[-1]
    assert err.startswith("Error: INT8 test accuracy") and "FP32" in err and "--allow-drop" in err


def test_successful_reexport_replaces_folder_atomically(tiny_run, tmp_path):
    dest = tmp_path / "again"
    dest.mkdir()
    (dest / "model.int8.onnx").write_text("an older export's")  # export's own file: not written this time
    (dest / "notes.txt").write_text("mine")  # the user's: kept
    ex.export_checkpoint(tiny_run, dest, quantize="none", **FAST)
    assert sorted(p.name for p in dest.iterdir()) == ["model.onnx", "notes.txt", "report.json", "report.md"]
    assert (dest / "notes.txt").read_text() == "mine"
    assert _leftovers(tmp_path) == []


def test_bad_arguments_are_refused(tiny_run, tmp_path):
    with pytest.raises(ex.ExportError, match="--quantize 'int4'"):
        ex.export_checkpoint(tiny_run, tmp_path / "x", quantize="int4")
    with pytest.raises(ex.ExportError, match="opset 17 or newer"):
        ex.export_checkpoint(tiny_run, tmp_path / "x", quantize="none", opset=13, **{**FAST, "parity_images": 8})
    assert not (tmp_path / "x").exists() and _leftovers(tmp_path) == []


# --- dynamic quantization on an untrained MLP checkpoint -------------------------------------------------------

def test_dynamic_quantization_of_an_mlp(tmp_path, shared_data):
    torch.manual_seed(0)
    meta = fashion_mnist_meta("mlp2", [f"c{i}" for i in range(10)])
    args = {"num_classes": 10, "in_chans": 1, "img_size": 28}
    model = create_model("mlp2", **args)
    ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": "mlp2", "model_args": args,
            "meta": meta.to_dict(), "config": {"data": "fashion-mnist", "data_dir": str(shared_data), "limit": 600,
                                               "seed": 0, "val_fraction": 0.2},
            "epoch": 0, "state_dict": model.state_dict()}
    save_checkpoint(tmp_path / "mlp2.pt", ckpt)
    r = ex.export_checkpoint(tmp_path / "mlp2.pt", tmp_path / "exp", quantize="dynamic", max_drop=100, **FAST)
    assert r.int8["mode"] == "dynamic" and r.size_ratio < 0.35
    ops = {n.op_type for n in onnx.load(str(tmp_path / "exp" / "model.int8.onnx")).graph.node}
    assert "MatMulInteger" in ops
    assert Classifier(tmp_path / "exp" / "model.int8.onnx").logits(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


# --- CPU detection and the settings it calls for ---------------------------------------------------------------

@pytest.mark.parametrize("flags,machine,act,rr", [
    ("fpu sse4_2 avx avx2 fma", "x86_64", "QUInt8", True),
    ("avx2 avx512f avx512bw", "x86_64", "QUInt8", True),
    ("avx2 avx512f avx512bw avx512_vnni", "x86_64", "QUInt8", False),
    ("avx2 avx_vnni", "x86_64", "QUInt8", False),
    ("fp asimd evtstrm crc32 cpuid", "aarch64", "QInt8", False),
    ("", "x86_64", "QUInt8", True),
])
def test_quantization_settings_follow_the_cpu(flags, machine, act, rr):
    key = "Features" if machine == "aarch64" else "flags"
    s = q.choose_settings(q.detect_cpu(f"processor\t: 0\n{key}\t\t: {flags}\n", machine))
    assert (s.activation_type, s.weight_type, s.reduce_range) == (act, "QInt8", rr)
    assert s.reason


# --- every zoo model exports and quantizes ---------------------------------------------------------------------

def _small_size(name: str) -> int:
    e = get_entry(name)
    if e.domain == "fashion-mnist":
        return 28
    return 67 if name == "alexnet" else 64  # alexnet's smallest input is 67 (its docstring)


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_exports_and_quantizes(name, tmp_path):
    e = get_entry(name)
    size = _small_size(name)
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_chans=e.in_chans, img_size=size).eval()
    labels = [f"c{i}" for i in range(5)]
    meta = fashion_mnist_meta(name, labels, size) if e.in_chans == 1 else photo_meta(name, labels, size)
    fp32 = tmp_path / "model.onnx"
    ex.export_onnx(model, meta, fp32)  # runs onnx.checker
    x = np.random.default_rng(0).standard_normal((6, e.in_chans, size, size)).astype(np.float32)
    p = ex.parity(model, fp32, x)
    assert p["max_abs_logit_diff"] < 1e-3, p
    settings = q.choose_settings(q.detect_cpu())
    pre = tmp_path / "pre.onnx"
    q.preprocess_for_quantization(fp32, pre)
    # The quantizer excludes nodes by name; timm's HardSwish is inlined into unnamed nodes unless we name them.
    names = [n.name for n in onnx.load(str(pre)).graph.node]
    assert all(names) and len(set(names)) == len(names)
    assert "" not in q.first_block_nodes(pre)
    int8 = tmp_path / "model.int8.onnx"
    q.quantize_static_file(pre, int8, x, settings, method="minmax", per_channel=True)
    ex.rewrite_metadata(int8, meta)  # runs onnx.checker
    clf = Classifier(int8, threads=1)
    assert clf.meta.model == name
    assert clf.logits(x[:3]).shape == (3, 5)
    assert os.path.getsize(int8) < 0.45 * os.path.getsize(fp32)


def test_first_block_fp32_file_runs_without_qdq_propagation(tiny_export, tmp_path, monkeypatch):
    """A file whose metadata names optimizers to switch off gets its session built without them, through every
    path that opens sessions (Classifier, latency, accuracy); other files get onnxruntime's full set."""
    import onnxruntime as ort

    from edgefashion.runtime import classifier as clf_mod
    out, _ = tiny_export
    meta = Classifier(out / "model.int8.onnx").meta
    marked = tmp_path / "marked.onnx"
    shutil.copyfile(out / "model.int8.onnx", marked)
    ex.rewrite_metadata(marked, meta.replace(extra={**meta.extra, "ort_disabled_optimizers": ["QDQPropagationTransformer"]}))
    plain = tmp_path / "plain.onnx"
    shutil.copyfile(out / "model.int8.onnx", plain)
    ex.rewrite_metadata(plain, meta.replace(extra={k: v for k, v in meta.extra.items() if k != "ort_disabled_optimizers"}))
    seen = []
    real = ort.InferenceSession

    def recording(path, *args, **kwargs):
        seen.append((Path(path).name, tuple(kwargs.get("disabled_optimizers") or ())))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(clf_mod.ort, "InferenceSession", recording)
    x = np.zeros((2, 1, 28, 28), np.float32)
    for path in (marked, plain):
        seen.clear()
        Classifier(path, threads=1).logits(x)
        q.measure_latency(path, (1, 1, 28, 28), runs=2, warmup=1)
        q.onnx_accuracy(path, x, np.zeros(2, np.int64))
        final = [d for name, d in seen if d] if path is marked else [d for name, d in seen]
        if path is marked:
            assert final == [("QDQPropagationTransformer",)] * 3, seen
        else:
            assert all(d == () for d in final) and len(final) == 3, seen


# --- the command, end to end ----------------------------------------------------------------------------------

def test_cli_export_end_to_end(tiny_run, tmp_path):
    out = tmp_path / "cli-export"
    args = ("export", tiny_run, "--quantize", "int8", "--out", out, "--calib-size", "64", "--calib-methods",
            "minmax", "--latency-runs", "10", "--max-drop", "100", "--no-cpu-check")
    bad = run_cli(*args, "--camera-threshold", "2", cwd=tmp_path, check=False)
    assert bad.returncode == 1 and "threshold" in bad.stderr and not out.exists()
    p = run_cli(*args, "--camera-roi", "center:0.6", "--camera-smooth", "0.8", "--camera-threshold", "0.3",
                "--camera-temperature", "2.5", "--camera-background-logit", "1.75", cwd=tmp_path)
    assert "parity" in p.stdout and "int8" in p.stdout
    for f in ("model.onnx", "model.int8.onnx"):  # the camera's defaults, in both files
        m = Classifier(out / f).meta
        assert (m.roi, m.smooth, m.threshold, m.temperature, m.background_logit) == ("center:0.6", 0.8, 0.3, 2.5, 1.75)
    assert sorted(x.name for x in out.iterdir()) == ["model.int8.onnx", "model.onnx", "report.json", "report.md"]
    r = json.loads((out / "report.json").read_text())
    assert r["int8"]["calib_size"] == 64 and r["quantize"] == "int8"
    assert r["parity"]["top1_agreement"] >= 0.999
    # Exporting into the folder again replaces what export writes and keeps what the user put there; a file
    # this export does not write (no INT8 with --quantize none) does not survive from the old one.
    (out / "COMMAND").write_text("how this model was made\n")
    run_cli("export", tiny_run, "--quantize", "none", "--out", out, "--latency-runs", "5", "--no-cpu-check",
            cwd=tmp_path)
    assert sorted(x.name for x in out.iterdir()) == ["COMMAND", "model.onnx", "report.json", "report.md"]
    assert (out / "COMMAND").read_text() == "how this model was made\n"


def test_inspect_and_classifier_run_without_torch(tiny_export):
    """The Pi side: reading and running an exported model never imports torch, timm or onnx."""
    import subprocess
    import sys
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'timm', 'onnx'):\n"
        "            raise ImportError('blocked heavy import: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np\n"
        "from edgefashion.runtime.classifier import Classifier\n"
        f"c = Classifier({str(tiny_export[0] / 'model.int8.onnx')!r}, threads=1)\n"
        "print(c.predict_images([np.zeros((40, 30, 3), np.uint8)])[0].label)\n"
        "from edgefashion.cli import cli\n"
        f"cli(['inspect', {str(tiny_export[0] / 'model.onnx')!r}], prog_name='edgefashion', standalone_mode=False)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "labels:" in p.stdout and "precision: fp32" in p.stdout


# --- export targets and the cross-CPU check ----------------------------------------------------------------------

X86 = "flags\t\t: fpu sse4_2 avx avx2 fma"


@pytest.mark.parametrize("target,act,rr,families", [
    ("portable", "QUInt8", True, ("x86-vnni", "x86-avx2", "arm64")),
    ("x86-vnni", "QUInt8", False, ("x86-vnni",)),
    ("x86-avx2", "QUInt8", True, ("x86-avx2",)),
    ("arm64", "QInt8", False, ("arm64",)),
    ("native", "QUInt8", True, ("x86-avx2",)),  # for an AVX2 CPU without VNNI
])
def test_target_settings(target, act, rr, families):
    s = q.target_settings(target, q.detect_cpu(f"processor\t: 0\n{X86}\n", "x86_64"))
    assert (s.activation_type, s.reduce_range, s.families, s.target) == (act, rr, families, target)
    assert s.reason
    with pytest.raises(q.QuantizeError, match="--target 'avx9': choose from portable"):
        q.target_settings("avx9", {})


def _fake_cpu_check(disagree_on):
    """emulate.cpu_check's report for one INT8 file: native, haswell, vnni, pi4; `disagree_on` differs."""
    def check(models, cpus, **kw):
        rows = [{"cpu": c, "family": fam, "how": "native" if c == "native" else "emulated", "images": 200,
                 "accuracy": 0.9, "agreement": 0.99 if c == disagree_on else 1.0,
                 "disagreements": 2 if c == disagree_on else 0}
                for c, fam in (("native", "x86-avx2"), ("haswell", "x86-avx2"), ("vnni", "x86-vnni"),
                               ("pi4", "arm64")) if c == "native" or c in cpus]
        return {"rows": rows}
    return check


def test_export_refuses_a_target_that_disagrees_on_a_claimed_family(tiny_run, tmp_path, monkeypatch):
    """The decision on top of the emulation (which test_cross_cpu_check_at_export runs for real)."""
    from edgefashion.runtime import emulate
    monkeypatch.setattr(emulate, "cpu_check", _fake_cpu_check("pi4"))
    dest = tmp_path / "exp"
    opts = {**FAST, "cpu_check": True, "target": "portable"}
    with pytest.raises(ex.ExportError, match=r"--target portable: .* pi4 \(arm64\): 2 of 200 differ; nothing written"):
        ex.export_checkpoint(tiny_run, dest, max_drop=100, **opts)
    assert not dest.exists() and _leftovers(tmp_path) == []
    # A family the target does not claim may differ: x86-avx2 claims only haswell's family.
    r = ex.export_checkpoint(tiny_run, dest, max_drop=100, **{**opts, "target": "x86-avx2"})
    assert r.cross_cpu["verified"] is True and r.cross_cpu["claimed_families"] == ["x86-avx2"]
    # --allow-disagreement keeps it, and the file says so.
    r = ex.export_checkpoint(tiny_run, dest, max_drop=100, allow_disagreement=True, **opts)
    cc = Classifier(dest / "model.int8.onnx").meta.extra["cross_cpu"]
    assert cc["verified"] is False and cc["accepted_disagreement"] is True
    assert cc["families"]["arm64"][0]["disagreements"] == 2


def _have_x86_qemu():
    return shutil.which("qemu-x86_64-static") is not None


@pytest.mark.skipif(not _have_x86_qemu(), reason="qemu-x86_64-static not installed (apt-get install qemu-user-static)")
def test_cross_cpu_check_at_export_and_requantizing_an_onnx_file(tiny_export, tmp_path):
    """Real emulation: the exported FP32 file quantized again for x86 without VNNI, checked under qemu -cpu
    Haswell and against the exact (VNNI) reference; the files carry no machine path."""
    src, _ = tiny_export
    dest = tmp_path / "avx2"
    p = run_cli("export", src / "model.onnx", "--out", dest, "--target", "x86-avx2", "--calib-size", "32",
                "--calib-methods", "minmax", "--latency-runs", "5", "--cpu-check-subset", "150", "--max-drop", "100")
    assert "re-quantizing the exported FP32 file" in p.stdout and "cross-CPU: native 100.00%, haswell 100.00%" in p.stdout
    r = json.loads((dest / "report.json").read_text())
    assert r["source_kind"] == "onnx" and r["source"] == "model.onnx" and r["target"] == "x86-avx2"
    assert r["parity"]["recorded_at_fp32_export"] is True
    meta = Classifier(dest / "model.int8.onnx").meta
    cc = meta.extra["cross_cpu"]
    assert cc["verified"] is True and cc["families"]["x86-avx2"][-1]["cpu"] == "haswell"
    assert meta.extra["quantization"]["target"] == "x86-avx2" and meta.extra["quantization"]["reduce_range"] is True
    assert meta.extra["requantized_from_sha256"] == __import__("hashlib").sha256((src / "model.onnx").read_bytes()).hexdigest()
    for f in ("model.onnx", "model.int8.onnx"):
        blob = json.dumps(Classifier(dest / f).meta.to_dict())
        assert "/tmp" not in blob and str(Path.home()) not in blob and "/work" not in blob, blob
    assert "Target x86-avx2" in (dest / "report.md").read_text()
    # The emulated CPUs, through the command users run.
    c = run_cli("cpu-check", dest / "model.int8.onnx", "--cpu", "haswell,vnni", "--subset", "100", "--json", "-")
    rows = {row["cpu"]: row for row in json.loads(c.stdout)["rows"]}
    assert set(rows) == {"native", "haswell", "vnni"} and all(r["disagreements"] == 0 for r in rows.values())
    assert rows["haswell"]["how"] == "emulated" and rows["haswell"]["claimed"] is True


def test_cpu_check_bad_cpu_is_one_line_error():
    p = run_cli("cpu-check", REPO / "export" / "resnet20-fashion-mnist", "--cpu", "pentium", check=False)
    assert p.returncode != 0 and "--cpu 'pentium': choose from" in p.stderr and "Traceback" not in p.stderr
