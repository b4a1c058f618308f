"""`edgefashion locate`: a garment box head on a trained photo model's frozen trunk, exported with a second output
and run by `predict`, `eval` and `camera` with `--roi auto`.

A real run: resnet10 trained one epoch on 60 clothing-small photos at 64 px, a locator fitted on 96 camera-like
frames, exported to INT8; the real CLI throughout (plumbing and invariants, not accuracy)."""
import json

import numpy as np
import pytest
import torch

from conftest import run_cli
from edgefashion.runtime.classifier import Classifier
from edgefashion.runtime.sources import DEMO_SETS
from edgefashion.training.checkpoints import load_checkpoint, model_from_checkpoint
from edgefashion.training.locate import box_errors, fit_garment_head, garment_head_cv
from edgefashion.training.quantize import output_head_nodes
from edgefashion.training.train import TrainConfig, fit
from edgefashion.training.zoo import BoxHead, Ensemble, EnsembleError, GarmentHead, create_model, split_features


def _quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("locate")
    cfg = TrainConfig(model="resnet10", data="clothing-small", data_dir=str(shared_data), epochs=1, limit=60,
                      img_size=64, augment="strong", batch_size=32)
    fit(cfg, root / "run", progress=False, log=_quiet)
    p = run_cli("locate", root / "run", "--out", root / "loc", "--frames", "96", "--val-frames", "16",
                "--epochs", "3")
    assert "IoU" in p.stderr and (root / "loc" / "best.pt").is_file()
    return root


def test_locate_keeps_the_classifier_and_adds_a_box(runs):
    src, _ = model_from_checkpoint(load_checkpoint(runs / "run"))
    ckpt = load_checkpoint(runs / "loc")
    assert ckpt["model"] == "ensemble" and ckpt["model_args"]["locator"]["grid"] == 8  # 64 px, stride-1 stem: 64 / 8
    assert ckpt["locator"]["frames"] == 96 and 0 <= ckpt["locator"]["box"]["iou"] <= 1
    # The garment head (on by default) is scored against the energy on validation and empty calibration frames.
    assert ckpt["model_args"]["locator"]["garment"] is True and ckpt["locator"]["garment_head"] is True
    assert set(ckpt["locator"]["empty_vs_garment"]) == {"energy_t16", "garment_head"}
    assert all(0 <= r["auroc"] <= 1 for r in ckpt["locator"]["empty_vs_garment"].values())
    cv = ckpt["locator"]["garment_cv"]
    assert cv["folds"] == 5 and cv["reject"] == 0.9 and cv["two_views"] is True and cv["camera_margin"] == 1.1
    assert set(cv["per_scene_rejected"]) <= {
        p.name for p in __import__("edgefashion.data.scene", fromlist=["x"]).background_paths("train")}
    model, meta = model_from_checkpoint(ckpt)
    assert isinstance(model, Ensemble) and meta.model == "resnet10-locate"
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        logits, box, garment = model(x)
        # The trunk was frozen: the logits are the source model's, exactly.
        torch.testing.assert_close(logits, src(x))
        torch.testing.assert_close(garment, model.garment(split_features(model.members[0])[0](x)))
    assert box.shape == (4, 4) and garment.shape == (4, 1)
    p = run_cli("locate", runs / "loc", "--out", runs / "again", check=False)
    assert p.returncode == 1 and "already has a locator" in p.stderr


def test_located_model_exports_and_runs_with_roi_auto(runs, tmp_path):
    out = tmp_path / "export"
    # A model without a locator cannot be given roi auto as its camera default.
    p = run_cli("export", runs / "run", "--out", out, "--camera-roi", "auto", "--no-cpu-check", check=False)
    assert p.returncode == 1 and "no garment locator" in p.stderr and not out.exists()
    p = run_cli("export", runs / "run", "--out", out, "--photo-roi", "auto", "--no-cpu-check", check=False)
    assert p.returncode == 1 and "--photo-roi auto" in p.stderr and not out.exists()
    run_cli("export", runs / "loc", "--out", out, "--calib-size", "32", "--calib-methods", "minmax",
            "--latency-runs", "3", "--max-drop", "100", "--no-cpu-check", "--camera-roi", "auto",
            "--photo-roi", "flip")
    report = json.loads((out / "report.json").read_text())
    assert report["parity"]["top1_agreement"] >= 0.999
    # The file's own roi (auto) is scored as `eval --roi model` runs it, and recorded beside the whole-image figure.
    own = report["own_roi"]
    assert own["roi"] == "auto" and 0 <= own["int8_test_accuracy"] <= 1
    assert Classifier(out / "model.int8.onnx").meta.extra["own_roi_test_accuracy"] == own["int8_test_accuracy"]
    assert "roi auto (the camera's)" in (out / "report.md").read_text()
    # Its photo default (flip), as predict and eval run it without --roi: scored and recorded the same way.
    photo_default = report["photo_roi"]
    assert photo_default["roi"] == "flip" and 0 <= photo_default["int8_test_accuracy"] <= 1
    assert Classifier(out / "model.int8.onnx").meta.extra["photo_roi_test_accuracy"] == \
        photo_default["int8_test_accuracy"]
    assert "roi flip (`predict`'s and `eval`'s default)" in (out / "report.md").read_text()
    # Re-quantized from its FP32 file, the file still knows its locator: the same record, and a plain FP32 file
    # is refused roi auto as well.
    again = tmp_path / "again"
    run_cli("export", out / "model.onnx", "--out", again, "--calib-size", "32", "--calib-methods", "minmax",
            "--latency-runs", "3", "--max-drop", "100", "--no-cpu-check")
    assert json.loads((again / "report.json").read_text())["own_roi"]["roi"] == "auto"
    plain = tmp_path / "plain"
    run_cli("export", runs / "run", "--out", plain, "--quantize", "none", "--latency-runs", "3", "--no-cpu-check")
    p = run_cli("export", plain / "model.onnx", "--out", tmp_path / "plain-auto", "--camera-roi", "auto",
                "--no-cpu-check", check=False)
    assert p.returncode == 1 and "no garment locator" in p.stderr
    clf = Classifier(out / "model.int8.onnx")
    assert clf.locates and clf.meta.roi == "auto" and clf.garment_name == "garment"
    assert [o.name for o in clf.session.get_outputs()] == ["logits", "box", "garment"]
    assert "outputs: logits, box (a garment locator" in run_cli("inspect", out / "model.int8.onnx").stdout
    assert "garment (whether a garment is there" in run_cli("inspect", out / "model.int8.onnx").stdout
    photo = sorted(p for p in DEMO_SETS["clothing-small"].rglob("*") if p.suffix.lower() in (".jpg", ".png"))[0]
    got = json.loads(run_cli("predict", photo, "--model", out / "model.int8.onnx", "--roi", "model",
                             "--json").stdout.strip().splitlines()[0])
    assert got["label"] in clf.labels and 0 < got["prob"] <= 1
    ev = json.loads(run_cli("eval", "--model", out / "model.int8.onnx", "--data", "clothing-small", "--limit",
                            "60", "--json").stdout)  # no --roi: the file's photo default
    assert ev["roi"] == "flip" and ev["accuracy"] == pytest.approx(photo_default["int8_test_accuracy"])
    ev = json.loads(run_cli("eval", "--model", out / "model.int8.onnx", "--data", "clothing-small", "--limit",
                            "20", "--roi", "model", "--json").stdout)  # the camera's default: auto
    assert 20 <= ev["images"] <= 22 and ev["roi"] == "auto"  # stratified: about 20
    plain_ev = json.loads(run_cli("eval", "--model", plain / "model.onnx", "--data", "clothing-small", "--limit",
                                  "20", "--json").stdout)
    assert plain_ev["roi"] == "full"  # photos are framed already: other models see the whole image
    ev_all = json.loads(run_cli("eval", "--model", out / "model.int8.onnx", "--data", "clothing-small", "--limit",
                                "60", "--roi", "model", "--json").stdout)
    assert ev_all["accuracy"] == pytest.approx(own["int8_test_accuracy"])  # the same photos (limit 60), the same answers
    full = json.loads(run_cli("eval", "--model", out / "model.int8.onnx", "--data", "clothing-small", "--limit",
                              "20", "--roi", "full", "--json").stdout)
    assert full["roi"] == "full"
    lines = run_cli("camera", "--model", out / "model.int8.onnx", "--source", "demo", "--headless", "--json",
                    "--threads", "1", "--max-frames", "5").stdout.strip().splitlines()
    assert json.loads(lines[-1])["summary"]["roi"] == "auto"


def test_box_head_geometry_and_refusals():
    m = create_model("resnet10", in_chans=3, num_classes=10, img_size=96)
    trunk, head = split_features(m)
    f = trunk(torch.zeros(2, 3, 96, 96))
    assert f.shape == (2, 256, 6, 6) and head(f).shape == (2, 10)
    assert BoxHead(256, 6)(f).shape == (2, 4)
    with pytest.raises(EnsembleError, match="no feature map"):
        split_features(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(10, 2)))
    # Mirrored views: the logits average both views, the box is read from the unmirrored one.
    e = Ensemble([m], flip=True, locator=BoxHead(256, 6)).eval()
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        logits, box = e(x)
        torch.testing.assert_close(logits, (m(x) + m(torch.flip(x, dims=[3]))) / 2)
        torch.testing.assert_close(box, e.locator(trunk(x)))
    t = np.asarray([[0.5, 0.5, 0.4, 0.4]], np.float32)
    r = box_errors(t, t)
    assert r["iou"] == pytest.approx(1.0) and r["cx"] == 0
    assert box_errors(np.asarray([[0.5, 0.5, 0.2, 0.4]], np.float32), t)["iou"] == pytest.approx(0.5)


def test_export_checks_a_located_files_camera_path_on_every_cpu_too(runs, tmp_path, monkeypatch):
    """With roi auto the box decides the second view's crop, so the export's cross-CPU check runs eval both as
    users run photos (the default) and with the camera's roi; a disagreement on either refuses the file. The
    emulation itself is faked here (tests/test_export.py and test_arm.py run it for real)."""
    from edgefashion.runtime import emulate
    from edgefashion.training import export as ex
    seen = []

    def fake(disagree_roi):
        def check(models, cpus, roi=None, **kw):
            seen.append(roi)
            rows = [{"cpu": c, "family": fam, "how": "emulated", "images": 60, "accuracy": 0.5,
                     "agreement": 0.98 if (roi == disagree_roi and c == "pi4") else 1.0,
                     "disagreements": 1 if (roi == disagree_roi and c == "pi4") else 0}
                    for c, fam in (("native", "x86-avx2"), ("haswell", "x86-avx2"), ("vnni", "x86-vnni"),
                                   ("pi4", "arm64"))]
            return {"rows": rows}
        return check

    opts = dict(calib_size=32, calib_methods=("minmax",), latency_runs=3, max_drop=100, parity_images=32,
                cpu_check=True, camera_roi="auto", photo_roi="flip", log=_quiet)
    monkeypatch.setattr(emulate, "cpu_check", fake("nothing differs"))
    r = ex.export_checkpoint(runs / "loc", tmp_path / "ok", **opts)
    assert seen == [None, "auto"]  # eval's default (the photo roi), then the camera's
    assert r.cross_cpu["verified"] is True and r.cross_cpu["camera_roi"]["roi"] == "auto"
    assert r.cross_cpu["camera_roi"]["families"]["arm64"][0]["disagreements"] == 0
    monkeypatch.setattr(emulate, "cpu_check", fake("auto"))
    with pytest.raises(ex.ExportError, match=r"roi auto: pi4 \(arm64\): 1 of 60 differ"):
        ex.export_checkpoint(runs / "loc", tmp_path / "bad", **opts)
    assert not (tmp_path / "bad").exists()


def test_garment_head_fits_and_folds_its_standardisation():
    """Logistic regression on pooled features: two clouds that differ in a few channels are told apart, and the
    head's one linear layer (standardisation folded in) gives the logit the solver's weights do."""
    g = torch.Generator().manual_seed(0)
    garment = torch.randn(400, 16, generator=g) * 3 + 10
    empty = torch.randn(200, 16, generator=g) * 3 + 10
    garment[:, :3] += 8
    head = fit_garment_head(garment, empty, 16)
    with torch.no_grad():
        s_g = head(garment[:, :, None, None].expand(-1, -1, 2, 2))[:, 0]
        s_e = head(empty[:, :, None, None].expand(-1, -1, 2, 2))[:, 0]
    assert isinstance(head, GarmentHead)
    assert float((s_g > 0).float().mean()) > 0.9 and float((s_e < 0).float().mean()) > 0.9
    # Balanced classes: twice as many garment frames do not push the empty ones over the line.
    assert abs(float((s_g > 0).float().mean()) - float((s_e < 0).float().mean())) < 0.08
    with pytest.raises(EnsembleError, match="comes with a locator"):
        Ensemble([create_model("resnet10", num_classes=10)], flip=True, garment=head)


def test_garment_output_stays_fp32_and_the_camera_reads_it(runs, tmp_path):
    """The INT8 file keeps the garment head in FP32 (calibration photos would clip the empty frames' negative
    logits to 0), and the camera's P(garment) is sigmoid(the two views' mean garment logit - background logit)."""
    import onnx
    from edgefashion.runtime.camera import FrameRunner, Smoother
    from edgefashion.runtime.preprocess import located_crop, preprocess
    out = tmp_path / "export"
    run_cli("export", runs / "loc", "--out", out, "--calib-size", "32", "--calib-methods", "minmax",
            "--latency-runs", "3", "--max-drop", "100", "--no-cpu-check", "--camera-roi", "auto")
    m = onnx.load(str(out / "model.int8.onnx"))
    producer = {t: n for n in m.graph.node for t in n.output}
    gemm = producer["garment"]
    inits = {i.name: i for i in m.graph.initializer}
    assert gemm.op_type == "Gemm" and inits[gemm.input[1]].data_type == onnx.TensorProto.FLOAT
    assert output_head_nodes(out / "model.onnx", "garment")[0] == gemm.name
    assert output_head_nodes(out / "model.onnx", "no-such-output") == []
    # The logits' own head is shared with nothing either, but it is quantized: only the garment head is kept FP32.
    assert any(n.op_type == "QuantizeLinear" for n in m.graph.node)

    clf = Classifier(out / "model.int8.onnx", threads=1)
    runner = FrameRunner(clf, "auto")
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    runner.preprocess(frame)
    logits = runner.infer().copy()
    g = runner.garment_logit()
    sess = clf.session
    l0, box, g0 = sess.run(None, {clf.input_name: preprocess([frame], clf.meta)})
    x0, y0, x1, y1 = located_crop(120, 160, clf.meta, box[0], runner.roi.margin)
    crop = np.ascontiguousarray(preprocess([frame[y0:y1, x0:x1]], clf.meta)[..., ::-1])
    l1, _, g1 = sess.run(None, {clf.input_name: crop})
    np.testing.assert_allclose(logits, (l0[0] + l1[0]) / 2, rtol=1e-5, atol=1e-5)
    assert g == pytest.approx(float(g0[0, 0] + g1[0, 0]) / 2, abs=1e-5)
    s = Smoother(clf.meta.num_classes, 1.0, 16.0, 1.5)
    s.update(logits, g)
    assert s.garment == pytest.approx(1 / (1 + np.exp(-(g - 1.5))), abs=1e-6)
    # The classes shown are their own softmax, whatever decides 'uncertain'.
    e = np.exp(logits - logits.max())
    np.testing.assert_allclose(s.ema, e / e.sum(), rtol=1e-5, atol=1e-6)
    lines = run_cli("camera", "--model", out / "model.int8.onnx", "--source", "demo", "--headless", "--json",
                    "--threads", "1", "--max-frames", "4", "--background-logit", "1.5").stdout.strip().splitlines()
    assert all(0 <= json.loads(line)["garment"] <= 1 for line in lines[:-1])


def test_garment_head_cross_validation_finds_the_scenes_it_cannot_reject():
    """Scene-level folds: each scene is scored by a head that never saw it. Two of twelve scenes look like
    garments; a head that saw them learns to reject them, one that did not cannot: the cross-validated cut sits
    above the in-sample one, and those two scenes are the ones rejected least."""
    g = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(1)
    fg = torch.randn(600, 8, generator=g)
    fg[:, :2] += 3
    sg = rng.integers(0, 12, 600)
    se = np.repeat(np.arange(12), 40)
    fe = torch.randn(len(se), 8, generator=g)
    odd = torch.from_numpy(se >= 10)
    fe[odd, :2] += 3  # garment-like on the garment channels...
    fe[odd, 2 + torch.from_numpy(se[se >= 10] - 10)] += 4  # ...and unlike anything else on a channel of their own
    cv = garment_head_cv(fg, sg, fe, se, 8, folds=4, seed=0)
    head = fit_garment_head(fg, fe, 8)
    with torch.no_grad():
        in_sample = float(np.quantile(head(fe[:, :, None, None])[:, 0].numpy(), 0.9))
    assert cv["cut"] > in_sample
    worst = sorted(cv["per_scene_rejected"], key=cv["per_scene_rejected"].get)[:2]
    assert sorted(worst) == [10, 11] and cv["scenes_below_80"] >= 2 and 0 <= cv["garment_kept_one_view"] <= 1
    assert cv["two_views"] is False and cv["cut"] == cv["cut_one_view"]
    # A second view that looks more like a garment (as the located square of an empty scene does) raises the cut.
    two = garment_head_cv(fg, sg, fe, se, 8, folds=4, seed=0, fe_second=fe + torch.where(
        torch.arange(8) < 2, 1.0, 0.0))
    assert two["two_views"] is True and two["cut"] > cv["cut"] and two["cut_one_view"] == cv["cut_one_view"]
