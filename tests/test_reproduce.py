"""`edgefashion reproduce`: a tiny pass over two seed models, a resumed run that retrains nothing, then a larger
--epochs-scale that continues the runs instead of starting over."""
import json

from conftest import run_cli
from edgefashion.reports import TrainReport
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

    # A larger --epochs-scale continues the finished 1-epoch runs (plateau schedules) to 2 epochs: epoch 1 is
    # the same, the export is redone from the new weights, and the table shows 2 epochs.
    report = tmp_path / "runs" / "cnn1" / "export" / "report.json"
    epoch1 = (tmp_path / "runs" / "cnn1" / "metrics.csv").read_text().splitlines()[1]
    report_before = report.read_text()
    args[args.index("0.025")] = "0.05"
    p = run_cli(*args)
    assert "logreg: extending the 1-epoch run to 2 epochs" in p.stdout
    assert "cnn1: extending the 1-epoch run to 2 epochs" in p.stdout
    assert "trained already" not in p.stdout
    rows = (tmp_path / "runs" / "cnn1" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1] == epoch1
    table = json.loads((tmp_path / "bench" / "reproduce-fashion-mnist.json").read_text())
    assert [r["epochs_run"] for r in table["rows"]] == [2, 2]
    assert report.read_text() != report_before

    # --models with a subset updates those rows and keeps the others, in the suite's order, saying which
    # command re-ran which rows.
    logreg_row = table["rows"][0]
    p = run_cli(*args[:4], "cnn1", *args[5:])
    table = json.loads((tmp_path / "bench" / "reproduce-fashion-mnist.json").read_text())
    assert [r["model"] for r in table["rows"]] == ["logreg", "cnn1"]
    assert table["rows"][0] == logreg_row and table["rows"][1]["updated"]["command"].endswith(
        "--models cnn1 --epochs-scale 0.05 --limit 1500 --out " + str(tmp_path / "runs") + " --table-dir "
        + str(tmp_path / "bench"))
    assert [u["models"] for u in table["updates"]] == [["cnn1"]]
    md = (tmp_path / "bench" / "reproduce-fashion-mnist.md").read_text()
    assert "| cnn1 * |" in md and "| logreg |" in md and "Rows of cnn1 (marked *) re-run by" in md


def test_reproduce_fine_tunes_with_qat_the_rows_static_int8_breaks(shared_data, tmp_path):
    """A row whose static INT8 file loses more than --qat-above points gets a QAT fine-tune of its best.pt, and
    the table shows that INT8 file, marked (QAT), with the static figure kept beside it. --qat-above -100 makes
    cnn1's (harmless) static INT8 count as broken, so the path runs in seconds."""
    args = ["reproduce", "--suite", "fashion-mnist", "--models", "cnn1", "--epochs-scale", "0.025",
            "--limit", "1500", "--qat-above", "-100", "--out", tmp_path / "runs", "--table-dir", tmp_path / "bench"]
    p = run_cli(*args)
    assert "cnn1: static INT8 loses" in p.stdout and "quantization-aware training, 4 epochs" in p.stdout
    row = json.loads((tmp_path / "bench" / "reproduce-fashion-mnist.json").read_text())["rows"][0]
    qat_dir = tmp_path / "runs" / "cnn1" / "qat"
    assert row["int8_mode"] == "qat" and row["qat_epochs"] == 4 and row["qat_run"] == str(qat_dir)
    qrep = json.loads((qat_dir / "export" / "report.json").read_text())
    static = json.loads((tmp_path / "runs" / "cnn1" / "export" / "report.json").read_text())
    assert qrep["int8"]["method"] == "qat" and row["int8_test_accuracy"] == qrep["int8"]["test_accuracy"]
    assert row["static_int8_test_accuracy"] == static["int8"]["test_accuracy"]
    assert row["int8_latency_ms"] == qrep["int8"]["latency_ms_b1_t1"] > 0
    assert 0.3 < row["int8_test_accuracy"] <= 1
    md = (tmp_path / "bench" / "reproduce-fashion-mnist.md").read_text()
    assert f"{100 * row['int8_test_accuracy']:.2f}% (QAT)" in md and "static INT8 gave cnn1" in md

    # Resumable: the finished QAT run and its export are kept.
    stamp = (qat_dir / "best.pt").stat().st_mtime_ns
    p = run_cli(*args)
    assert "trained already" in p.stdout and "quantization-aware training" not in p.stdout
    assert (qat_dir / "best.pt").stat().st_mtime_ns == stamp
    # --no-qat reports the static file.
    p = run_cli(*args, "--no-qat")
    row = json.loads((tmp_path / "bench" / "reproduce-fashion-mnist.json").read_text())["rows"][0]
    assert row["int8_mode"] == "static" and "qat_run" not in row


def _finished_run(path, epochs_run, stop_reason, scheduler):
    path.mkdir(parents=True)
    TrainReport(model="cnn4", data="fashion-mnist", labels=[], params=1, img_size=28, in_chans=1, test_accuracy=0.9,
                test_loss=0.3, test_images=10, per_class_accuracy={}, confusion_matrix=[], train_accuracy=0.9,
                best_val_accuracy=0.9, best_epoch=epochs_run, epochs_run=epochs_run, stop_reason=stop_reason,
                train_seconds=1.0).write(path / "results.json")
    (path / "config.json").write_text(json.dumps({"scheduler": scheduler}))
    (path / "last.pt").write_bytes(b"")
    return path


def test_only_budget_free_schedules_that_ran_out_of_epochs_are_extended(tmp_path):
    from edgefashion.training.reproduce import _can_extend
    assert _can_extend(_finished_run(tmp_path / "a", 8, "max epochs", "plateau"), 40)
    assert _can_extend(_finished_run(tmp_path / "b", 8, "max epochs", "none"), 40)
    assert not _can_extend(_finished_run(tmp_path / "c", 8, "max epochs", "plateau"), 8)
    # Early stopping ended it: the recipe says it is done.
    assert not _can_extend(_finished_run(tmp_path / "d", 8, "early stopping: no val accuracy gain in 5 epochs",
                                         "plateau"), 40)
    # A cosine schedule is fixed to its budget: continuing would not be the longer run.
    assert not _can_extend(_finished_run(tmp_path / "e", 8, "max epochs", "cosine"), 40)


def test_one_img_size_serves_the_photo_suite():
    from edgefashion.training.reproduce import smallest_fit
    assert smallest_fit("alexnet", 64) == 67  # 1x1 after its last pool
    assert smallest_fit("alexnet", 96) == 96
    assert smallest_fit("seq5", 64) == 64


def test_img_size_applies_to_every_model_of_the_photo_suite(tmp_path, monkeypatch):
    """resnet20 is a Fashion-MNIST design at 28 px, but in the photo suite it sees photos at --img-size; alexnet,
    whose stride-4 11x11 stem cannot take 64 px, runs at the suite's size for it, 128 px."""
    import pytest

    from edgefashion.training import reproduce as rp
    seen = {}

    def fit_stops_at_once(cfg, run_dir, **kw):
        seen[cfg.model] = cfg.img_size
        raise KeyboardInterrupt  # only the chosen sizes matter here

    monkeypatch.setattr(rp, "fit", fit_stops_at_once)
    for model in ("resnet20", "alexnet"):
        with pytest.raises(KeyboardInterrupt):
            rp.reproduce("photos", models=[model], img_size=64, out=tmp_path / "runs", table_dir=tmp_path,
                         log=lambda *a: None)
    assert seen == {"resnet20": 64, "alexnet": 128}
