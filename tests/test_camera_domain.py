"""Camera-domain data (issue 16): garment mattes, the background photographs and their train/held-out split,
the `--augment camera` training augmentation, and the camera benchmark's generator and scoring."""
import hashlib
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO, data_root, load_script
from edgefashion.data import scene
from edgefashion.reports import TrainReport

torch = pytest.importorskip("torch")


def _blob_on_bed(seed=0, side=96):
    """A dark garment-like blob on a light, slightly textured background, BGR uint8; and its true mask."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(215, 6, (side, side, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((side, side), np.uint8)
    cv2.ellipse(mask, (side // 2, side // 2), (side // 4, side // 3), 0, 0, 360, 1, -1)
    img[mask == 1] = (40, 60, 150)
    return img, mask


def test_garment_mask_cuts_the_garment_out_and_keeps_flat_photos_whole():
    img, truth = _blob_on_bed()
    a = scene.garment_mask(img)
    assert a.shape == truth.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    m = a > 0.5
    iou = (m & (truth == 1)).sum() / (m | (truth == 1)).sum()
    assert iou > 0.85
    assert np.array_equal(a, scene.garment_mask(img))  # seeded: the same matte every time
    flat = np.full((64, 64, 3), 128, np.uint8)
    assert scene.garment_mask(flat).min() > 0.5  # nothing to cut: the whole photo is kept
    assert scene.bbox(a) == scene.bbox((truth == 1).astype(np.float32)) or iou > 0.85


def test_background_sets_are_disjoint_documented_and_never_heldout_in_training():
    train, calib, held = (scene.background_paths(k) for k in ("train", "calib", "heldout"))
    assert len(train) >= 20 and len(calib) >= 4 and len(held) >= 5
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    sets = [{digest(p) for p in s} for s in (train, calib, held)]
    assert not sets[0] & sets[1] and not sets[0] & sets[2] and not sets[1] & sets[2]
    readme = (scene.BACKGROUND_DIR / "README.md").read_text()
    for p in train + calib + held:
        assert f"`{p.name}` | {p.parent.name} |" in readme, p.name
    with pytest.raises(ValueError):
        scene.background_paths("test")
    from edgefashion.training import camera_aug
    pool = camera_aug.CameraAugment().pool(32, 3, "cpu")
    assert pool.shape == (len(train) * camera_aug.POOL_PER_PHOTO * 2, 3, 32, 32)  # and their mirror images


def test_camera_augment_is_deterministic_composites_and_stays_in_range():
    from edgefashion.meta import photo_meta
    from edgefashion.training.datasets import batch_to_input
    from edgefashion.training import camera_aug
    imgs = [_blob_on_bed(i, 48)[0][:, :, ::-1] for i in range(12)]
    xb = torch.from_numpy(np.stack(imgs).transpose(0, 3, 1, 2).copy())
    meta = photo_meta("x", [str(i) for i in range(10)], 48)
    outs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(5)
        outs.append(batch_to_input(xb, meta, "camera", g))
    assert outs[0].shape == (12, 3, 48, 48) and torch.isfinite(outs[0]).all()
    assert torch.equal(outs[0], outs[1])  # a resumed run augments exactly as an uninterrupted one
    # Composite directly: the garment sits on a background that is no longer the photo's light bed.
    g = torch.Generator().manual_seed(1)
    x = xb.float() / 255
    camera_aug.P_COMPOSITE, saved = 1.0, camera_aug.P_COMPOSITE
    try:
        y = camera_aug.camera_augment(x, xb, g, lambda t: t)
    finally:
        camera_aug.P_COMPOSITE = saved
    assert y.min() >= 0 and y.max() <= 1
    corners = torch.cat([y[:, :, :6, :6].flatten(1), y[:, :, -6:, -6:].flatten(1)], 1)
    bed = torch.cat([x[:, :, :6, :6].flatten(1), x[:, :, -6:, -6:].flatten(1)], 1)
    assert (corners - bed).abs().mean() > 0.1
    assert len(camera_aug.state().mattes) >= 12


def test_train_with_camera_augmentation(tmp_path):
    if not (data_root() / "clothing-small").is_dir():
        pytest.skip("clothing-small not found: set EDGEFASHION_DATA")
    from edgefashion.training.train import TrainConfig, fit
    res = fit(TrainConfig(model="cnn4", data="clothing-small", data_dir=str(data_root()), img_size=32, in_chans=3,
                          limit=60, epochs=1, batch_size=32, augment="camera"), tmp_path / "run", progress=False,
              log=lambda *a: None)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["augment"] == "camera" and 0 <= res.test_accuracy <= 1
    assert TrainReport.read(tmp_path / "run" / "results.json") == res  # fit returns what it wrote


def test_empty_frames_hold_no_garment_and_are_trained_towards_uncertain(tmp_path):
    from edgefashion.meta import photo_meta
    from edgefashion.training import camera_aug
    from edgefashion.training.datasets import batch_to_input
    from edgefashion.training.train import TrainConfig, resolve_config
    meta = photo_meta("x", [str(i) for i in range(10)], 48)
    garments = torch.from_numpy(np.stack([_blob_on_bed(i, 48)[0][:, :, ::-1] for i in range(8)]).transpose(0, 3, 1, 2).copy())
    other = torch.flip(garments, (0,)).roll(7, dims=3)
    empty = torch.tensor([True, False] * 4)

    def augmented(xb):
        return batch_to_input(xb, meta, "camera", torch.Generator().manual_seed(3), empty=empty)
    # Backgrounds from the photographs only (not from the borders of other photos of the batch, which would tie
    # the two batches' backgrounds to their photos): the same draws over other photos must then give the same
    # empty rows, as they hold no garment at all, and other garment rows.
    camera_aug.P_PHOTO_BG, saved = 1.0, camera_aug.P_PHOTO_BG
    try:
        a, b = augmented(garments), augmented(other)
    finally:
        camera_aug.P_PHOTO_BG = saved
    assert torch.equal(a[empty], b[empty]) and not torch.equal(a[~empty], b[~empty])
    with pytest.raises(ValueError, match="camera"):
        batch_to_input(garments, meta, "strong", torch.Generator().manual_seed(3), empty=empty)
    # The camera recipe's default share, off elsewhere, and refused where no camera augmentation makes them.
    assert resolve_config(TrainConfig(model="resnet10", data="clothing-small", augment="camera")).empty_frames == 0.1
    assert resolve_config(TrainConfig(model="resnet10", data="clothing-small", augment="strong")).empty_frames == 0.0
    with pytest.raises(ValueError, match="empty frames"):
        resolve_config(TrainConfig(model="resnet10", augment="strong", empty_frames=0.2))
    if not (data_root() / "clothing-small").is_dir():
        pytest.skip("clothing-small not found: set EDGEFASHION_DATA")
    # A real run with half of every batch empty: its accuracy counts only the garments.
    from edgefashion.training.train import fit
    res = fit(TrainConfig(model="cnn4", data="clothing-small", data_dir=str(data_root()), img_size=32, in_chans=3,
                          limit=60, epochs=1, batch_size=32, augment="camera", empty_frames=0.5), tmp_path / "run",
              progress=False, log=lambda *a: None)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["empty_frames"] == 0.5
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    train_acc = float(rows[1].split(",")[rows[0].split(",").index("train_acc")])
    assert 0 <= train_acc <= 1 and 0 <= res.test_accuracy <= 1


def test_energy_loss_trains_the_score_the_camera_thresholds_where_outlier_exposure_cannot():
    from edgefashion.meta import photo_meta
    from edgefashion.training.train import TrainConfig, batch_loss, resolve_config
    meta = photo_meta("x", [str(i) for i in range(10)], 48)
    xb = torch.from_numpy(np.stack([_blob_on_bed(i, 48)[0][:, :, ::-1] for i in range(16)]).transpose(0, 3, 1, 2).copy())
    yb = torch.arange(16) % 10
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 10))

    def config(kind):
        return TrainConfig(model="x", augment="camera", empty_frames=0.5, empty_weight=1.0, empty_loss=kind,
                           mixup=0.0, cutmix=0.0, label_smoothing=0.0)

    def loss(kind, shift=0.0):
        with torch.no_grad():
            model[2].bias += shift
        try:
            return float(batch_loss(model, xb, yb, meta, config(kind), torch.Generator().manual_seed(5))[0])
        finally:
            with torch.no_grad():
                model[2].bias -= shift
    # Moving every logit by the same amount moves the energy score, not the softmax: outlier exposure cannot see
    # it (the same loss), the energy loss does.
    assert loss("uniform", 3.0) == pytest.approx(loss("uniform"), rel=1e-5)
    assert abs(loss("energy", 3.0) - loss("energy")) > 1e-2
    # Per row, the loss's gradient summed over the classes: how a step moves that row's logsumexp. Gradient
    # descent must raise it on garment rows and lower it on empty rows; outlier exposure leaves it alone.
    seen = {}

    class Keep(torch.nn.Module):
        def forward(self, z):
            z.retain_grad()
            seen["z"] = z
            return z
    model.append(Keep())
    for kind in ("energy", "uniform"):
        out, _, y = batch_loss(model, xb, yb, meta, config(kind), torch.Generator().manual_seed(5))
        out.backward()
        push = seen["z"].grad.sum(1)
        ng = len(y)
        assert 0 < ng < len(xb)  # garment rows first, then the empty ones
        if kind == "energy":
            assert (push[:ng] < 0).all() and (push[ng:] > 0).all()
        else:
            assert push[ng:].abs().max() < 1e-7
    with pytest.raises(ValueError, match="empty_loss"):
        resolve_config(TrainConfig(model="resnet10", data="clothing-small", augment="camera", empty_loss="hinge"))


def test_logit_adjusted_loss_is_cross_entropy_on_logits_plus_tau_log_prior():
    """--logit-adjust tau (Menon et al. 2021): the labels' loss sees logits + tau * log(prior); the empty
    frames' loss and the logits returned for the accuracy are the model's own; a rare class's logit is pushed
    up against a common one's, which is what makes the model's own answer balanced."""
    import torch.nn.functional as F
    from edgefashion.meta import photo_meta
    from edgefashion.training.train import TrainConfig, batch_loss, class_log_prior, resolve_config
    y = torch.tensor([0] * 6 + [1] * 3 + [2])
    lp = class_log_prior(y, 4)  # class 3 has no example: counted as one, finite
    assert torch.isfinite(lp).all() and lp.exp()[:3].tolist() == pytest.approx([6 / 11, 3 / 11, 1 / 11])
    meta = photo_meta("x", [str(i) for i in range(4)], 32)
    xb = torch.from_numpy(np.stack([_blob_on_bed(i, 32)[0][:, :, ::-1] for i in range(8)]).transpose(0, 3, 1, 2).copy())
    yb = torch.tensor([0, 0, 0, 0, 1, 1, 2, 3])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 4))

    def run(tau, empty=0.0):
        cfg = TrainConfig(model="x", augment="none", mixup=0.0, cutmix=0.0, label_smoothing=0.0,
                          logit_adjust=tau, empty_frames=empty, empty_weight=1.0)
        if empty:
            cfg = TrainConfig(**{**cfg.__dict__, "augment": "camera"})
        return batch_loss(model, xb, yb, meta, cfg, torch.Generator().manual_seed(3), log_prior=lp)
    loss0, lg0, _ = run(0.0)
    lg0 = lg0.detach()
    loss1, lg1, _ = run(1.0)
    assert torch.equal(lg0, lg1)  # the accuracy is scored on the model's own logits
    assert float(loss0.detach()) == pytest.approx(float(F.cross_entropy(lg0, yb)), rel=1e-5)
    assert float(loss1.detach()) == pytest.approx(float(F.cross_entropy(lg0 + lp, yb)), rel=1e-5)
    # The gradient on the logits: at tau 1 the common class 0 is pushed up less and rare class 3 more.
    z = lg0.detach().clone().requires_grad_(True)
    F.cross_entropy(z + lp, yb).backward()
    g1 = z.grad.clone()
    z.grad = None
    F.cross_entropy(z, yb).backward()
    assert (g1[yb == 0, 0] > z.grad[yb == 0, 0]).all() and (g1[yb == 3, 3] < z.grad[yb == 3, 3]).all()
    # With empty frames the garment rows' part is adjusted and the empty rows' part is not: the loss differs.
    assert float(run(0.0, 0.5)[0].detach()) != pytest.approx(float(run(1.0, 0.5)[0].detach()))
    with pytest.raises(ValueError, match="logit_adjust"):
        resolve_config(TrainConfig(model="resnet10", data="clothing-small", logit_adjust=-1.0))


def test_benchmark_video_is_labelled_and_scored(tmp_path):
    if not (data_root() / "clothing-small").is_dir():
        pytest.skip("clothing-small not found: set EDGEFASHION_DATA")
    out = tmp_path / "b.mp4"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "camera" / "make_videos.py"), "--out", str(out),
                    "--limit", "4", "--hold", "3", "--bg-every", "2", "--data-dir", str(data_root())], check=True,
                   capture_output=True)
    labels = json.loads(out.with_suffix(".labels.json").read_text())
    assert labels["frames"] == 4 * 3 + 2 * 3 and labels["truth"].count(None) == 6
    assert set(labels["backgrounds"]) == {p.name for p in scene.background_paths("heldout")}
    # Each background stretch records where it starts and which scene it shows: items 0-1, a stretch, items 2-3,
    # a stretch.
    assert [(st["first"], st["frames"]) for st in labels["stretches"]] == [(6, 3), (15, 3)]
    assert all(labels["truth"][i] is None for st in labels["stretches"] for i in range(st["first"], st["first"] + 3))
    assert all(0 <= st["background"] < len(labels["backgrounds"]) for st in labels["stretches"])
    cap = cv2.VideoCapture(str(out))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == labels["frames"] and cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 640
    run = load_script(REPO / "benchmarks" / "camera" / "run.py", "camera_bench_run")
    truth = labels["truth"]
    # A camera that is right and sure on garments, unsure on background: everything scores 1.
    frames = [{"top": [{"label": t or "hat", "prob": 0.9 if t else 0.2}]} for t in truth]
    s = run.score(frames, labels, 0.5)
    assert s["frame_accuracy"] == s["item_majority_accuracy"] == s["background_uncertain"] == 1.0
    assert s["items"] == 4 and s["garment_frames"] == 12
    assert run.separation(frames, labels) == 1.0  # every garment frame surer than every background frame
    assert run.auroc([0.5, 0.5], [0.5]) == 0.5 and run.auroc([0.1], [0.9, 0.2]) == 0.0
    assert run.auroc([0.3, 0.8], [0.3, 0.5]) == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    s = run.score(frames, labels, 0.95)  # too strict a threshold: every garment frame is 'uncertain'
    assert s["frame_accuracy"] == 0 and s["garment_uncertain"] == 1 and s["frame_top1"] == 1
    # Calibration: the loosest threshold that still calls the background 'uncertain' wins (best items, then frames).
    frames = [{"top": [{"label": t or "hat", "prob": 0.6 if t else 0.3}]} for t in truth]
    c = run.calibrate({("full", 1.0, 1.0, None): frames}, labels)
    assert c["met_background_target"] and 0.3 < c["threshold"] <= 0.6 and c["scores"]["frame_accuracy"] == 1.0
    # With a background logit the camera's "garment" is what the threshold reads, and P(garment) near 1 (a
    # logit of 0) still finds its threshold: candidates follow the background frames' own values. Folding
    # turns (b, t) into (b + logit(t), 0.5) for unsmoothed points only.
    frames = [{"top": [{"label": t or "hat", "prob": 0.2}], "garment": 0.97 if t else 0.93} for t in truth]
    c = run.calibrate({("full", 1.0, 4.0, 0.0): frames}, labels)
    assert c["met_background_target"] and 0.93 < c["threshold"] <= 0.97 and c["scores"]["frame_accuracy"] == 1.0
    f = run.fold(c)
    assert f["threshold"] == 0.5 and f["background_logit"] == pytest.approx(np.log(c["threshold"] / (1 - c["threshold"])), abs=1e-4)
    assert run.fold({**c, "smooth": 0.7}) == {**c, "smooth": 0.7}
    # The whole script on this video with the bundled model: every setting also scored at its own threshold.
    res = tmp_path / "res"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "camera" / "run.py"), "--video", str(out),
                    "--roi", "full", "--temperature", "1,4", "--background-logit", "none,0", "--calibrate",
                    "--out", str(res)], check=True, capture_output=True)
    got = json.loads(res.with_suffix(".json").read_text())
    assert [(r["temperature"], r["background_logit"]) for r in got["runs"]] == [(1.0, None), (1.0, 0.0), (4.0, None),
                                                                               (4.0, 0.0)]
    assert all(0 < r["at_target"]["threshold"] < 1 for r in got["runs"])
    assert "Each setting at its own threshold" in res.with_suffix(".md").read_text()
    # Which CPU and packages drew and classified the frames: another CPU draws slightly different ones.
    from edgefashion.runtime.cpu import cpu_info
    cpu = cpu_info()
    assert got["machine"]["cpu"] == cpu["model"] and got["machine"]["isa"] == cpu["isa"]
    assert got["versions"]["opencv"] == cv2.__version__
    assert f"OpenCV {cv2.__version__}" in res.with_suffix(".md").read_text()


def test_scene_crops_are_recoloured_and_joined_but_stay_real_pixels():
    from edgefashion.training import camera_aug
    pool = torch.rand(6, 3, 16, 16)
    bg = pool[[0, 1, 2, 3] * 50]
    out = camera_aug._vary_scenes(bg, pool, torch.Generator().manual_seed(0))
    assert torch.equal(out, camera_aug._vary_scenes(bg, pool, torch.Generator().manual_seed(0)))  # seeded
    kinds = {"kept": 0, "recoloured": 0, "joined": 0}
    for o, b in zip(out, bg):
        same_pixel = (o.sort(0).values == b.sort(0).values).all(0)  # a channel permutation keeps each pixel's values
        if torch.equal(o, b):
            kinds["kept"] += 1
        elif same_pixel.all():
            kinds["recoloured"] += 1
        else:
            kinds["joined"] += 1
            # the rest of the frame is one other scene crop, pixel for pixel: nothing is invented
            assert any(torch.equal(o[:, ~same_pixel], p[:, ~same_pixel]) for p in pool)
    n = len(bg)  # P_BG_RECOLOUR 0.5, P_BG_COLLAGE 0.3 (an edge that misses the frame joins nothing)
    assert 0.25 * n < kinds["kept"] < 0.5 * n and 0.2 * n < kinds["recoloured"] < 0.5 * n
    assert 0.1 * n < kinds["joined"] < 0.4 * n


def test_calibration_can_promise_the_empty_frame_bar_with_a_margin_for_scene_variation():
    run = load_script(REPO / "benchmarks" / "camera" / "run.py", "camera_bench_run")
    # Ten items of two frames, each followed by a background stretch of ten frames; nine stretches are plainly
    # empty (P(garment) 0.1), one is a scene the model takes for a garment (0.5).
    truth, item, frames = [], [], []
    for k in range(10):
        truth += ["hat", "hat"] + [None] * 10
        item += [k, k] + [-1] * 10
        frames += [{"top": [{"label": "hat", "prob": 0.9}], "garment": 0.99}] * 2
        frames += [{"top": [{"label": "hat", "prob": 0.9}], "garment": 0.5 if k == 9 else 0.1}] * 10
    labels = {"truth": truth, "item": item}
    assert [len(s) for s in run.background_stretches(labels)] == [10] * 10
    assert run.background_stretches({"truth": [None, "a", None, None]}) == [[0], [2, 3]]
    # At 0.3 exactly 90% of the video's empty frames are 'uncertain', but a resample of its stretches holds the
    # bad scene twice or more about a quarter of the time: 1 - 0.9^10 - 10 * 0.1 * 0.9^9 = 0.264.
    assert run.score(frames, labels, 0.3)["background_uncertain"] == 0.9
    assert run.rejection_confidence(frames, labels, 0.3) == pytest.approx(0.736, abs=0.03)
    assert run.rejection_confidence(frames, labels, 0.6) == 1.0
    assert run.rejection_confidence(frames, {"truth": ["hat"], "item": [0]}, 0.3) is None
    loose = run.calibrate({("full", 1.0, 16.0, 0.0): frames}, labels)
    assert loose["met_background_target"] and loose["threshold"] <= 0.5 and "confidence_level" not in loose
    sure = run.calibrate({("full", 1.0, 16.0, 0.0): frames}, labels, confidence_level=0.8)
    assert sure["met_background_target"] and 0.5 < sure["threshold"] <= 0.99
    assert sure["scores"]["background_confidence"] >= 0.8 and sure["confidence_level"] == 0.8
    assert sure["scores"]["item_majority_accuracy"] == 1.0
    # Per scene, when the labels say which scene each stretch shows: the bad one is never 'uncertain' at 0.3.
    scenes = {**labels, "backgrounds": ["plain", "busy"],
              "stretches": [{"first": 12 * k + 2, "frames": 10, "background": int(k == 9)} for k in range(10)]}
    assert run.background_by_scene(frames, scenes, 0.3) == {"busy": 0.0, "plain": 1.0}
    assert run.background_by_scene(frames, labels, 0.3) is None
    for bad, says in (("1.5", "--confidence must be at least 0 and below 1"), ("0.8", "only applies with --calibrate")):
        p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "camera" / "run.py"), "--confidence", bad],
                           capture_output=True, text=True)
        assert p.returncode == 2 and says in p.stderr, p.stderr
