"""`edgefashion reproduce`: a tiny pass over two seed models, then a resumed run that retrains nothing."""
import json

from conftest import run_cli
from edgefashion.training.reproduce import SEED_FIGURES, SUITES
from edgefashion.training.zoo import list_models


def test_suites_name_zoo_models_and_seed_figures():
    for spec in SUITES.values():
        assert set(spec["models"]) <= set(list_models())
    assert SEED_FIGURES["cnn4"] == 0.9183 and SEED_FIGURES["seq6"] == 0.60
    assert set(SUITES["fashion-mnist"]["models"]) >= {"logreg", "mlp1", "mlp4", "cnn1", "cnn5", "resnet20"}
    assert set(SUITES["photos"]["models"]) >= {"alexnet", "alexnet-3conv", "seq5", "seq6", "seq5-strided"}


def test_reproduce_tiny_and_resume(shared_data, tmp_path):
    args = ["reproduce", "--suite", "fashion-mnist", "--models", "logreg,cnn1", "--epochs-scale", "0.025",
            "--limit", "1500", "--out", tmp_path / "runs", "--table-dir", tmp_path / "bench"]
    p = run_cli(*args)
    assert "[1/2] logreg:" in p.stdout and "[2/2] cnn1:" in p.stdout and "(seed 89.62%)" in p.stdout
    table = json.loads((tmp_path / "bench" / "reproduce-fashion-mnist.json").read_text())
    assert [r["model"] for r in table["rows"]] == ["logreg", "cnn1"]
    for r in table["rows"]:
        assert r["epochs_run"] == 1  # ceil(40 * 0.025)
        assert 0.3 < r["test_accuracy"] <= 1 and r["int8_test_accuracy"] is not None
        assert r["int8_latency_ms"] > 0
    assert table["rows"][0]["int8_mode"] == "dynamic" and table["rows"][1]["int8_mode"] == "static"
    md = (tmp_path / "bench" / "reproduce-fashion-mnist.md").read_text()
    assert "| cnn1 |" in md and "89.62%" in md

    best = tmp_path / "runs" / "cnn1" / "best.pt"
    stamp = best.stat().st_mtime_ns
    p = run_cli(*args)
    assert p.stdout.count("trained already") == 2
    assert best.stat().st_mtime_ns == stamp  # nothing retrained
