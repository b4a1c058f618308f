"""The bundled models are what export/ and the README say they are: a fresh `edgefashion eval` with no --model
reproduces the test accuracy written into each default file's metadata and report, on the whole test split,
on whatever CPU family the tests run on (the files are exported for the portable target and verified on every
family), and an emulated AVX2-without-VNNI CPU gives the same answers as this one."""
import json
import shutil

import pytest

from conftest import REPO, load_script, run_cli
from edgefashion.runtime import emulate
from edgefashion.runtime import models as rtmodels
from edgefashion.runtime.classifier import Classifier

DEFAULTS = json.loads((REPO / "export" / "default.json").read_text())
DATA = {"fashion-mnist": "fashion-mnist", "photo": "clothing-small"}
# The bar the bundled INT8 models must clear on the full test split; a kind is held to it once bundled.
BAR = {"fashion-mnist": 0.945, "photo": 0.80}


@pytest.mark.parametrize("kind", sorted(DEFAULTS))
def test_bundled_default_reproduces_its_claimed_accuracy(kind, shared_data):
    path = rtmodels.default_model(kind)
    assert path == (REPO / "export" / DEFAULTS[kind]).resolve()
    meta = Classifier(path, threads=1).meta
    assert meta.domain == kind and meta.extra["precision"] == "int8"
    report = json.loads((path.parent / "report.json").read_text())
    claimed = recorded_accuracy(meta, emulate.host_family())
    assert report["int8"]["test_accuracy"] == pytest.approx(meta.extra["onnx_test_accuracy"])
    assert (path.parent / "COMMAND").is_file()
    r = run_cli("eval", "--data", DATA[kind], "--json", "--threads", "2")  # no --model: the bundled default
    got = json.loads(r.stdout)
    assert got["images"] == report["split_sizes"]["test"]
    assert got["accuracy"] == pytest.approx(claimed, abs=1e-9)


def test_bundled_models_meet_the_bar():
    """Recorded accuracy of every bundled default, against the bar its kind must reach."""
    below = {}
    for kind, rel in DEFAULTS.items():
        acc = Classifier(REPO / "export" / rel, threads=1).meta.extra["onnx_test_accuracy"]
        if acc < BAR[kind]:
            below[kind] = acc
    assert not below, f"bundled INT8 models below the bar: {below}"


def recorded_accuracy(meta, family: str) -> float:
    """The test accuracy the file records for `family`: its one figure, when its quantization target claims
    that family and the export verified it there image by image."""
    cc = meta.extra.get("cross_cpu") or {}
    assert cc.get("verified") is True, f"{meta.model}: the bundled file's cross-CPU check did not pass: {cc}"
    assert family in cc["claimed_families"], f"{meta.model}: no accuracy recorded for {family} ({cc})"
    runs = cc["families"][family]
    assert all(r["disagreements"] == 0 for r in runs), runs
    # A file whose photo default is not the whole image (photo_roi) records what eval gives with it beside the
    # whole-image figure; eval without --roi uses it.
    return meta.extra.get("photo_roi_test_accuracy", meta.extra["onnx_test_accuracy"])


@pytest.mark.parametrize("kind", sorted(DEFAULTS))
def test_bundled_defaults_are_portable_and_verified_on_every_family(kind):
    meta = Classifier(REPO / "export" / DEFAULTS[kind], threads=1).meta
    q = meta.extra["quantization"]
    assert q["target"] == "portable" and q["reduce_range"] is True
    assert sorted(meta.extra["cross_cpu"]["claimed_families"]) == ["arm64", "x86-avx2", "x86-vnni"]
    for family in ("x86-vnni", "x86-avx2", "arm64"):
        recorded_accuracy(meta, family)
    # Provenance without the exporting machine's paths.
    blob = json.dumps(meta.to_dict())
    assert "/work/" not in blob and "/home/" not in blob and "/tmp/" not in blob


@pytest.mark.skipif(shutil.which("qemu-x86_64-static") is None,
                    reason="qemu-x86_64-static not installed (apt-get install qemu-user-static)")
def test_bundled_model_answers_the_same_on_an_emulated_haswell(shared_data):
    """A laptop CPU (AVX2, no VNNI) by emulation: the same predictions as this machine, image by image."""
    r = emulate.cpu_check([str(REPO / "export" / DEFAULTS["fashion-mnist"])], ["haswell"], subset=200,
                          data="fashion-mnist", data_dir=str(shared_data), log=lambda *a: None)
    rows = {row["cpu"]: row for row in r["rows"]}
    assert rows["haswell"]["how"] == "emulated" and rows["haswell"]["images"] == 200
    assert rows["haswell"]["disagreements"] == 0 and rows["haswell"]["claimed"] is True, rows
    assert r["ok"], r["failures"]


def test_bundled_photo_model_runs_the_camera_with_its_calibrated_defaults_as_recorded(tmp_path):
    """The camera defaults (roi, smoothing, threshold, temperature, background logit) written into the bundled photo file are the ones the
    camera benchmark recorded for it, and its demo (no data folder, no --model) reproduces the live accuracy
    recorded there: exactly on the CPU and packages that recorded it, within DEMO_TOLERANCE elsewhere. The demo's
    scenes are drawn by OpenCV, whose IPP and SIMD kernels round differently per CPU, so other CPUs see slightly
    different frames (0.752 with 64 frames uncertain on an Intel AVX-512 VNNI machine, 0.740 with 70 on an AMD
    EPYC with AVX2, the same files and packages); the model's own integers are the same everywhere (the tests
    above)."""
    bench = json.loads((REPO / "benchmarks" / "camera" / "results" / "bundled-camera.json").read_text())
    demo = next(d for d in bench["demo"].values() if d["model"] == f"export/{DEFAULTS['photo']}")
    meta = Classifier(REPO / "export" / DEFAULTS["photo"], threads=1).meta
    recorded = (demo["roi"], demo["smooth"], demo["threshold"], demo.get("temperature", 1.0),
                demo.get("background_logit"))
    assert (meta.roi, meta.smooth, meta.threshold, meta.temperature, meta.background_logit) == recorded
    p = run_cli("camera", "--source", "demo", "--headless", "--json", "--threads", "1", "--max-frames",
                str(demo["frames"]), env={"EDGEFASHION_DATA": str(tmp_path / "none"), "HOME": str(tmp_path)})
    s = json.loads(p.stdout.strip().splitlines()[-1])["summary"]
    assert (s["roi"], s["smooth"], s["threshold"], s["temperature"], s["background_logit"]) == recorded
    if same_frames(bench):
        assert s["accuracy"] == demo["accuracy"] and s["uncertain_frames"] == demo["uncertain_frames"]
    else:
        assert abs(s["accuracy"] - demo["accuracy"]) <= DEMO_TOLERANCE, (s, demo)
        assert abs(s["uncertain_frames"] - demo["uncertain_frames"]) <= DEMO_TOLERANCE * demo["frames"], (s, demo)


# Another CPU's demo frames differ a little (see above): 3 points of live accuracy, 15 of 500 frames.
DEMO_TOLERANCE = 0.03


def same_frames(bench: dict) -> bool:
    """Whether this machine draws the frames the benchmark recorded: the same CPU model and ISA, and the same
    packages, as the benchmark script itself records them."""
    run = load_script(REPO / "benchmarks" / "camera" / "run.py", "camera_bench_run")
    m, here = bench.get("machine"), run.machine()
    if not isinstance(m, dict) or (m.get("cpu"), m.get("isa")) != (here["cpu"], here["isa"]):
        return False
    return bench.get("versions") == run.frame_versions()
