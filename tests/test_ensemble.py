"""`edgefashion ensemble`: trained checkpoints of one task as one model, scored, exported and run like any other.

Real runs (cnn4, one epoch on 1,500 Fashion-MNIST images per split, seconds on two cores), the real CLI."""
import json

import pytest
import torch

from conftest import run_cli
from edgefashion.runtime.classifier import Classifier
from edgefashion.training.ensemble import Ensemble, EnsembleError, make_checkpoint, make_soup
from edgefashion.training.train import TrainConfig, fit, load_checkpoint, model_from_checkpoint, save_checkpoint


def _quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def members(tmp_path_factory, shared_data):
    """Two runs on the same splits (seed 0) that differ in their learning rate, and one on other splits."""
    root = tmp_path_factory.mktemp("ens-runs")
    out = {}
    for name, seed, lr in (("a", 0, None), ("b", 0, 0.003), ("other-split", 1, None)):
        cfg = TrainConfig(model="cnn4", data="fashion-mnist", data_dir=str(shared_data), epochs=1, limit=1500,
                          batch_size=64, seed=seed, lr=lr)
        fit(cfg, root / name, progress=False, log=_quiet)
        out[name] = root / name
    return out


def test_ensemble_cli_scores_exports_and_runs(members, tmp_path):
    ens = tmp_path / "ens"
    p = run_cli("ensemble", members["a"], members["b"] / "best.pt", "--out", ens)
    assert "next: edgefashion export" in p.stderr
    res = json.loads((ens / "results.json").read_text())
    assert res["model"] == "ensemble-2xcnn4" and res["test_images"] > 0 and 0.5 < res["test_accuracy"] <= 1
    ckpt = load_checkpoint(ens)
    assert [m["file"] for m in ckpt["members"]] == ["best.pt", "best.pt"]
    assert all(len(m["sha256"]) == 64 for m in ckpt["members"])
    # The checkpoint rebuilds itself alone: its logits are the mean of its members' own.
    model, meta = model_from_checkpoint(ckpt)
    assert isinstance(model, Ensemble) and meta.model == "ensemble-2xcnn4"
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        a = model_from_checkpoint(load_checkpoint(members["a"]))[0](x)
        b = model_from_checkpoint(load_checkpoint(members["b"]))[0](x)
        torch.testing.assert_close(model(x), (a + b) / 2)
    # Export: one ONNX file with both members, the usual parity check and INT8 file; the runtime needs nothing new.
    out = tmp_path / "export"
    run_cli("export", ens, "--out", out, "--calib-size", "64", "--calib-methods", "minmax", "--latency-runs", "5",
            "--max-drop", "100", "--no-cpu-check")
    report = json.loads((out / "report.json").read_text())
    assert report["parity"]["top1_agreement"] >= 0.999 and report["int8"]
    assert report["run"]["test_accuracy"] == pytest.approx(res["test_accuracy"])
    clf = Classifier(out / "model.int8.onnx")
    assert clf.meta.model == "ensemble-2xcnn4"
    got = json.loads(run_cli("eval", "--model", out / "model.onnx", "--data", "fashion-mnist", "--limit", "300",
                             "--json").stdout)
    assert got["accuracy"] > 0.5


def test_split_seed_gives_members_of_other_seeds_the_same_held_out_images(members, tmp_path, shared_data):
    """`train --seed 1 --split-seed 0`: another initialisation and batch order, seed 0's validation images, so
    it joins a seed-0 run; the same run without --split-seed holds out other images and is refused."""
    run = tmp_path / "seed1"
    run_cli("train", "--model", "cnn4", "--data", "fashion-mnist", "--data-dir", shared_data, "--epochs", "1",
            "--limit", "1500", "--batch-size", "64", "--seed", "1", "--split-seed", "0", "--out", run, "--quiet")
    a, c = load_checkpoint(members["a"]), load_checkpoint(run)
    assert c["config"]["seed"] == 1 and c["config"]["split_seed"] == 0
    assert c["meta"]["split"] == a["meta"]["split"] and c["meta"]["split"]["seed"] == 0
    assert not torch.equal(a["state_dict"]["features.0.weight"], c["state_dict"]["features.0.weight"])
    run_cli("ensemble", members["a"], run, "--out", tmp_path / "ens")
    assert json.loads((tmp_path / "ens" / "results.json").read_text())["model"] == "ensemble-2xcnn4"
    bad = run_cli("ensemble", members["a"], members["other-split"], run, "--out", tmp_path / "x", check=False)
    assert bad.returncode == 1 and "other-split" in bad.stderr


def test_ensemble_refuses_members_that_do_not_fit(members, tmp_path):
    # Other validation/test images: the test figure would score images a member trained on.
    bad = run_cli("ensemble", members["a"], members["other-split"], "--out", tmp_path / "x", check=False)
    assert bad.returncode == 1 and "validation/test images" in bad.stderr and not (tmp_path / "x").exists()
    # Other labels (another task) and a single member.
    ckpt = load_checkpoint(members["b"])
    ckpt["meta"] = {**ckpt["meta"], "labels": [f"c{i}" for i in range(10)]}
    save_checkpoint(tmp_path / "relabelled.pt", ckpt)
    with pytest.raises(EnsembleError, match="relabelled.pt: its labels"):
        make_checkpoint([members["a"], tmp_path / "relabelled.pt"])
    one = run_cli("ensemble", members["a"], "--out", tmp_path / "y", check=False)
    assert one.returncode == 1 and "at least two" in one.stderr
    # An ensemble is not a member: list its members instead.
    run_cli("ensemble", members["a"], members["b"], "--out", tmp_path / "ens")
    nested = run_cli("ensemble", tmp_path / "ens", members["a"], "--out", tmp_path / "z", check=False)
    assert nested.returncode == 1 and "already an ensemble" in nested.stderr


def test_soup_cli_averages_the_weights_into_one_plain_model(members, tmp_path):
    soup = tmp_path / "soup"
    run_cli("ensemble", "--soup", members["a"], members["b"] / "last.pt", "--out", soup)
    res = json.loads((soup / "results.json").read_text())
    assert res["model"] == "cnn4" and res["source"] == "mean of the members' weights" and res["test_images"] > 0
    ckpt = load_checkpoint(soup)
    assert ckpt["model"] == "cnn4" and [m["file"] for m in ckpt["soup_of"]] == ["best.pt", "last.pt"]
    a, b = (load_checkpoint(p)["state_dict"] for p in (members["a"], members["b"] / "last.pt"))
    for k, v in ckpt["state_dict"].items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (a[k] + b[k]) / 2)
        else:
            assert torch.equal(v, a[k])
    # An ordinary checkpoint of its zoo model: it rebuilds alone, and its validation figure is its own.
    model, meta = model_from_checkpoint(ckpt)
    assert not isinstance(model, Ensemble) and meta.model == "cnn4"
    assert 0 <= res["best_val_accuracy"] <= 1


def test_soup_refuses_another_architecture(members, tmp_path):
    other = load_checkpoint(members["b"])
    other["model_args"] = {**other["model_args"], "num_classes": 11}
    save_checkpoint(tmp_path / "other.pt", other)
    with pytest.raises(EnsembleError, match="a soup averages one architecture's weights"):
        make_soup([members["a"] / "best.pt", tmp_path / "other.pt"])


def test_flip_cli_averages_a_model_over_its_mirrored_view_and_exports(members, tmp_path):
    flip = tmp_path / "flip"
    run_cli("ensemble", "--flip", members["a"], "--out", flip)
    res = json.loads((flip / "results.json").read_text())
    assert res["model"] == "cnn4-flip" and res["test_images"] > 0
    model, meta = model_from_checkpoint(load_checkpoint(flip))
    assert isinstance(model, Ensemble) and model.flip and meta.model == "cnn4-flip"
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        a = model_from_checkpoint(load_checkpoint(members["a"]))[0]
        torch.testing.assert_close(model(x), (a(x) + a(torch.flip(x, dims=[3]))) / 2)
        assert not torch.allclose(model(x), a(x))  # the mirrored view does change the answer
    # The flip is inside the graph: the ONNX file answers like the PyTorch model, and the runtime needs nothing.
    out = tmp_path / "export"
    run_cli("export", flip, "--out", out, "--calib-size", "64", "--calib-methods", "minmax", "--latency-runs", "5",
            "--max-drop", "100", "--no-cpu-check")
    report = json.loads((out / "report.json").read_text())
    assert report["parity"]["top1_agreement"] >= 0.999 and report["parity"]["max_abs_logit_diff"] < 1e-3
    assert Classifier(out / "model.int8.onnx").meta.model == "cnn4-flip"
    # Two members with flip: each one's mean over both views, averaged.
    ckpt, both = make_checkpoint([members["a"], members["b"]], flip=True)
    assert ckpt["model_args"]["flip"] is True and ckpt["meta"]["model"] == "ensemble-2xcnn4-flip"
    with torch.no_grad():
        b = model_from_checkpoint(load_checkpoint(members["b"]))[0]
        xf = torch.flip(x, dims=[3])
        torch.testing.assert_close(both(x), (a(x) + a(xf) + b(x) + b(xf)) / 4)


def test_flip_and_soup_or_one_plain_member_are_refused(members, tmp_path):
    one = run_cli("ensemble", members["a"], "--out", tmp_path / "one", check=False)
    assert one.returncode == 1 and "at least two checkpoints (one with --flip)" not in one.stderr
    assert "at least two checkpoints" in one.stderr
    both = run_cli("ensemble", "--soup", "--flip", members["a"], members["b"], "--out", tmp_path / "x", check=False)
    assert both.returncode == 1 and "make the soup first" in both.stderr
