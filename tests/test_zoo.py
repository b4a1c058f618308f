"""Model zoo: registry behaviour, shapes, pinned parameter counts, FLOPs and ONNX export of every model.

Parametrized over ``list_models()``, so a newly registered model is tested automatically, and fails until its
expected parameter counts are added to ``SMALL`` below (counts are pinned so they cannot drift silently).
"""
from __future__ import annotations

import io
import json
import pickle
import warnings

import pytest
import torch
from torch import nn

from edgefashion.training import zoo
from edgefashion.training.zoo import (
    RECIPE_DEFAULTS,
    count_params,
    create_model,
    get_entry,
    list_models,
    model_mflops,
    register_model,
)

# name -> (small test input side, params at 10 classes, params at 7 classes), at the entry's default in_chans.
# Fashion models at 28; photo models at 64, except AlexNet at 67: the smallest input its 11x11/4 conv and three
# 3x3/2 pools leave a 1x1 map for (see test_alexnet_minimum_size).
SMALL = {
    "logreg": (28, 7_850, 5_495),
    "mlp1": (28, 7_960, 7_927),
    "mlp2": (28, 235_146, 234_759),
    "mlp3": (28, 235_146, 234_759),
    "mlp4": (28, 235_146, 234_759),
    "cnn1": (28, 51_898, 51_511),
    "cnn2": (28, 51_898, 51_511),
    "cnn3": (28, 206_410, 206_023),
    "cnn4": (28, 211_690, 211_303),
    "cnn5": (28, 514_250, 513_863),
    "alexnet": (67, 21_622_154, 21_609_863),
    "alexnet-3conv": (64, 3_222_154, 3_221_479),
    "seq5": (64, 1_244_202, 1_243_431),
    "seq6": (64, 13_019_434, 13_016_359),
    "seq5-strided": (64, 6_547_786, 6_543_943),
    "resnet20": (28, 272_186, 271_991),
    "resnet10": (64, 1_228_970, 1_228_199),
    "resnet18": (64, 11_173_962, 11_172_423),
    "mobilenetv3-small": (64, 1_528_106, 1_525_031),
}

# Carousell report models at their default size and 15 classes: (exact count, seed report's figure).
SEED = {
    "alexnet": (58_342_799, 60e6),
    "alexnet-3conv": (8_728_303, 9e6),
    "seq5": (2_031_919, 2e6),
    "seq6": (19_316_015, 20e6),
    "seq5-strided": (14_418_511, 14e6),
}

# ONNX ops an INT8 (QDQ) export handles well; anything else in a graph is a new op to look at deliberately.
ONNX_OPS = {"Conv", "Gemm", "Relu", "MaxPool", "Flatten", "Add", "GlobalAveragePool", "Identity",
            "HardSwish", "HardSigmoid", "Mul", "ReduceMean"}

ALL = list_models()


def _small(name: str) -> int:
    if name not in SMALL:
        pytest.fail(f"new model {name!r}: add its test size and expected parameter counts to SMALL in {__file__}")
    return SMALL[name][0]


# ---------------------------------------------------------------------------------------------------- per model

@pytest.mark.parametrize("name", ALL)
def test_shapes_and_pinned_param_counts(name):
    size = _small(name)
    entry = get_entry(name)
    for num_classes, expected in zip((10, 7), SMALL[name][1:]):
        model = create_model(name, num_classes=num_classes, img_size=size)
        assert isinstance(model, nn.Module)
        assert count_params(model) == expected, f"{name} at {size}px, {num_classes} classes"
        with torch.no_grad():
            out = model(torch.randn(2, entry.in_chans, size, size))
        assert out.shape == (2, num_classes)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_other_channel_count(name):
    """Fashion models take RGB, photo models take grey."""
    entry = get_entry(name)
    size = _small(name)
    in_chans = 3 if entry.in_chans == 1 else 1
    model = create_model(name, num_classes=5, in_chans=in_chans, img_size=size).eval()
    with torch.no_grad():
        assert model(torch.randn(2, in_chans, size, size)).shape == (2, 5)


@pytest.mark.parametrize("name", list_models("photo"))
def test_photo_models_run_at_96(name):
    model = create_model(name, num_classes=4, img_size=96).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 4)


@pytest.mark.parametrize("name", ALL)
def test_mflops_positive_and_plausible(name):
    entry = get_entry(name)
    size = _small(name)
    model = create_model(name, num_classes=10, img_size=size)
    mflops = model_mflops(model, entry.in_chans, size)
    # Every Conv/Linear weight takes part in at least one multiply-accumulate (2 FLOPs) per image, and weights
    # are most of the parameters; a zoo model at a small input stays well under 20 GFLOPs.
    assert 0 < mflops < 20_000
    assert mflops * 1e6 >= 2 * 0.5 * count_params(model)
    assert model.training  # mode restored


@pytest.mark.parametrize("name", ALL)
def test_entry_fields_and_recipe(name):
    entry = get_entry(name)
    assert entry.name == name
    assert entry.domain in zoo.DOMAINS
    if entry.domain == "fashion-mnist":
        assert (entry.in_chans, entry.img_size) == (1, 28)
    else:
        assert entry.in_chans == 3 and entry.img_size >= 64
    assert set(entry.recipe) == set(RECIPE_DEFAULTS)
    assert entry.recipe["optimizer"] in ("adam", "sgd")
    assert entry.recipe["scheduler"] in ("plateau", "cosine", "none")
    assert entry.recipe["augment"] in ("none", "carousell", "resnet", "strong", "camera")
    # The camera domain is for photo models: Fashion-MNIST has no scene to composite onto.
    assert entry.recipe["augment"] != "camera" or entry.domain == "photo"
    assert entry.recipe["lr"] > 0 and entry.recipe["epochs"] > 0 and entry.recipe["batch_size"] > 0
    # The docstring cites the seed report row, like the source field.
    doc = entry.build.__doc__ or ""
    assert entry.source.split(",")[0] in doc and "params at" in doc


@pytest.mark.parametrize("name", ALL)
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
def test_onnx_export_opset17(name):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    entry = get_entry(name)
    size = _small(name)
    model = create_model(name, num_classes=7, img_size=size).eval()
    x = torch.randn(3, entry.in_chans, size, size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load_from_string(buf.getvalue())
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) == 17
    ops = {node.op_type for node in proto.graph.node}
    assert ops <= ONNX_OPS, f"{name}: unexpected ONNX ops {sorted(ops - ONNX_OPS)}"
    assert "BatchNormalization" not in ops  # folded into Conv in eval mode
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(x), rtol=1e-4, atol=1e-4)
    if name == "resnet20":
        assert "GlobalAveragePool" in ops


# ------------------------------------------------------------------------------------------- seed figures, FLOPs

def test_seed_param_counts_at_default_size():
    """Each Carousell model at its default size and 15 classes: exact count, within 15% of the seed figure.
    (Builds the 58M-parameter AlexNet at 227x227 once.)"""
    for name, (exact, seed) in SEED.items():
        entry = get_entry(name)
        params = count_params(create_model(name, num_classes=15))
        assert params == exact, name
        assert abs(params - seed) / seed < 0.15, f"{name}: {params / 1e6:.1f}M vs seed {seed / 1e6:.0f}M"
        del params
    assert get_entry("alexnet").img_size == 227


def test_resnet_param_counts():
    assert abs(count_params(create_model("resnet20", num_classes=10)) - 0.27e6) < 0.01e6
    # timm resnet18 (11,689,512 at 1000 classes) with a 3x3 instead of 7x7 stem conv: -9,408 + 1,728.
    assert count_params(create_model("resnet18", num_classes=1000, img_size=64)) == 11_689_512 - 9_408 + 1_728
    # timm mobilenetv3_small_100 is 2,542,856 at 1000 classes.
    assert count_params(create_model("mobilenetv3-small", num_classes=1000, img_size=64)) == 2_542_856


def test_model_mflops_values():
    # Flatten + Linear(784, 10): one MAC per weight, 2 FLOPs per MAC.
    assert model_mflops(create_model("logreg", num_classes=10), 1, 28) == pytest.approx(2 * 784 * 10 / 1e6)
    # ResNet-20 is ~41M MACs at 32x32 (He et al.); at 28x28 ~31M MACs, i.e. ~62 MFLOPs counting 2 per MAC.
    model = create_model("resnet20", num_classes=10).eval()
    assert 55 < model_mflops(model, 1, 28) < 70
    assert not model.training  # mode restored
    # resnet10's stem has stride 2 above 64 px: 96 px costs about what 48 px would with a stride-1 stem.
    r10 = create_model("resnet10", num_classes=10)
    assert 270 < model_mflops(r10, 3, 96) < 300
    assert model_mflops(create_model("resnet10", num_classes=10, img_size=64), 3, 64) > 2 * model_mflops(r10, 3, 64)
    # MobileNetV3-Small is ~57M MACs at 224; ~19M MACs at 128.
    assert 30 < model_mflops(create_model("mobilenetv3-small", num_classes=10), 3, 128) < 45


def test_alexnet_minimum_size():
    create_model("alexnet", num_classes=3, img_size=67)
    with pytest.raises(ValueError, match="too small"):
        create_model("alexnet", num_classes=3, img_size=66)


# --------------------------------------------------------------------------------------------------- registry

def test_alexnet_3conv_keeps_its_signal_through_the_relu_stack_he_init():
    """Twelve plain ReLU layers: with PyTorch's default init the logits hardly depend on the image (std 1e-5 at
    64 px), with Glorot's (Keras's, the seed's) the activations shrink ~0.7x per ReLU (0.24 -> 0.019) and the
    logits' spread is 0.004; training sat at the majority class from both. He init keeps the activations' scale
    through all nine convolutions."""
    torch.manual_seed(0)
    model = create_model("alexnet-3conv", num_classes=10, img_size=64).eval()
    h, stds = torch.randn(16, 3, 64, 64), []
    with torch.no_grad():
        for layer in model[0]:
            h = layer(h)
            if isinstance(layer, torch.nn.ReLU):
                stds.append(h.std().item())
        logits = model(torch.randn(16, 3, 64, 64))
    assert len(stds) == 9 and min(stds) > 0.5 and max(stds) < 2.0, stds
    assert logits.std(0).mean() > 0.1
    conv = model[0][0]
    assert abs(conv.weight.std().item() / (2 / (conv.in_channels * 25)) ** 0.5 - 1) < 0.1  # He: var 2/fan_in
    assert torch.count_nonzero(conv.bias) == 0
    assert get_entry("alexnet-3conv").recipe["lr"] == 1e-4


def test_list_models():
    assert ALL[:5] == ["logreg", "mlp1", "mlp2", "mlp3", "mlp4"]  # registration (report) order
    assert set(ALL) == set(list_models("fashion-mnist")) | set(list_models("photo"))
    assert "resnet20" in list_models("fashion-mnist") and "resnet18" in list_models("photo")
    assert len(ALL) == len(set(ALL)) == 19
    with pytest.raises(ValueError, match="unknown domain"):
        list_models("cifar")


def test_cli_zoo_lists_every_model_as_json_lines():
    from click.testing import CliRunner
    from edgefashion.cli import cli
    r = CliRunner().invoke(cli, ["zoo", "--domain", "fashion-mnist", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [row["name"] for row in rows] == list_models("fashion-mnist")
    assert all(row["params"] > 0 and row["input"] == "1x28x28" for row in rows)


def test_duplicate_registration_raises():
    before = dict(zoo._REGISTRY)
    with pytest.raises(ValueError, match="already registered"):
        register_model("seq5", in_chans=3, img_size=64, domain="photo", source="test")(lambda **kw: nn.Identity())
    assert zoo._REGISTRY == before


def test_register_validates_domain_and_recipe():
    with pytest.raises(ValueError, match="unknown domain"):
        register_model("x-test", in_chans=3, img_size=64, domain="cifar", source="test")
    with pytest.raises(ValueError, match="unknown recipe keys"):
        register_model("x-test", in_chans=3, img_size=64, domain="photo", source="test", learning_rate=0.1)
    with pytest.raises(ValueError, match="optimizer"):
        register_model("x-test", in_chans=3, img_size=64, domain="photo", source="test", optimizer="rmsprop")
    assert "x-test" not in list_models()


def test_register_and_create_new_model():
    name = "x-test-model"
    try:
        @register_model(name, in_chans=1, img_size=28, domain="fashion-mnist", source="test", lr=0.5)
        def build(in_chans, num_classes, img_size):
            """Test model."""
            return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * img_size * img_size, num_classes))

        assert build.__name__ == "build"  # the decorator returns the builder unchanged
        entry = get_entry(name)
        assert entry.recipe["lr"] == 0.5 and entry.recipe["optimizer"] == RECIPE_DEFAULTS["optimizer"]
        assert count_params(create_model(name, num_classes=3)) == 784 * 3 + 3
        assert count_params(create_model(name, num_classes=3, in_chans=2, img_size=10)) == 200 * 3 + 3
    finally:
        zoo._REGISTRY.pop(name, None)


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError) as info:
        get_entry("resnet-20")
    message = str(info.value)
    assert "unknown model 'resnet-20'" in message and "did you mean 'resnet20'" in message
    assert "choose from:" in message and all(name in message for name in ALL)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create_model("nope", num_classes=10)


def test_pretrained_only_for_timm_models(monkeypatch):
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_model("resnet20", num_classes=10, pretrained=True)
    assert {n for n in ALL if get_entry(n).timm_name} == {"resnet18", "mobilenetv3-small"}
    assert get_entry("resnet18").timm_name == "resnet18"
    assert get_entry("mobilenetv3-small").timm_name == "mobilenetv3_small_100"

    # pretrained=True reaches timm.create_model (stubbed here: no download in tests).
    timm = pytest.importorskip("timm")
    real_create = timm.create_model
    calls = []

    def fake_create(model_name, pretrained=False, **kwargs):
        calls.append((model_name, pretrained, kwargs))
        return real_create(model_name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake_create)
    model = create_model("resnet18", num_classes=7, in_chans=1, img_size=64, pretrained=True)
    assert calls == [("resnet18", True, {"in_chans": 1, "num_classes": 7})]
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.in_channels == 1
    assert isinstance(model.maxpool, nn.Identity)
    create_model("mobilenetv3-small", num_classes=7, pretrained=True)
    assert calls[-1] == ("mobilenetv3_small_100", True, {"in_chans": 3, "num_classes": 7})


def test_create_model_validates_sizes():
    with pytest.raises(ValueError, match="positive"):
        create_model("logreg", num_classes=0)


def test_recipes():
    r = get_entry("resnet20").recipe
    assert (r["optimizer"], r["lr"], r["momentum"], r["nesterov"], r["weight_decay"]) == ("sgd", 0.1, 0.9, True, 5e-4)
    assert (r["epochs"], r["batch_size"], r["scheduler"], r["augment"]) == (60, 128, "cosine", "resnet")
    assert (r["label_smoothing"], r["warmup_epochs"], r["early_stopping"]) == (0.1, 1, False)
    assert get_entry("resnet18").recipe["batch_size"] == 64
    m = get_entry("mobilenetv3-small").recipe
    assert (m["optimizer"], m["lr"], m["warmup_epochs"], m["scheduler"]) == ("adam", 2e-3, 2, "cosine")
    assert get_entry("mlp4").recipe["early_stopping"] and not get_entry("mlp2").recipe["early_stopping"]
    assert (get_entry("logreg").recipe["optimizer"], get_entry("logreg").recipe["lr"]) == ("sgd", 0.1)
    assert get_entry("cnn2").recipe["optimizer"] == "sgd" and get_entry("cnn1").recipe["optimizer"] == "adam"
    for name in list_models("fashion-mnist"):
        if name != "resnet20":
            assert get_entry(name).recipe["batch_size"] == 32
    for name in SEED:
        r = get_entry(name).recipe
        assert (r["augment"], r["patience"], r["early_stopping"], r["scheduler"]) == ("carousell", 5, True, "plateau")


def test_recipe_read_only_but_serialisable():
    recipe = get_entry("seq5").recipe
    with pytest.raises(TypeError):
        recipe["lr"] = 1.0
    with pytest.raises(TypeError):
        recipe.update(lr=1.0)
    assert get_entry("seq5").recipe["lr"] == 1e-3
    assert json.loads(json.dumps(recipe)) == dict(recipe)
    copy = pickle.loads(pickle.dumps(recipe))
    assert copy == dict(recipe) and type(copy) is dict
    assert {**recipe, "lr": 0.5}["lr"] == 0.5
    hash(get_entry("seq5"))  # the frozen entry stays hashable
