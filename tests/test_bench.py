"""`edgefashion bench` and `export --quantize auto`. Timings are never asserted: only that they exist,
have the right types, and land in the files the command promises."""
import json
import shutil
import subprocess
import sys

import cv2
import pytest
from click.testing import CliRunner

from conftest import REPO, data_root, load_script
from edgefashion.cli import cli
from edgefashion.runtime import bench as b
from edgefashion.runtime.cpu import cpu_model, detect_cpu, isa_names
from test_architecture import BLOCK, HEAVY
from test_runtime import FAST, _build

RUN = ["--runs", "5", "--warmup", "1"]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, shared_data):
    """A real cnn4 export (1 epoch on 600 images): model.onnx, model.int8.onnx, report.json, source checkpoint."""
    return _build(tmp_path_factory, shared_data, "bench", model="cnn4", data="fashion-mnist", limit=600).parent


def _bench(*args):
    r = CliRunner().invoke(cli, ["bench", *map(str, args)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


def test_bench_json_schema_files_plot_and_torch_baseline(export_dir, tmp_path):
    out, png = tmp_path / "results", tmp_path / "plot.png"
    r = _bench("-m", export_dir / "model.onnx", "-m", export_dir / "model.int8.onnx", *RUN, "--batch", "1,2",
               "--baseline", "torch", "--accuracy", "--data", "fashion-mnist", "--limit", "200", "--plot", png,
               "--out", out, "--json")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for key, typ in (("schema", int), ("created", str), ("host", str), ("edgefashion", str), ("onnxruntime", str),
                     ("torch", str), ("cpu", dict), ("settings", dict), ("peak_rss_mb", float), ("models", list),
                     ("recommendations", list), ("files", dict)):
        assert isinstance(res[key], typ), key
    cpu = res["cpu"]
    assert isinstance(cpu["model"], str) and isinstance(cpu["isa"], list) and isinstance(cpu["cores"], int)
    s = res["settings"]
    assert s["runs"] == 5 and s["warmup"] == 1 and s["batches"] == [1, 2] and s["threads"] == [1]
    assert s["baseline"] == "torch" and s["spin"] is False and s["inter_op_threads"] == 1
    assert [m["precision"] for m in res["models"]] == ["fp32", "int8"]
    for m in res["models"]:
        assert m["name"] == export_dir.parent.name and m["model"] == "cnn4" and m["size_bytes"] > 0
        assert isinstance(m["mflops"], float) and m["mflops"] > 0 and m["mflops_source"] == "metadata"
        assert 0 <= m["accuracy"] <= 1 and m["accuracy_images"] == 200
        assert [(row["batch"], row["threads"]) for row in m["latency"]] == [(1, 1), (2, 1)]
        for row in m["latency"]:
            for key in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_ips", "torch_median_ms",
                        "speedup_vs_torch"):
                assert isinstance(row[key], float) and row[key] > 0, key
            assert row["median_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["runs"] == 5
    assert all("int8_over_fp32" in row for row in res["models"][1]["latency"])
    (rec,) = res["recommendations"]
    assert rec["recommended"] in ("fp32", "int8") and isinstance(rec["accuracy_equal"], bool)
    assert "faster than" in rec["text"]
    # the results files the command promises, named <date>-<host>
    stem = f"{res['created'][:10]}-{res['host']}"
    assert json.loads((out / f"{stem}.json").read_text())["models"][0]["latency"] == res["models"][0]["latency"]
    md = (out / f"{stem}.md").read_text()
    assert "| model | precision | batch |" in md and "speedup vs torch" in md and "Recommended" in md
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100


def test_bench_runs_without_torch(export_dir, tmp_path):
    """The torch-free install: bench works with torch blocked; --baseline torch says what is missing."""
    def run(args):
        code = ("import sys; from edgefashion.cli import cli\n"
                f"try:\n    cli({args!r}, prog_name='edgefashion')\n"
                "except SystemExit as e:\n    sys.exit(e.code)\n"
                f"assert not [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]")
        return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, cwd=REPO,
                              env={"EDGEFASHION_DATA": str(data_root()), "PATH": "/usr/bin:/bin"})
    model = str(export_dir / "model.int8.onnx")
    p = run(["bench", "-m", model, *RUN, "--out", str(tmp_path), "--json"])
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["torch"] is None and "speedup_vs_torch" not in res["models"][0]["latency"][0]
    p = run(["bench", "-m", model, *RUN, "--out", str(tmp_path), "--baseline", "torch"])
    assert p.returncode == 1 and "--baseline torch needs PyTorch" in p.stderr


def test_baseline_without_source_checkpoint_is_a_clear_error(tmp_path):
    from test_runtime_torchfree import tiny_runtime_files
    model, _, _ = tiny_runtime_files(tmp_path)  # metadata names no source checkpoint
    r = CliRunner().invoke(cli, ["bench", "-m", str(model), *RUN, "--baseline", "torch", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "no PyTorch baseline" in r.output and "tiny.onnx" in r.output


def test_no_models_and_bad_lists_are_clear_errors(tmp_path):
    with pytest.raises(b.BenchError, match="no exported models"):
        b.find_models([tmp_path])
    with pytest.raises(b.BenchError, match="--batch"):
        b.parse_int_list("1,x", "batch")
    assert b.parse_int_list("1,2,1", "threads") == [1, 2]
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--export-dir", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "no exported models" in p.stderr


def test_benchmark_script_finds_export_and_reproduce_layouts(tmp_path):
    """benchmarks/run.py takes export/NAME/model*.onnx and reproduce's RUN/export/model*.onnx, FP32 first."""
    run = load_script(REPO / "benchmarks" / "run.py", "bench_run")
    for rel in ("a/model.onnx", "a/model.int8.onnx", "cnn4/export/model.int8.onnx", "cnn4/export/model.onnx",
                "cnn4/last.pt", "b/notes.onnx"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    names = [str(p.relative_to(tmp_path)) for p in run.model_files(tmp_path, int8_only=False)]
    assert names == ["a/model.onnx", "a/model.int8.onnx", "cnn4/export/model.onnx", "cnn4/export/model.int8.onnx"]
    assert [str(p.relative_to(tmp_path)) for p in run.model_files(tmp_path, int8_only=True)] == [
        "a/model.int8.onnx", "cnn4/export/model.int8.onnx"]
    assert b.display_name(None, tmp_path / "cnn4" / "export" / "model.int8.onnx") == "cnn4"
    assert b.display_name(None, tmp_path / "a" / "model.onnx") == "a"


def test_graph_mflops_matches_the_export_count(export_dir):
    pytest.importorskip("onnx")
    from edgefashion.runtime.classifier import Classifier
    want = Classifier(export_dir / "model.onnx").meta.extra["mflops"]
    for name in ("model.onnx", "model.int8.onnx"):  # the INT8 file's weights sit behind DequantizeLinear
        assert b.graph_mflops(export_dir / name) == pytest.approx(want, rel=0.02)


def _model(precision, ms, acc, ratio=None):
    row = {"batch": 1, "threads": 1, "median_ms": ms}
    if ratio is not None:
        row["int8_over_fp32"] = ratio
    return {"path": "export/cnn4/x.onnx", "name": "cnn4", "model": "cnn4", "precision": precision,
            "accuracy": acc, "latency": [row]}


def test_recommendation_prefers_the_faster_precision_at_equal_accuracy():
    (r,) = b.recommend([_model("fp32", 0.07, 0.900), _model("int8", 0.05, 0.899, 0.7)])
    assert r["recommended"] == "int8" and r["accuracy_equal"] is True
    assert r["text"] == "cnn4: int8 (0.05 ms) faster than fp32 (0.07 ms, b1 t1) at equal accuracy (within 0.3 pp)"
    (r,) = b.recommend([_model("fp32", 0.05, 0.900), _model("int8", 0.06, 0.900, 1.2)])
    assert r["recommended"] == "fp32"
    (r,) = b.recommend([_model("fp32", 0.07, 0.900), _model("int8", 0.05, 0.880, 0.7)])
    assert r["recommended"] == "fp32" and r["accuracy_equal"] is False and "loses 2.00 pp" in r["text"]


def test_cpu_detection_lives_in_the_runtime():
    from edgefashion.training import quantize as q
    assert q.detect_cpu is detect_cpu
    pi = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
    assert cpu_model(pi) == "Raspberry Pi 4 Model B Rev 1.4"
    assert isa_names(detect_cpu(pi, "aarch64")) == ["NEON"]
    x86 = "model\t\t: 106\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: avx2 avx512f avx512bw avx512_vnni\n"
    assert cpu_model(x86) == "Intel(R) Xeon(R)"
    assert isa_names(detect_cpu(x86, "x86_64")) == ["AVX2", "AVX-512", "AVX-512 VNNI"]


def test_quantize_auto_records_its_decision(export_dir, tmp_path):
    from edgefashion.training.export import export_checkpoint
    run = export_dir.parent / "run"
    out = tmp_path / "auto"
    r = export_checkpoint(run, out, **{**FAST, "quantize": "auto"})
    a = json.loads((out / "report.json").read_text())["auto"]
    assert a == r.auto
    assert a["kept"] in ("fp32", "int8") and a["fp32_ms"] > 0 and a["int8_ms"] > 0 and a["batch"] == 1
    assert a["threads"] == 1 and "int8/fp32" in a["reason"]
    assert (out / "model.int8.onnx").is_file() == (a["kept"] == "int8")
    assert (out / "model.onnx").is_file()
    if a["kept"] == "fp32":
        # No INT8 file, so no INT8 section; the measured INT8 candidate stays in the decision.
        assert r.int8 is None and "int8" not in json.loads((out / "report.json").read_text())
        assert a["int8"]["test_accuracy"] >= 0
    shutil.rmtree(out)
