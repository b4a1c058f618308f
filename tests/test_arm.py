"""edgefashion arm-check: the pieces without qemu, and one real run under aarch64 emulation.

The emulated run needs the cached aarch64 Python + wheels (about 90 MB of downloads, ~10 s to build on a fast
link) plus qemu-user-static: it runs when that cache already exists, or when EDGEFASHION_ARM_TESTS=1 asks to
build it; otherwise it is skipped with the reason, so a fresh CI machine never downloads behind its back.
"""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import REPO, data_root, run_cli
from edgefashion.runtime import emulate as arm


# --- the emulated board ---

def test_pi4_cpuinfo_is_a_cortex_a72_without_dot_product():
    t = arm.cpuinfo_text("pi4")
    assert t.count("CPU part\t: 0xd08") == 4 and t.count("processor\t:") == 4
    assert "CPU implementer\t: 0x41" in t and "Raspberry Pi 4 Model B" in t and "BCM2711" in t
    assert "asimddp" not in t and "Features\t: fp asimd" in t
    assert arm.BOARDS["pi4"]["qemu_cpu"] == "cortex-a72"


def test_pi5_cpuinfo_is_a_cortex_a76_with_dot_product():
    t = arm.cpuinfo_text("pi5")
    assert "CPU part\t: 0xd0b" in t and "asimddp" in t and "Raspberry Pi 5" in t
    assert arm.BOARDS["pi5"]["qemu_cpu"] == "cortex-a76"


def test_unknown_board_is_one_line_error():
    with pytest.raises(arm.ArmError, match="--board 'pi3': choose from pi4, pi5"):
        arm.cpuinfo_text("pi3")


# --- command construction ---

ENV = {"root": "/c/py311-k", "sysroot": "/c/py311-k/sysroot", "site": "/c/py311-k/site", "qemu": "/usr/bin/qemu",
       "unshare": "/usr/bin/unshare", "python": "/c/py311-k/sysroot/usr/bin/python3.11"}


def test_emulated_command_binds_cpuinfo_and_pins_the_core(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    c = arm.emulated_command(ENV, ["-m", "edgefashion", "eval"], "pi4")
    assert c[:2] == ["/usr/bin/unshare", "-m"]
    assert c[2:4] == ["sh", "-c"] and 'mount --bind "$0" /proc/cpuinfo && exec "$@"' == c[4]
    assert c[5] == "/c/py311-k/cpuinfo-pi4"
    assert c[6:12] == ["/usr/bin/qemu", "-cpu", "cortex-a72", "-L", "/c/py311-k/sysroot", ENV["python"]]
    assert c[12:] == ["-s", "-m", "edgefashion", "eval"]
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # not root: a user namespace allows the bind mount
    assert arm.emulated_command(ENV, ["-c", "1"], "pi5")[:3] == ["/usr/bin/unshare", "-r", "-m"]
    assert "cortex-a76" in arm.emulated_command(ENV, ["-c", "1"], "pi5")


def test_emulated_env_puts_the_arm_wheels_first_and_drops_the_host_venv(tmp_path, monkeypatch):
    env = {**ENV, "root": str(tmp_path)}
    monkeypatch.setenv("VIRTUAL_ENV", "/x86/venv")
    monkeypatch.setenv("PYTHONHOME", "/x86")
    e = arm.emulated_env(env)
    parts = e["PYTHONPATH"].split(os.pathsep)
    assert parts[0] == ENV["site"] and parts[1] == str(tmp_path / "pkg")
    assert (tmp_path / "pkg" / "edgefashion").resolve() == arm.PACKAGE_DIR  # only this package, no x86 numpy
    assert "VIRTUAL_ENV" not in e and "PYTHONHOME" not in e


def test_eval_args_ask_for_predictions_on_a_fixed_subset(tmp_path):
    a = arm.eval_args(tmp_path / "m.onnx", "fashion-mnist", 50, tmp_path / "p.json", data_dir="/d", threads=1)
    assert a[:3] == ["-m", "edgefashion", "eval"]
    for k, v in (("--limit", "50"), ("--split", "test"), ("--predictions", str(tmp_path / "p.json")),
                 ("--data-dir", "/d"), ("--threads", "1")):
        assert a[a.index(k) + 1] == v


def test_private_apt_config_touches_nothing_of_the_system(tmp_path):
    o = arm.apt_options(tmp_path)
    pairs = [o[i + 1] for i in range(0, len(o), 2)]
    assert all(o[i] == "-o" for i in range(0, len(o), 2))
    assert "APT::Architecture=arm64" in pairs and "Dir::State::status=/dev/null" in pairs
    assert f"Dir::State::Lists={tmp_path / 'lists'}" in pairs and f"Dir::Cache={tmp_path / 'cache'}" in pairs


def test_wheels_pin_the_hosts_numpy_and_onnxruntime():
    s = arm.wheel_specs({"numpy": "2.4.6", "onnxruntime": "1.32.0", "opencv-python-headless": None, "click": "8"})
    assert s == ["numpy==2.4.6", "onnxruntime==1.32.0", "opencv-python-headless", "click"]
    assert arm.setup_key(s) != arm.setup_key(["numpy==2.4.5", *s[1:]])


def test_missing_qemu_names_the_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda t: None if t == "qemu-aarch64-static" else f"/usr/bin/{t}")
    with pytest.raises(arm.ArmError, match="^qemu-aarch64-static not found: apt-get install qemu-user-static$"):
        arm.check_tools()


def test_model_files_expand_an_export_folder(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    (tmp_path / "model.int8.onnx").write_bytes(b"x")
    fs = arm.model_files([str(tmp_path)])
    assert [f.name for f in fs] == ["model.onnx", "model.int8.onnx"]
    assert [arm.precision_of(f) for f in fs] == ["fp32", "int8"]
    with pytest.raises(arm.ArmError, match="no such model file"):
        arm.model_files([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(arm.ArmError, match="no model.onnx or model.int8.onnx"):
        arm.model_files([str(tmp_path / "empty")])


# --- comparison and guard, on synthetic predictions ---

def _side(pred, truth):
    return {"predicted": list(pred), "truth": list(truth), "accuracy": float(np.mean(np.equal(pred, truth)))}


def test_check_and_cpu_check_assemble_their_reports_without_qemu(monkeypatch, tmp_path):
    """The report assembly of arm-check and cpu-check, with every evaluation faked (the real runs need qemu and
    the cached aarch64 runtime, which CI lacks): rows, agreement, ok; cpu-check's --roi reaches every CPU's eval."""
    truth = [0, 1, 2, 3] * 5
    model = tmp_path / "m.int8.onnx"
    model.write_bytes(b"")
    fake = {**_side(truth, truth), "images": len(truth), "wall_s": 0.1}
    monkeypatch.setattr(arm, "setup", lambda cache=None, log=None: {"root": str(tmp_path)})
    monkeypatch.setattr(arm, "probe", lambda env, board="pi4": {"cpuinfo_part": "0xd08", "onnxruntime": "1",
                                                                 "machine": "aarch64", "hwcap": ["asimd"]})
    monkeypatch.setattr(arm, "run_eval", lambda *a, **k: dict(fake))
    r = arm.check([str(model)], subset=20, data="clothing-small", log=lambda *a: None)
    assert r["ok"] and r["rows"][0]["agreement"] == 1.0 and r["rows"][0]["precision"] == "int8"
    seen = []

    def eval_on(runner, model, data, subset, out, *, data_dir=None, threads=1, roi=None):
        seen.append((runner["cpu"], roi))
        return dict(fake)

    monkeypatch.setattr(arm, "eval_on", eval_on)
    monkeypatch.setattr(arm, "claimed_families", lambda path: ["x86-vnni", "x86-avx2", "arm64"])
    r = arm.cpu_check([str(model)], ["haswell", "vnni"], subset=20, data="clothing-small", roi="model",
                      log=lambda *a: None)
    assert r["ok"] and r["roi"] == "model" and {cpu for cpu, _ in seen} == {"native", "haswell", "vnni"}
    assert all(roi == "model" for _, roi in seen)
    a = arm.eval_args(model, "clothing-small", 20, tmp_path / "p.json", roi="auto:1.25")
    assert a[a.index("--roi") + 1] == "auto:1.25"
    assert "--roi" not in arm.eval_args(model, "clothing-small", 20, tmp_path / "p.json")


def test_compare_counts_per_image_agreement():
    truth = [0, 1, 2, 3] * 250
    x86 = _side(truth, truth)
    a = list(truth)
    a[0], a[1] = 5, 5
    c = arm.compare(x86, _side(a, truth))
    assert c["images"] == 1000 and c["disagreements"] == 2 and c["agreement"] == pytest.approx(0.998)
    assert c["x86_accuracy"] == 1.0 and c["arm_accuracy"] == pytest.approx(0.998)
    with pytest.raises(arm.ArmError, match="different images"):
        arm.compare(x86, _side(truth[:-1], truth[:-1]))


def _row(folder, precision, arm_acc, agreement=1.0):
    return {"file": f"{folder}/model{'.int8' if precision == 'int8' else ''}.onnx", "folder": folder,
            "precision": precision, "arm_accuracy": arm_acc, "agreement": agreement, "images": 2000}


def test_guard_fp32_agreement_below_99_9_fails():
    assert arm.guard([_row("a", "fp32", 0.9, 0.999)]) == []
    f = arm.guard([_row("a", "fp32", 0.9, 0.9985)])
    assert len(f) == 1 and "FP32 top-1 agreement x86 vs ARM 99.85% < 99.9%" in f[0]


def test_guard_int8_on_arm_against_fp32_on_arm():
    rows = [_row("a", "fp32", 0.905), _row("a", "int8", 0.901, 0.985),  # -0.4 pp: passes, even at 98.5% agreement
            _row("b", "fp32", 0.905), _row("b", "int8", 0.899)]  # -0.6 pp: fails
    f = arm.guard(rows, max_drop=0.5)
    assert len(f) == 1 and f[0].startswith("b/model.int8.onnx: INT8 accuracy on ARM 0.8990 is 0.60 pp below")
    assert rows[1]["arm_drop_pp"] == pytest.approx(0.4) and rows[3]["arm_drop_pp"] == pytest.approx(0.6)
    assert arm.guard(rows, max_drop=1.0) == []
    assert arm.guard([_row("c", "int8", 0.1)]) == []  # no FP32 twin given: nothing to compare with


def test_table_states_the_cpu_and_that_timings_are_not_a_pis():
    rows = [{**_row("/e/cnn4", "fp32", 0.905), "x86_accuracy": 0.905, "disagreements": 0},
            {**_row("/e/cnn4", "int8", 0.905, 0.985), "x86_accuracy": 0.896, "disagreements": 30}]
    fails = arm.guard(rows)
    r = {"emulated_cpu": {**arm.BOARDS["pi4"], "cpuinfo_part": "0xd08", "machine": "aarch64", "hwcap": ["asimd"],
                          "onnxruntime": "1.32.0", "onnxruntime_device": "CPU"},
         "subset": 2000, "rows": rows, "failures": fails, "ok": not fails, "setup_wall_s": 0.0, "wall_s": 1.0,
         "max_drop_pp": 0.5, "min_fp32_agreement": 0.999, "note": "wall times under emulation are qemu's, not a "
                                                                  "Raspberry Pi's speed"}
    t = arm.format_table(r)
    assert "Raspberry Pi 4 Model B (Cortex-A72" in t and "not a Raspberry Pi's speed" in t
    assert "cnn4/model.int8.onnx" in t and "98.50%" in t and "ok:" in t
    assert "up to 2000 images" in t and "images" in t.splitlines()[3]


# --- the runtime's new eval --predictions (host only) ---

def test_eval_writes_per_image_predictions(tmp_path, shared_data):
    from test_runtime_torchfree import tiny_runtime_files
    model, _, _ = tiny_runtime_files(tmp_path)
    out = tmp_path / "p.json"
    p = run_cli("eval", "--model", model, "--data", "fashion-mnist", "--limit", "60", "--json", "--predictions", out)
    r, preds = json.loads(p.stdout), json.loads(out.read_text())
    assert len(preds["predicted"]) == len(preds["truth"]) == r["images"] == 60
    assert np.mean(np.equal(preds["predicted"], preds["truth"])) == pytest.approx(r["accuracy"])
    conf = np.zeros((10, 10), int)
    np.add.at(conf, (preds["truth"], preds["predicted"]), 1)
    assert conf.tolist() == r["confusion_matrix"]


# --- export --check-arm: the guard on the ARM figure (emulation replaced by its result) ---

def test_export_check_arm_guard(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    from edgefashion.training import export as ex
    res = {"fp32": {"arm_accuracy": 0.905, "agreement": 1.0, "images": 2000}, "int8_drop_pp": 0.9,
           "int8": {"arm_accuracy": 0.896, "agreement": 0.985, "images": 2000}, "fp32_agreement_ok": True}
    monkeypatch.setattr(arm, "export_check", lambda *a, **k: json.loads(json.dumps(res)))
    from types import SimpleNamespace

    def check(allow_drop, report=None):
        report = report or SimpleNamespace(arm=None)  # _check_arm fills report.arm, as on an ExportReport
        opts = ex.ExportOptions(quantize="int8", max_drop=0.5, allow_drop=allow_drop, arm_subset=2000)
        ex._check_arm(report, tmp_path, opts, {"data": "fashion-mnist"}, tmp_path, lambda m: None)
        return report

    with pytest.raises(ex.ExportError, match="INT8 accuracy on ARM 0.8960 is 0.90 pp below FP32 0.9050"):
        check(False)
    assert check(True).arm["accuracy_guard"] == "exceeded, allowed"
    res["int8_drop_pp"] = 0.2
    assert check(False).arm["accuracy_guard"] == "passed"
    res["fp32_agreement_ok"], res["fp32"]["agreement"] = False, 0.99
    with pytest.raises(ex.ExportError, match="FP32 top-1 agreement x86 vs ARM 99.00%"):
        check(False)


# --- one real run under emulation ---

def _emulation_or_skip():
    try:
        arm.check_tools()
    except arm.ArmError as e:
        pytest.skip(f"aarch64 emulation unavailable: {e}")
    if arm.ready() is None and os.environ.get("EDGEFASHION_ARM_TESTS") != "1":
        pytest.skip(f"no cached aarch64 runtime in {arm.default_cache()}: run `edgefashion arm-check --setup-only` "
                    "once (or set EDGEFASHION_ARM_TESTS=1 to build it here)")


def test_arm_check_end_to_end_under_emulation(tmp_path, shared_data):
    """edgefashion's own eval under qemu-aarch64 (Pi 4) and on the host, on 50 test images of a tiny FP32
    model and its dynamically quantized INT8 twin, through the command a user runs."""
    _emulation_or_skip()
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from test_runtime_torchfree import tiny_runtime_files
    model, _, _ = tiny_runtime_files(tmp_path)
    exp = tmp_path / "export"
    exp.mkdir()
    shutil.copy(model, exp / "model.onnx")
    quantize_dynamic(str(exp / "model.onnx"), str(exp / "model.int8.onnx"), weight_type=QuantType.QInt8)
    out = tmp_path / "arm.json"
    # --max-drop 100: a random-weight model's INT8 accuracy is noise; this test checks the plumbing.
    p = run_cli("arm-check", "--model", exp, "--subset", "50", "--max-drop", "100", "--json", out,
                "--data", "fashion-mnist", env={"EDGEFASHION_DATA": str(data_root())}, check=False)
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    cpu = r["emulated_cpu"]
    assert cpu["machine"] == "aarch64" and cpu["cpuinfo_part"] == "0xd08" and cpu["core"] == "Cortex-A72"
    assert "asimddp" not in cpu["hwcap"] and cpu["onnxruntime"] == r["host"]["onnxruntime"]
    assert [row["precision"] for row in r["rows"]] == ["fp32", "int8"]
    assert all(row["images"] == 50 for row in r["rows"])
    assert r["rows"][0]["agreement"] == 1.0 and r["rows"][0]["x86_accuracy"] == r["rows"][0]["arm_accuracy"]
    assert "Cortex-A72" in p.stdout and "not a Raspberry Pi's speed" in p.stdout
    assert str(REPO) not in r["cache"]  # downloads live outside the checkout
