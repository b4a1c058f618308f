"""The runtime region of interest (issue 16): `--roi full|center:F|X,Y,W,H` for camera, predict and eval, the
model's camera default in its metadata, the guide box on the overlay, and a camera source with no readable frame.

Torch-free: the model is a small real ONNX classifier written with the onnx package (random weights; these tests
check geometry and plumbing, not accuracy)."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_cli
from edgefashion.meta import LOCATE_MARGIN, PHOTO_CAMERA_ROI, MetaError, ModelMeta, Roi, fashion_mnist_meta, photo_meta
from edgefashion.runtime.camera import FrameRunner
from edgefashion.runtime.classifier import Classifier
from edgefashion.runtime.preprocess import crop_roi, located_crop, preprocess, view_box

LABELS = ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt"]


def tiny_photo_model(path: Path, roi=None, drop_roi_key=False, threshold=None, smooth=None,
                     temperature=None, background_logit=None, box=None, photo_roi=None) -> Path:
    """`box`: also a second output, `box`, that says the garment is at this (cx, cy, w, h) in every image."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    n = 3 * 32 * 32
    w = numpy_helper.from_array(rng.normal(0, 0.05, (n, 10)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(10, np.float32), "B")
    shape = numpy_helper.from_array(np.asarray([-1, n], np.int64), "S")
    nodes = [helper.make_node("Reshape", ["x", "S"], ["f"]), helper.make_node("Gemm", ["f", "W", "B"], ["logits"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])]
    inits = [w, b, shape]
    if box is not None:
        inits += [numpy_helper.from_array(np.zeros((n, 4), np.float32), "WB"),
                  numpy_helper.from_array(np.asarray(box, np.float32), "BB")]
        nodes.append(helper.make_node("Gemm", ["f", "WB", "BB"], ["box"]))
        outputs.append(helper.make_tensor_value_info("box", TensorProto.FLOAT, ["n", 4]))
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 32, 32])],
                          outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    meta = photo_meta("tiny", LABELS, 32, dataset="clothing-small")
    if roi is not None:
        meta = meta.replace(roi=roi)
    if threshold is not None:
        meta = meta.replace(threshold=threshold)
    if smooth is not None:
        meta = meta.replace(smooth=smooth)
    if temperature is not None:
        meta = meta.replace(temperature=temperature)
    if background_logit is not None:
        meta = meta.replace(background_logit=background_logit)
    if photo_roi is not None:
        meta = meta.replace(photo_roi=photo_roi)
    props = meta.to_onnx_props()
    if drop_roi_key:  # a file exported before ModelMeta had `roi`
        d = json.loads(props["edgefashion"])
        del d["roi"]
        props["edgefashion"] = json.dumps(d)
    helper.set_model_props(m, props)
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def frame():
    """A 640x480 frame: a bright square in the middle of a dark, textured scene."""
    rng = np.random.default_rng(1)
    f = rng.integers(0, 90, (480, 640, 3), dtype=np.uint8)
    f[140:340, 220:420] = (40, 200, 250)
    return f


def test_roi_parse_and_boxes():
    assert Roi.parse(None).is_full and Roi.parse("full").box(480, 640) == (0, 0, 640, 480)
    c = Roi.parse("center:0.7")
    assert str(c) == "center:0.7" and c.box(480, 640) == (152, 72, 488, 408)  # 336 = 0.7 x 480, centred
    assert Roi.parse("centre:1").box(480, 640) == (80, 0, 560, 480)
    assert Roi.parse("10,20,100,50").box(480, 640) == (10, 20, 110, 70)
    assert Roi.parse("0.25,0.5,0.5,0.5").box(480, 640) == (160, 240, 480, 480)
    assert Roi.parse("600,400,100,100").box(480, 640) == (600, 400, 640, 480)  # clipped to the frame
    for bad in ("center:0", "center:1.5", "center:x", "1,2,3", "0,0,0,10", "0.5,0.5,2.0,0.5", "corner", "-1,0,5,5"):
        with pytest.raises(ValueError, match="ROI"):
            Roi.parse(bad)
    with pytest.raises(ValueError, match="outside the 640x480 frame"):
        Roi.parse("700,10,50,50").box(480, 640)


def test_meta_records_the_camera_roi_and_old_files_read_full():
    m = photo_meta("x", ["a", "b"], 64)
    assert m.roi == PHOTO_CAMERA_ROI and ModelMeta.from_json(m.to_json()) == m
    d = m.to_dict()
    del d["roi"]
    assert ModelMeta.from_dict(d).roi == "full"
    # Fashion-MNIST models keep their own rule (the object is found by the domain mapping): the whole frame.
    assert fashion_mnist_meta("cnn4", list("abcdefghij")).roi == "full"
    with pytest.raises(MetaError, match="roi"):
        m.replace(roi="center:2")


def test_crop_is_a_view_and_preprocess_uses_it(frame):
    view = crop_roi(frame, "center:0.5")
    assert view.base is frame or np.shares_memory(view, frame)
    assert view.shape == (240, 240, 3) and crop_roi(frame, "full") is frame
    meta = photo_meta("x", LABELS, 32)
    assert np.array_equal(preprocess([frame], meta, "center:0.5"), preprocess([frame[120:360, 200:440]], meta))


def test_frame_runner_roi_matches_preprocess(tmp_path, frame):
    clf = Classifier(tiny_photo_model(tmp_path / "m.onnx"), threads=1)
    for roi in ("full", "center:0.7", "100,50,300,200", "0.1,0.1,0.5,0.9"):
        r = FrameRunner(clf, roi)
        r.preprocess(frame)
        assert np.array_equal(r.x, preprocess([frame], clf.meta, roi)), roi


def _video(path: Path, frame: np.ndarray, n: int = 6) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for _ in range(n):
        w.write(frame)
    w.release()
    return path


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])["summary"]


def test_camera_roi_default_from_metadata_option_and_guide_box(tmp_path, frame):
    video = _video(tmp_path / "clip.mp4", frame)
    model = tiny_photo_model(tmp_path / "m.onnx", roi="center:0.5")
    old = tiny_photo_model(tmp_path / "old.onnx", drop_roi_key=True)
    assert Classifier(old).meta.roi == "full"
    base = ("camera", "--source", video, "--headless", "--json", "--threads", "1")
    assert _summary(run_cli(*base, "--model", model).stdout)["roi"] == "center:0.5"
    assert _summary(run_cli(*base, "--model", old).stdout)["roi"] == "full"
    rec = tmp_path / "rec.mp4"
    s = _summary(run_cli(*base, "--model", model, "--roi", "0,0,320,240", "--record", rec).stdout)
    assert s["roi"] == "0,0,320,240" and s["frames"] == 6
    # The guide box's corner brackets are drawn at the ROI's bottom-right corner (319, 239), in colour.
    cap = cv2.VideoCapture(str(rec))
    ok, shown = cap.read()
    assert ok
    patch = shown[230:240, 300:320].astype(int)
    assert (patch[..., 1] > 150).any() and (np.abs(patch[..., 1] - patch[..., 0]) > 60).any()
    p = run_cli(*base, "--model", model, "--roi", "center:3", check=False)
    assert p.returncode == 1 and "center:3" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_camera_threshold_and_smoothing_defaults_from_metadata_and_options(tmp_path, frame):
    video = _video(tmp_path / "clip.mp4", frame)
    sure = tiny_photo_model(tmp_path / "t0.onnx", threshold=0.0)  # never uncertain
    unsure = tiny_photo_model(tmp_path / "t1.onnx", threshold=1.0)  # always uncertain (10 classes: p < 1)
    assert Classifier(tiny_photo_model(tmp_path / "plain.onnx")).meta.threshold == 0.5  # older files
    base = ("camera", "--source", video, "--headless", "--json", "--threads", "1")
    s0, s1 = _summary(run_cli(*base, "--model", sure).stdout), _summary(run_cli(*base, "--model", unsure).stdout)
    assert (s0["threshold"], s0["uncertain_frames"]) == (0.0, 0)
    assert (s1["threshold"], s1["uncertain_frames"]) == (1.0, 6)
    s = _summary(run_cli(*base, "--model", unsure, "--threshold", "0").stdout)
    assert (s["threshold"], s["uncertain_frames"]) == (0.0, 0)
    assert "the top probability is below 1 " in run_cli("inspect", unsure).stdout
    with pytest.raises(MetaError, match="threshold"):
        photo_meta("x", LABELS, 32).replace(threshold=1.5)
    # The smoothing likewise: the file's own, else 0.5; --smooth overrides it.
    assert s0["smooth"] == 0.5
    raw = tiny_photo_model(tmp_path / "s1.onnx", smooth=1.0)
    assert _summary(run_cli(*base, "--model", raw).stdout)["smooth"] == 1.0
    assert _summary(run_cli(*base, "--model", raw, "--smooth", "0.3").stdout)["smooth"] == 0.3
    assert "smoothing 1," in run_cli("inspect", raw).stdout
    with pytest.raises(MetaError, match="smooth"):
        photo_meta("x", LABELS, 32).replace(smooth=0)


def _frame_tops(stdout: str) -> list:
    return [json.loads(line)["top"] for line in stdout.splitlines() if line.startswith('{"frame"')]


def test_camera_temperature_from_metadata_and_options(tmp_path, frame):
    """probabilities = softmax(logits / T): at T = 2 the ratio of two classes' probabilities is the square root
    of the ratio at T = 1; the file's own T unless --temperature overrides it; files without one read as 1."""
    video = _video(tmp_path / "clip.mp4", frame)
    plain = tiny_photo_model(tmp_path / "plain.onnx", smooth=1.0)
    hot = tiny_photo_model(tmp_path / "hot.onnx", smooth=1.0, temperature=2.0)
    base = ("camera", "--source", video, "--headless", "--json", "--threads", "1", "--threshold", "0")
    p1, p2 = run_cli(*base, "--model", plain).stdout, run_cli(*base, "--model", hot).stdout
    assert _summary(p1)["temperature"] == 1.0 and _summary(p2)["temperature"] == 2.0
    for a, b in zip(_frame_tops(p1), _frame_tops(p2)):
        assert [x["label"] for x in a] == [x["label"] for x in b]  # the order never changes
        assert b[0]["prob"] < a[0]["prob"]
        assert b[0]["prob"] / b[1]["prob"] == pytest.approx((a[0]["prob"] / a[1]["prob"]) ** 0.5, rel=2e-3)
    p3 = run_cli(*base, "--model", hot, "--temperature", "1").stdout
    assert _summary(p3)["temperature"] == 1.0 and _frame_tops(p3) == _frame_tops(p1)
    assert "temperature 2," in run_cli("inspect", hot).stdout
    bad = run_cli(*base, "--model", hot, "--temperature", "0", check=False)
    assert bad.returncode != 0 and "--temperature" in bad.stderr
    with pytest.raises(MetaError, match="temperature"):
        photo_meta("x", LABELS, 32).replace(temperature=-1)


def test_smoother_background_logit_is_the_energy_rule():
    """With a background logit b: P(garment) = sigmoid(logsumexp(logits / T) - b), the shown probabilities are
    the garment classes' own softmax at T = 1 (they sum to 1 and keep softmax(logits / T)'s order: a calibrated
    T of 16 would show every class near 1/K), and 'uncertain' follows P(garment), not the top class; the EMA
    runs over all K + 1 entries."""
    from edgefashion.runtime.camera import Smoother, decide
    logits = np.array([2.0, 1.5, 1.4, -1.0], np.float32)
    for T, b in ((1.0, 0.0), (4.0, 2.3)):
        s = Smoother(4, 1.0, T, b)
        s.update(logits)
        lse = np.log(np.exp(logits / T).sum())
        assert s.garment == pytest.approx(1 / (1 + np.exp(-(lse - b))), rel=1e-5)
        ref = np.exp(logits) / np.exp(logits).sum()
        np.testing.assert_allclose(s.ema, ref, rtol=1e-5)
        assert list(np.argsort(-s.ema)) == list(np.argsort(-(logits / T)))
        assert int(np.argmax(s.probs)) == 0
    # A flat frame (a wall): the top class is unsure at T=1, yet P(garment) may be high; the rule decides.
    s = Smoother(4, 1.0, 1.0, -5.0)
    s.update(np.zeros(4, np.float32))
    assert s.ema.max() == pytest.approx(0.25) and s.garment > 0.99
    assert decide(s.ema, 3, 0.5, s.garment).unsure is False and decide(s.ema, 3, 0.5).unsure is True
    # Smoothing averages 'nothing there' too: after a garment frame, an empty one halves P(garment) at alpha 0.5.
    s = Smoother(2, 0.5, 1.0, 0.0)
    s.update(np.array([20.0, 0.0], np.float32))
    s.update(np.array([-20.0, -20.0], np.float32))
    assert s.garment == pytest.approx(0.5, abs=1e-4) and s.ema.sum() == pytest.approx(1.0)
    assert s.ema[0] == pytest.approx(0.75, abs=1e-4)  # shown classes smoothed too: (1 + 1/2) / 2
    # Without one, nothing changes: ema is the softmax, garment None.
    s = Smoother(4, 1.0, 1.0)
    s.update(logits)
    assert s.garment is None and s.ema.sum() == pytest.approx(1.0)


def test_smoother_reads_a_garment_head_instead_of_the_energy():
    """A file with a garment head: P(garment) = sigmoid(g - b), whatever T; the shown classes are still their
    own softmax; smoothing averages 'nothing there' as before; without a background logit g is ignored."""
    from edgefashion.runtime.camera import Smoother, decide
    logits = np.array([2.0, 1.5, 1.4, -1.0], np.float32)
    for T in (1.0, 16.0):
        s = Smoother(4, 1.0, T, 0.7)
        s.update(logits, -1.3)
        assert s.garment == pytest.approx(1 / (1 + np.exp(2.0)), rel=1e-5)
        np.testing.assert_allclose(s.ema, np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)
        assert decide(s.ema, 3, 0.5, s.garment).unsure is True
    s = Smoother(4, 0.5, 16.0, 0.0)
    s.update(logits, 50.0)
    s.update(logits, -50.0)
    assert s.garment == pytest.approx(0.5, abs=1e-4)
    assert Smoother(4, 1.0, 1.0, 0.0).garment == 1.0
    s = Smoother(4, 1.0, 1.0)
    s.update(logits, -50.0)
    assert s.garment is None and int(np.argmax(s.ema)) == 0


def test_camera_background_logit_from_metadata_and_options(tmp_path, frame):
    """The file's own background logit unless --background-logit overrides it (none: the top-probability rule);
    JSON lines carry "garment"; a threshold t at b = 0 makes the same decisions as b = logit(t) at 0.5 (the
    folding benchmarks/camera/run.py --calibrate does); metadata format 2 only where the field is set."""
    video = tmp_path / "varied.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for k in range(8):  # frames that differ, so that some are sure and some not
        w.write(np.roll(frame, 40 * k, axis=1) // (1 + k % 3))
    w.release()
    plain = tiny_photo_model(tmp_path / "plain.onnx", smooth=1.0)
    energy = tiny_photo_model(tmp_path / "energy.onnx", smooth=1.0, background_logit=0.0)
    assert Classifier(plain).meta.background_logit is None
    base = ("camera", "--source", video, "--headless", "--json", "--threads", "1")

    def lines(stdout):
        return [json.loads(x) for x in stdout.splitlines() if x.startswith('{"frame"')]
    out = run_cli(*base, "--model", energy, "--threshold", "0").stdout
    g = [f["garment"] for f in lines(out)]
    assert _summary(out)["background_logit"] == 0.0 and all(0 < x < 1 for x in g)
    assert "garment" not in lines(run_cli(*base, "--model", plain, "--threshold", "0").stdout)[0]
    none = run_cli(*base, "--model", energy, "--background-logit", "none", "--threshold", "0").stdout
    assert _summary(none)["background_logit"] is None and "garment" not in lines(none)[0]
    gs = sorted(g)
    t = (gs[3] + gs[4]) / 2  # half the frames either side
    a = lines(run_cli(*base, "--model", energy, "--threshold", str(t)).stdout)
    b = lines(run_cli(*base, "--model", plain, "--background-logit", str(np.log(t / (1 - t))),
                      "--threshold", "0.5").stdout)
    assert [f["uncertain"] for f in a] == [f["uncertain"] for f in b]
    assert 0 < sum(f["uncertain"] for f in a) < len(a)
    assert "background logit 0 is below" in run_cli("inspect", energy).stdout
    bad = run_cli(*base, "--model", energy, "--background-logit", "lots", check=False)
    assert bad.returncode != 0 and "--background-logit" in bad.stderr
    assert photo_meta("x", LABELS, 32).to_dict()["format_version"] == 1
    assert photo_meta("x", LABELS, 32).replace(background_logit=1.0).to_dict()["format_version"] == 2
    with pytest.raises(MetaError, match="background_logit"):
        photo_meta("x", LABELS, 32).replace(background_logit=float("nan"))


def test_predict_and_eval_accept_roi(tmp_path, frame):
    model = tiny_photo_model(tmp_path / "m.onnx")
    img = tmp_path / "scene.png"
    cv2.imwrite(str(img), frame)
    crop = tmp_path / "crop.png"
    cv2.imwrite(str(crop), frame[120:360, 200:440])
    a = json.loads(run_cli("predict", img, "--model", model, "--json", "--roi", "center:0.5").stdout)
    b = json.loads(run_cli("predict", crop, "--model", model, "--json").stdout)
    assert a["top"] == b["top"]
    full = json.loads(run_cli("predict", img, "--model", model, "--json").stdout)
    assert full["top"] != a["top"]
    # eval on a class folder: the roi is applied to every image and reported
    for c in ("hat", "pants"):
        (tmp_path / "set" / c).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "set" / c / "a.png"), frame)
    r = json.loads(run_cli("eval", "--model", model, "--data", tmp_path / "set", "--split", "all", "--json",
                           "--roi", "center:0.5").stdout)
    assert r["roi"] == "center:0.5" and r["images"] == 2
    p = run_cli("predict", img, "--model", model, "--roi", "900,900,10,10", check=False)
    assert p.returncode == 1 and "outside the 640x480 frame" in p.stderr


def test_camera_source_without_a_readable_frame_fails_naming_it(tmp_path):
    model = tiny_photo_model(tmp_path / "m.onnx")
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"not a jpeg")
    (bad / "b.png").write_bytes(b"\x89PNG nope")
    p = run_cli("camera", "--model", model, "--source", bad, "--headless", check=False)
    assert p.returncode == 1, p.stdout
    last = p.stderr.strip().splitlines()[-1]
    assert str(bad) in last and "0 frames" in last and "none of its 2 image(s) could be read" in last
    assert "Traceback" not in p.stderr and "0 frames in" not in p.stdout


# --- roi auto: a model with a garment locator (a second output, `box`) -----------------------------------------

def test_roi_auto_parse_and_located_crop():
    r = Roi.parse("auto")
    assert r.locates and not r.is_full and r.margin == LOCATE_MARGIN and str(r) == "auto"
    assert Roi.parse("auto:1.5").margin == 1.5 and Roi.parse("AUTO:1.5").spec == "auto:1.5"
    assert r.box(480, 640) == (0, 0, 640, 480)  # the first pass sees the whole frame
    for bad in ("auto:0.5", "auto:4", "auto:x"):
        with pytest.raises(ValueError, match="auto:M"):
            Roi.parse(bad)
    meta = photo_meta("x", LABELS, 32)  # center_crop: the model's view of 640x480 is the centred 480 square
    assert view_box(480, 640, meta) == (80, 0, 480, 480)
    # A garment box at the view's centre, half its size: a 264 px square (margin 1.1) around (320, 240).
    assert located_crop(480, 640, meta, (0.5, 0.5, 0.5, 0.25), 1.1) == (188, 108, 452, 372)
    # Clipped to the frame; the view itself when the box is degenerate or not a number.
    assert located_crop(480, 640, meta, (0.0, 0.0, 0.5, 0.5), 1.0) == (0, 0, 200, 120)
    assert located_crop(480, 640, meta, (0.5, 0.5, 0.001, 0.001), 1.1) == (80, 0, 560, 480)
    assert located_crop(480, 640, meta, (np.nan, 0.5, 0.5, 0.5), 1.1) == (80, 0, 560, 480)


def test_roi_auto_classifies_frame_and_located_square(tmp_path, frame):
    """The camera's two passes (frame, then the square around the box the model gives) match the Classifier's
    located_logits, which predict and eval use; the guide box follows the garment."""
    box = (0.25, 0.75, 0.4, 0.3)
    clf = Classifier(tiny_photo_model(tmp_path / "loc.onnx", roi="auto", box=box), threads=1)
    assert clf.locates and clf.meta.roi == "auto"
    x0, y0, x1, y1 = located_crop(480, 640, clf.meta, box, LOCATE_MARGIN)
    mirrored = np.ascontiguousarray(preprocess([frame[y0:y1, x0:x1]], clf.meta)[..., ::-1])
    want = (clf.logits(preprocess([frame], clf.meta)) + clf.logits(mirrored)) / 2
    np.testing.assert_allclose(clf.located_logits([frame], LOCATE_MARGIN), want, rtol=1e-5, atol=1e-5)
    r = FrameRunner(clf, "auto")
    r.preprocess(frame)
    np.testing.assert_allclose(r.infer()[None], want, rtol=1e-5, atol=1e-5)
    assert r.located_box == (x0, y0, x1, y1)
    r.preprocess(frame)  # a second frame: the first pass still sees the whole frame
    np.testing.assert_allclose(r.infer()[None], want, rtol=1e-5, atol=1e-5)
    top = clf.predict_images([frame], roi="auto")[0]
    assert top.index == int(want.argmax())
    video = _video(tmp_path / "clip.mp4", frame)
    base = ("camera", "--source", video, "--headless", "--json", "--threads", "1")
    assert _summary(run_cli(*base, "--model", clf.path).stdout)["roi"] == "auto"
    # A model without a locator cannot take roi auto: a one-line error naming the file.
    plain = tiny_photo_model(tmp_path / "plain.onnx")
    for cmd in (("camera", "--source", video, "--headless", "--json", "--model", plain, "--roi", "auto"),
                ("predict", str(tmp_path / "frame.png"), "--model", plain, "--roi", "auto")):
        cv2.imwrite(str(tmp_path / "frame.png"), frame)
        p = run_cli(*cmd, check=False)
        assert p.returncode == 1 and "garment locator" in p.stderr and str(plain) in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


# --- roi flip: the image and its mirror image; a file's photo default (photo_roi) ---------------------------------

def test_roi_flip_averages_the_image_and_its_mirror_everywhere(tmp_path, frame):
    """predict, eval and the camera's FrameRunner give the same flip logits: the mean of the whole image's and
    its mirror image's."""
    r = Roi.parse("FLIP")
    assert r.mirrors and not r.is_full and not r.locates and str(r) == "flip" and r.box(480, 640) == (0, 0, 640, 480)
    assert not r.crops and not Roi.parse("auto").crops and Roi.parse("center:0.5").crops and Roi.parse("1,2,3,4").crops
    clf = Classifier(tiny_photo_model(tmp_path / "m.onnx"), threads=1)
    x = preprocess([frame], clf.meta)
    want = (clf.logits(x) + clf.logits(np.ascontiguousarray(x[..., ::-1]))) / 2
    assert not np.allclose(want, clf.logits(x), atol=1e-4)  # the mirror view changes the answer: not a no-op
    np.testing.assert_allclose(clf.flipped_logits(x), want, rtol=1e-6, atol=1e-6)
    runner = FrameRunner(clf, "flip")
    for _ in range(2):  # the second frame starts from the unmirrored frame again
        runner.preprocess(frame)
        np.testing.assert_allclose(runner.infer()[None], want, rtol=1e-5, atol=1e-5)
    assert clf.predict_images([frame], roi="flip")[0].index == int(want.argmax())


def test_photo_roi_is_predict_and_evals_default(tmp_path, frame):
    """A file's photo_roi (export --photo-roi) is what predict and eval use without --roi; the camera keeps its
    own roi; other files see the whole image."""
    img = tmp_path / "scene.png"
    cv2.imwrite(str(img), frame)
    for c in ("hat", "pants"):
        (tmp_path / "set" / c).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "set" / c / "a.png"), frame)
    flip = tiny_photo_model(tmp_path / "flip.onnx", photo_roi="flip", roi="center:0.7")
    plain = tiny_photo_model(tmp_path / "plain.onnx", roi="center:0.7")
    assert Classifier(flip).meta.photo_roi == "flip" and Classifier(plain).meta.photo_roi == "full"
    for model, want in ((flip, "flip"), (plain, "full")):
        ev = json.loads(run_cli("eval", "--model", model, "--data", tmp_path / "set", "--split", "all",
                                "--json").stdout)
        assert ev["roi"] == want
    got = json.loads(run_cli("predict", img, "--model", flip, "--json").stdout)
    explicit = json.loads(run_cli("predict", img, "--model", flip, "--json", "--roi", "flip").stdout)
    assert got["top"] == explicit["top"]
    assert "photos: roi flip" in run_cli("inspect", flip).stdout
    video = _video(tmp_path / "clip.mp4", frame)
    assert _summary(run_cli("camera", "--source", video, "--headless", "--json", "--model", flip).stdout)["roi"] \
        == "center:0.7"
    with pytest.raises(MetaError, match="photo_roi"):
        Classifier(flip).meta.replace(photo_roi="center:2")
