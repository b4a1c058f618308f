"""The runtime commands without torch: with torch blocked in a subprocess (test_architecture.py), and in a fresh
virtual environment that has only numpy, onnxruntime, OpenCV and click (skipped when it cannot be built)."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO
from edgefashion.meta import fashion_mnist_meta
from edgefashion.runtime.sources import DEMO_SETS


def tiny_runtime_files(folder: Path):
    """A small real ONNX classifier for 1x28x28 input with edgefashion metadata (random weights: these tests
    check imports and plumbing, not accuracy), a 5-frame 640x480 video and two images."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from edgefashion.data import FASHION_MNIST_LABELS
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.05, (784, 10)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(10, np.float32), "B")
    shape = numpy_helper.from_array(np.asarray([-1, 784], np.int64), "S")
    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "S"], ["f"]), helper.make_node("Gemm", ["f", "W", "B"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])], [w, b, shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    helper.set_model_props(m, fashion_mnist_meta("tiny", FASHION_MNIST_LABELS).to_onnx_props())
    model = folder / "tiny.onnx"
    onnx.save(m, str(model))
    # The package's own demo photos (CC0, shipped in the wheel): these plumbing tests then need no data folder.
    photos = sorted((DEMO_SETS["clothing-small"] / "pants").glob("*.jpg"))[:2]
    assert len(photos) == 2, "the package's demo set lost its pants photos"
    video = folder / "clip.mp4"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for i in range(5):
        f = np.full((480, 640, 3), 225, np.uint8)
        f[60:420, 140:500] = cv2.resize(cv2.imread(str(photos[i % 2])), (360, 360))
        vw.write(f)
    vw.release()
    return model, video, photos


RUNTIME_COMMANDS = [
    ["predict", "{photo}", "--model", "{model}", "--json"],
    ["eval", "--model", "{model}", "--data", "fashion-mnist", "--limit", "200", "--json"],
    ["camera", "--model", "{model}", "--source", "{video}", "--headless", "--json", "--max-frames", "5"],
]


def commands(model, video, photos):
    return [[a.format(model=model, video=video, photo=photos[0]) for a in cmd] for cmd in RUNTIME_COMMANDS]


def _venv(tmp: Path) -> Path:
    venv = tmp / "rt"
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(venv / "bin" / "pip"), "install", "-q", "numpy", "onnxruntime", "opencv-python", "click"],
             [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "-e", str(REPO)]]
    for cmd in steps:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            pytest.skip(f"cannot build a runtime-only venv (timed out: {' '.join(cmd[:3])})")
        if p.returncode != 0:
            pytest.skip(f"cannot build a runtime-only venv (offline?): {p.stderr.strip().splitlines()[-1:]}")
    return venv / "bin" / "python"


@pytest.mark.skipif(sys.platform == "win32", reason="venv layout")
def test_runtime_commands_in_a_venv_without_torch(tmp_path, shared_data):
    model, video, photos = tiny_runtime_files(tmp_path)
    py = _venv(tmp_path)
    check = subprocess.run([str(py), "-c", "import importlib.util as u; "
                            "print([m for m in ('torch', 'torchvision', 'timm') if u.find_spec(m)])"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "[]", "the runtime venv must not have torch"
    env = {"PATH": "/usr/bin:/bin", "EDGEFASHION_DATA": str(shared_data), "HOME": os.environ.get("HOME", "/tmp")}
    for cmd in commands(model, video, photos):
        p = subprocess.run([str(py), "-m", "edgefashion", *cmd], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=120)
        assert p.returncode == 0, (cmd, p.stderr)
        assert p.stdout.strip()
    p = subprocess.run([str(py), "-m", "edgefashion", "train"], capture_output=True, text=True, env=env)
    assert p.returncode != 0 and 'pip install "edgefashion[train]"' in p.stderr
