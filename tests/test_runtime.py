"""The torch-free runtime commands: predict, eval, camera, default model lookup.

Models are built once per session with the real training and export code, on small real-data subsets."""
import http.server
import json
import os
import shutil
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, data_root, run_cli
from edgefashion.runtime import models as rtmodels
from edgefashion.runtime.camera import FrameRunner
from edgefashion.runtime.classifier import Classifier
from edgefashion.runtime.evaluate import match_labels
from edgefashion.runtime.preprocess import preprocess
from edgefashion.runtime.sources import LatestFrame

FAST = dict(quantize="int8", calib_size=32, max_drop=100.0, allow_drop=True, parity_images=32,
            calib_methods=("minmax",), per_channel=(True,), latency_runs=5, cpu_check=False, log=lambda *a: None)


def _build(tmp_path_factory, shared_data, name, **cfg):
    from edgefashion.training.export import export_checkpoint
    from edgefashion.training.train import TrainConfig, fit
    base = tmp_path_factory.mktemp(name)
    fit(TrainConfig(data_dir=str(shared_data), epochs=1, batch_size=64, **cfg), base / "run", progress=False,
        log=lambda *a: None)
    export_checkpoint(base / "run", base / "export", **FAST)
    return base / "export" / "model.int8.onnx"


@pytest.fixture(scope="session")
def fm_model(tmp_path_factory, shared_data):
    """cnn4 on 2,000 Fashion-MNIST images, 1 epoch, INT8."""
    return _build(tmp_path_factory, shared_data, "fm", model="cnn4", data="fashion-mnist", limit=2000)


@pytest.fixture(scope="session")
def photo_model(tmp_path_factory, shared_data):
    """cnn4 on 300 clothing-small photos at 32 px, RGB, 1 epoch, INT8: a photo-domain model in seconds."""
    return _build(tmp_path_factory, shared_data, "photo", model="cnn4", data="clothing-small", img_size=32,
                  in_chans=3, limit=300)


@pytest.fixture(scope="session")
def test_photos(shared_data):
    root = shared_data / "clothing-small" / "test"
    return {c.name: sorted(c.glob("*.jpg"))[:6] for c in sorted(root.iterdir()) if c.is_dir()}


@pytest.fixture(scope="session")
def video(tmp_path_factory, test_photos):
    """A 640x480, 60-frame mp4 made from real test photos on a light background."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    assert w.isOpened()
    photos = [p for ps in test_photos.values() for p in ps[:1]]
    for i in range(60):
        f = np.full((480, 640, 3), 225, np.uint8)
        img = cv2.resize(cv2.imread(str(photos[i // 6 % len(photos)])), (360, 360))
        f[60:420, 140 + i % 6:500 + i % 6] = img
        w.write(f)
    w.release()
    return path


def _lines(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


# --- default model --------------------------------------------------------------------------------------------

def test_default_model_lookup(tmp_path, fm_model):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(rtmodels.NoModelError, match="no bundled model found; pass --model PATH or run `edgefashion export`"):
        rtmodels.default_model("photo", dirs=[empty, tmp_path / "missing"])
    one = tmp_path / "one"
    (one / "cnn4-fashion-mnist").mkdir(parents=True)
    shutil.copy(fm_model, one / "cnn4-fashion-mnist" / "model.int8.onnx")
    assert rtmodels.default_model("photo", dirs=[empty, one]).parent.name == "cnn4-fashion-mnist"
    (one / "b").mkdir()
    shutil.copy(fm_model, one / "b" / "model.int8.onnx")
    with pytest.raises(rtmodels.NoModelError, match="several models"):
        rtmodels.default_model("photo", dirs=[one])
    (one / "default.json").write_text(json.dumps({"fashion-mnist": "b/model.int8.onnx"}))
    assert rtmodels.default_model("fashion-mnist", dirs=[one]).parent.name == "b"
    with pytest.raises(rtmodels.NoModelError):  # default.json names no photo model: not a guess
        rtmodels.default_model("photo", dirs=[one])
    (one / "default.json").write_text(json.dumps({"photo": "nope/model.int8.onnx"}))
    with pytest.raises(rtmodels.NoModelError, match="does not exist"):
        rtmodels.default_model("photo", dirs=[one])
    assert rtmodels.model_dirs()[0] == REPO / "export"


def test_commands_without_model_use_bundled_default_or_say_so(test_photos):
    try:
        rtmodels.default_model("photo")
    except rtmodels.NoModelError:
        p = run_cli("predict", test_photos["pants"][0], check=False)
        assert p.returncode == 1
        assert "no bundled model found; pass --model PATH or run `edgefashion export`" in p.stderr
    else:
        run_cli("predict", test_photos["pants"][0])


# --- predict --------------------------------------------------------------------------------------------------

def test_predict_lines_json_and_a_corrupt_image(tmp_path, photo_model, test_photos):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = [test_photos["pants"][0], test_photos["hat"][0]]
    p = run_cli("predict", good[0], bad, good[1], "--model", photo_model, "--json", "--top-k", "2", check=False)
    assert p.returncode == 1
    rows = _lines(p.stdout)
    assert [r["image"] for r in rows] == [str(good[0]), str(bad), str(good[1])]
    assert "error" in rows[1] and "broken.jpg" in rows[1]["error"]
    for r in (rows[0], rows[2]):
        assert len(r["top"]) == 2 and r["label"] == r["top"][0]["label"] and 0 <= r["prob"] <= 1
        assert r["label"] in Classifier(photo_model).labels
    assert "broken.jpg" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = run_cli("predict", *good, "--model", photo_model)
    assert [line.split(":")[0] for line in p.stdout.splitlines()] == [str(g) for g in good]


def test_model_without_metadata_is_refused(tmp_path, fm_model, test_photos):
    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(fm_model))
    del m.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(m, str(bare))
    for args in (["predict", test_photos["pants"][0]], ["eval", "--data", "fashion-mnist", "--limit", "10"],
                 ["camera", "--source", "demo", "--headless", "--max-frames", "1"]):
        p = run_cli(*args, "--model", bare, check=False)
        assert p.returncode == 1 and "no edgefashion metadata" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


# --- eval -----------------------------------------------------------------------------------------------------

def test_eval_fashion_mnist_subset(tmp_path, fm_model, shared_data):
    png = tmp_path / "cm.png"
    p = run_cli("eval", "--model", fm_model, "--data", "fashion-mnist", "--limit", "500", "--json", "--plot", png,
                "--batch-size", "128", "--threads", "1")
    r = json.loads(p.stdout)
    assert r["images"] == 500 and 0.5 < r["accuracy"] <= 1
    cm = np.asarray(r["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 500 and np.trace(cm) / 500 == pytest.approx(r["accuracy"])
    assert set(r["per_class_accuracy"]) == set(Classifier(fm_model).labels)
    assert r["images_per_s"] > 0 and cv2.imread(str(png)) is not None
    # the same answer as classifying the same images directly
    from edgefashion.data import load_fashion_mnist, stratified_split
    x, y = load_fashion_mnist(shared_data, download=False)["test"]
    _, idx = stratified_split(y, 500 / len(y), 0)
    clf = Classifier(fm_model)
    pred = clf.logits(preprocess(list(x[idx]), clf.meta)).argmax(1)
    assert np.mean(pred == y[idx]) == pytest.approx(r["accuracy"])
    text = run_cli("eval", "--model", fm_model, "--data", "fashion-mnist", "--limit", "100").stdout
    assert "accuracy" in text and "images/s" in text


def test_eval_folder_matches_classes_by_name(tmp_path, photo_model, test_photos):
    # An unsplit folder with three of the ten classes, renamed in case/punctuation, so positions differ.
    folder = tmp_path / "mine"
    names = {"Pants": "pants", "T_Shirt": "t-shirt", "shoes": "shoes"}
    for new, old in names.items():
        (folder / new).mkdir(parents=True)
        for f in test_photos[old]:
            shutil.copy(f, folder / new / f.name)
    p = run_cli("eval", "--model", photo_model, "--data", folder, "--split", "all", "--json")
    r = json.loads(p.stdout)
    assert r["images"] == 18
    clf = Classifier(photo_model)
    truth, preds = [], []
    for old in names.values():
        for pred in clf.predict_images([cv2.imread(str(f)) for f in test_photos[old]]):
            truth.append(old)
            preds.append(pred.label)
    assert r["accuracy"] == pytest.approx(np.mean(np.asarray(truth) == np.asarray(preds)))
    assert r["per_class_accuracy"]["dress"] is None and r["per_class_accuracy"]["pants"] is not None
    rows = np.asarray(r["confusion_matrix"]).sum(1)
    assert {clf.labels[i] for i in np.flatnonzero(rows)} == set(names.values())
    # a class the model does not know is a clear error
    (folder / "socks").mkdir()
    shutil.copy(test_photos["hat"][0], folder / "socks" / "a.jpg")
    p = run_cli("eval", "--model", photo_model, "--data", folder, "--split", "all", check=False)
    assert p.returncode == 1 and "'socks' not among the model's labels" in p.stderr


def test_eval_photo_split_and_match_labels_rules(photo_model):
    r = json.loads(run_cli("eval", "--model", photo_model, "--data", "clothing-small", "--limit", "60",
                           "--json").stdout)
    assert r["images"] == 60 and r["split"] == "test"
    assert match_labels(["b", "A"], ["a", "b"]) == [1, 0]
    with pytest.raises(Exception, match="'c' not among"):
        match_labels(["c"], ["a", "b"])


# --- camera ---------------------------------------------------------------------------------------------------

FRAME_KEYS = {"frame", "top", "latency_ms"}
STAGES = {"capture", "preprocess", "inference", "total"}


def _check_frames(rows, n, k=3):
    frames, summary = rows[:-1], rows[-1]
    assert [r["frame"] for r in frames] == list(range(n))
    for r in frames:
        assert FRAME_KEYS <= set(r) and set(r["latency_ms"]) == STAGES
        assert len(r["top"]) == k and all(set(t) == {"label", "prob"} for t in r["top"])
        assert r["top"][0]["prob"] >= r["top"][-1]["prob"]
        assert r["label"] in ("uncertain", r["top"][0]["label"])
    s = summary["summary"]
    assert s["frames"] == n and s["fps"] > 0 and set(s["latency_ms"]) == STAGES
    assert all(set(v) >= {"p50", "p95"} for v in s["latency_ms"].values())
    return s


def test_camera_video_file_json_to_the_end(video, photo_model):
    p = run_cli("camera", "--model", photo_model, "--source", video, "--headless", "--json", "--threads", "1")
    s = _check_frames(_lines(p.stdout), 60)
    assert s["stopped"] == "end of stream" and s["source_stats"]["kind"] == "video"
    assert s["peak_rss_mb"] is None or s["peak_rss_mb"] < 400
    p = run_cli("camera", "--model", photo_model, "--source", video, "--headless", "--json", "--max-frames", "7")
    assert _check_frames(_lines(p.stdout), 7)["stopped"] == "max frames"


def test_camera_image_folder_labelled_and_a_bad_file(tmp_path, photo_model, test_photos):
    for c in ("pants", "hat"):
        (tmp_path / c).mkdir()
        for f in test_photos[c][:3]:
            shutil.copy(f, tmp_path / c / f.name)
    (tmp_path / "hat" / "zz-broken.jpg").write_bytes(b"nope")
    rec = tmp_path / "out.mp4"
    p = run_cli("camera", "--model", photo_model, "--source", tmp_path, "--headless", "--json", "--top-k", "2",
                "--record", rec)
    s = _check_frames(_lines(p.stdout), 6, k=2)
    assert s["labelled_frames"] == 6 and 0 <= s["accuracy"] <= 1 and s["smooth"] == 1.0
    assert s["source_stats"]["skipped"] == 1 and "zz-broken.jpg" in p.stderr
    cap = cv2.VideoCapture(str(rec))
    assert cap.isOpened() and cap.read()[0]
    text = run_cli("camera", "--model", photo_model, "--source", tmp_path / "pants", "--headless").stdout
    assert "3 frames" in text and "p95" in text


def test_camera_demo_reports_live_accuracy(fm_model):
    p = run_cli("camera", "--model", fm_model, "--source", "demo", "--headless", "--json", "--max-frames", "40")
    rows = _lines(p.stdout)
    s = _check_frames(rows, 40)
    assert s["labelled_frames"] == 40 and 0 <= s["accuracy"] <= 1 and s["source_stats"]["kind"] == "demo"
    assert all(r["truth"] in Classifier(fm_model).labels for r in rows[:-1])


def test_camera_demo_of_a_photo_model_needs_no_data_and_shows_real_scenes(tmp_path):
    # The bundled photo model with no data folder anywhere: the package's own test photos over held-out scenes.
    from edgefashion.runtime.sources import DEMO_SETS
    env = {"EDGEFASHION_DATA": str(tmp_path / "no-data-here"), "HOME": str(tmp_path)}
    rec = tmp_path / "demo.mp4"
    p = run_cli("camera", "--source", "demo", "--headless", "--json", "--max-frames", "30", "--threads", "1",
                "--record", rec, env=env)
    rows = _lines(p.stdout)
    s = _check_frames(rows, 30)
    stats = s["source_stats"]
    assert stats["kind"] == "demo" and stats["scenes"] == "heldout" and stats["images"] == 50
    assert Path(stats["photos"]) == DEMO_SETS["clothing-small"] and s["labelled_frames"] == 30
    truth = [r["truth"] for r in rows[:-1]]
    assert all(len(set(truth[i:i + 10])) == 1 for i in (0, 10, 20))  # each item is held for 10 frames
    cap = cv2.VideoCapture(str(rec))
    frames = [cap.read()[1] for _ in range(30)]
    # A real scene behind the garment, not a plain wall: the frame's border is textured.
    border = np.concatenate([frames[0][:40].reshape(-1, 3), frames[0][-40:].reshape(-1, 3)]).astype(float)
    assert border.std(0).mean() > 12
    # The hand shakes: consecutive frames of one item differ.
    assert np.abs(frames[1].astype(int) - frames[2].astype(int)).mean() > 1
    photos = sorted(DEMO_SETS["clothing-small"].glob("*/*.jpg"))
    assert len(photos) == 50 and (DEMO_SETS["clothing-small"] / "LICENSE").read_text().startswith("Creative Commons")


def test_camera_missing_source_is_one_clear_line(tmp_path, fm_model):
    for src, words in ((tmp_path / "nope.mp4", "no such file"), ("http://127.0.0.1:9/x.mjpg", "cannot open")):
        p = run_cli("camera", "--model", fm_model, "--source", src, "--headless", check=False,
                    env={"EDGEFASHION_CAMERA_RETRIES": "0"})
        assert p.returncode == 1 and words in p.stderr and str(src) in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    notvideo = tmp_path / "notes.txt"
    notvideo.write_text("hello")
    p = run_cli("camera", "--model", fm_model, "--source", notvideo, "--headless", check=False)
    assert p.returncode == 1 and "cannot open as a video" in p.stderr


def test_frame_runner_matches_the_one_preprocessing(photo_model, fm_model, test_photos):
    frame = cv2.imread(str(test_photos["pants"][0]))
    for model in (photo_model, fm_model):
        clf = Classifier(model, threads=1)
        r = FrameRunner(clf)
        r.preprocess(frame)
        ref = preprocess([frame], clf.meta)
        assert np.array_equal(r.x, ref)
        np.testing.assert_allclose(r.infer(), clf.logits(ref)[0], rtol=0, atol=1e-6)


def test_latest_frame_keeps_only_the_newest():
    box = LatestFrame()
    for i in range(5):
        box.put(np.full(1, i))
    assert box.take()[0] == 4 and box.dropped == 4 and box.captured == 5
    box.fail(RuntimeError("gone"))
    with pytest.raises(RuntimeError, match="gone"):
        box.take()


# --- the live path, for real: an MJPEG stream over HTTP --------------------------------------------------------

class _MJPEG:
    """multipart/x-mixed-replace JPEG frames on 127.0.0.1 at ~50 FPS, until stop()."""

    def __init__(self, jpegs):
        self.jpegs, self.stopping, self.served = jpegs, threading.Event(), 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not outer.stopping.is_set():
                        jpg = outer.jpegs[i % len(outer.jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpg)).encode() + b"\r\n\r\n" + jpg + b"\r\n")
                        outer.served += 1
                        i += 1
                        time.sleep(0.02)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        socketserver.ThreadingTCPServer.daemon_threads = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def test_camera_reads_mjpeg_stream_then_retries_and_gives_up(photo_model, test_photos):
    jpegs = []
    for c in ("pants", "hat", "shoes"):
        f = np.full((480, 640, 3), 230, np.uint8)
        f[60:420, 140:500] = cv2.resize(cv2.imread(str(test_photos[c][0])), (360, 360))
        jpegs.append(cv2.imencode(".jpg", f)[1].tobytes())
    server = _MJPEG(jpegs)
    env = dict(os.environ, EDGEFASHION_DATA=str(data_root()), EDGEFASHION_CAMERA_RETRIES="2",
               EDGEFASHION_CAMERA_RETRY_DELAY="0.2")
    proc = subprocess.Popen([sys.executable, "-m", "edgefashion", "camera", "--model", str(photo_model),
                             "--source", server.url, "--headless", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        rows = []
        deadline = time.time() + 60
        while len(rows) < 15 and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            rows.append(json.loads(line))
        assert len(rows) == 15, proc.stderr.read() if proc.poll() is not None else "stream too slow"
        server.stop()  # mid-stream: the connection closes and reconnects are refused
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stopping.set()
    rows += [json.loads(line) for line in out.splitlines() if line.strip()]
    assert proc.returncode == 1
    s = rows[-1]["summary"]
    assert s["stopped"] == "source failed" and s["frames"] >= 15
    st = s["source_stats"]
    assert st["kind"] == "live" and st["captured"] >= s["frames"] and st["dropped"] == st["captured"] - s["frames"]
    assert [r["frame"] for r in rows[:-1]] == list(range(s["frames"]))
    assert err.count("reconnecting in") == 2 and "(attempt 2/2)" in err
    assert err.strip().splitlines()[-1].startswith("Error: " + server.url)
    assert "giving up" in err.strip().splitlines()[-1]


def test_camera_without_display_says_use_headless(fm_model):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    p = subprocess.run([sys.executable, "-m", "edgefashion", "camera", "--model", str(fm_model), "--source", "demo",
                        "--max-frames", "1"], capture_output=True, text=True, env=env, timeout=60)
    if sys.platform.startswith("linux"):
        assert p.returncode == 1 and "use --headless" in p.stderr
