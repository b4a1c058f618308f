"""Quantization-aware training: `train --qat --init-weights` on real photos, a checkpoint that rebuilds its
fake-quant model alone, and `export` writing the INT8 file from that fake quantization (weights stored as int8)."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch.ao.quantization import FakeQuantize

from conftest import run_cli
from edgefashion.training import export as ex
from edgefashion.training import qat
from edgefashion.training.train import TrainConfig, fit, load_checkpoint, model_from_checkpoint
from edgefashion.training.zoo import create_model


def _quiet(*a, **k):
    pass


@pytest.mark.parametrize("name", ["mobilenetv3-small", "resnet10"])
def test_fold_bn_keeps_the_outputs(name):
    """timm's BatchNormAct2d (MobileNetV3) and plain BatchNorm2d (resnet10): folded into the convolution before
    them, the model computes the same function (eval statistics) with no BatchNorm left."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, img_size=64)
    for m in model.modules():  # statistics other than the init's 0/1, so that folding has something to do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        folded = qat.fold_bn(model)
        out = folded(x)
    assert torch.allclose(ref, out, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory, shared_data):
    """mobilenetv3-small: 1 epoch on 300 photos per split, then 2 QAT epochs from it."""
    root = tmp_path_factory.mktemp("qat")
    base = dict(model="mobilenetv3-small", data="clothing-small", data_dir=str(shared_data), img_size=64,
                limit=300, batch_size=64)
    fit(TrainConfig(**base, epochs=1), root / "float", progress=False, log=_quiet)
    fit(TrainConfig(**base, epochs=2, lr=1e-4, qat=True, init_weights=str(root / "float" / "best.pt")),
        root / "qat", progress=False, log=_quiet)
    return root


def test_qat_checkpoint_rebuilds_its_fake_quant_model(qat_run):
    ckpt = load_checkpoint(qat_run / "qat" / "last.pt")
    assert ckpt["config"]["qat"] is True
    flags = [v for k, v in ckpt["state_dict"].items() if k.endswith("observer_enabled")]
    assert flags and all(int(v) == 0 for v in flags)  # training froze the ranges for its second half
    model, meta = model_from_checkpoint(ckpt)
    fq = [m for m in model.modules() if isinstance(m, FakeQuantize)]
    assert fq and all(int(m.observer_enabled) == 0 for m in fq)
    assert all(int(m.fake_quant_enabled) == 1 for m in fq)
    # The rebuilt model is for running: a forward pass leaves its ranges as the checkpoint has them.
    scales = [m.scale.clone() for m in fq]
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64) * 10)
    assert all(torch.equal(a, m.scale) for a, m in zip(scales, fq))
    weights = [m for m in fq if m.quant_min == qat.WEIGHT_QMIN]
    assert weights and all(m.quant_max == qat.WEIGHT_QMAX for m in weights)  # 7-bit weights
    results = json.loads((qat_run / "qat" / "results.json").read_text())
    assert 0 < results["test_accuracy"] <= 1


def test_export_writes_the_int8_file_from_the_fake_quantization(qat_run, tmp_path):
    out = tmp_path / "export"
    r = ex.export_checkpoint(qat_run / "qat", out, max_drop=100, latency_runs=5, parity_images=64, cpu_check=False,
                             log=_quiet)
    assert r.int8["method"] == "qat" and r.int8["format"] == "QDQ"
    assert "quantization-aware training" in (out / "report.md").read_text().split("Quantization:")[1].split("\n")[0]
    m = onnx.load(str(out / "model.int8.onnx"))
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [t for t in m.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) >= 50  # every convolution's weight, stored as int8
    for t in int8_weights:  # 7-bit values
        v = onnx.numpy_helper.to_array(t)
        assert v.min() >= -64 and v.max() <= 63
    assert r.int8["size_bytes"] < 0.4 * r.fp32["size_bytes"]
    # The folded weights compute exactly what the exporter's float weights + QuantizeLinear computed.
    model, meta = model_from_checkpoint(load_checkpoint(qat_run / "qat" / "best.pt"))
    unfolded = tmp_path / "unfolded.onnx"
    ex.export_onnx(qat.for_export(model), meta, unfolded)
    x = np.random.default_rng(0).standard_normal((8, 3, 64, 64)).astype(np.float32)
    a = ort.InferenceSession(str(unfolded), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    b = ort.InferenceSession(str(out / "model.int8.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.array_equal(a, b)
    # The FP32 file is the float twin of the fine-tuned weights, checked for parity as every FP32 file is.
    assert r.parity["top1_agreement"] >= 0.999


def test_train_qat_needs_a_trained_model(tmp_path):
    p = run_cli("train", "--model", "mobilenetv3-small", "--data", "clothing-small", "--qat", "--out",
                tmp_path / "x", check=False)
    assert p.returncode != 0 and "--init-weights" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
