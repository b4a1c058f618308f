"""The model zoo: every network edgefashion can train, with its defaults kept as data.

A plain dict registry in the style of torchvision's ``models/_api.py`` (a decorator that refuses duplicate
names) where each entry carries its defaults like a timm ``PretrainedCfg``: input size, channels, domain, the
row of the seed report it reproduces, and a training recipe. Nothing happens at import time beyond filling the
registry; timm is imported only when a timm-backed model is built.

Every network is made of ONNX-opset-17, INT8-quantisation-friendly layers (Conv/BatchNorm/ReLU/MaxPool/Linear/
Dropout/Flatten, plus global average pooling, and hard-swish/hard-sigmoid in MobileNetV3), and sizes its
classifier from ``img_size``, so any model can be built for any input size its downsampling allows.

    >>> from edgefashion.training.zoo import create_model, get_entry
    >>> model = create_model("cnn4", num_classes=10)               # 1x28x28 Fashion-MNIST input
    >>> model = create_model("seq5", num_classes=15, img_size=96)  # RGB photos at 96x96
    >>> get_entry("seq5").recipe["optimizer"]
    'adam'
"""
from __future__ import annotations

import difflib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn

__all__ = [
    "DOMAINS",
    "ENSEMBLE",
    "Ensemble",
    "EnsembleError",
    "QUANTIZE_MODES",
    "RECIPE_DEFAULTS",
    "ZooEntry",
    "build_ensemble",
    "count_params",
    "create_model",
    "get_entry",
    "list_models",
    "model_mflops",
    "register_model",
]

DOMAINS = ("fashion-mnist", "photo")
# How `reproduce` exports a model: "int8" (static QDQ, calibrated on training images) or "dynamic" (INT8
# weights, activations quantized at run time), which the dense-only networks (logreg, the MLPs) use.
QUANTIZE_MODES = ("int8", "dynamic")

# The full recipe key set. A key a model does not set takes the seed reports' common recipe (Adam 1e-3, batch 32,
# at most 40 epochs, early stopping with patience 5, reduce-LR-on-plateau), so every entry's recipe is complete.
RECIPE_DEFAULTS: Mapping[str, Any] = {
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.0,
    "nesterov": False,
    "weight_decay": 0.0,
    "epochs": 40,
    "batch_size": 32,
    "early_stopping": True,
    "patience": 5,
    "scheduler": "plateau",
    "augment": "none",
    "label_smoothing": 0.0,
    "mixup": 0.0,
    "cutmix": 0.0,
    "warmup_epochs": 0,
}
_RECIPE_CHOICES = {
    "optimizer": ("adam", "adamw", "sgd"),
    "scheduler": ("plateau", "cosine", "none"),
    "augment": ("none", "carousell", "resnet", "strong", "camera"),
}


class _Recipe(dict):
    """A read-only dict: entries are shared, so ``entry.recipe["lr"] = ...`` must not change the zoo.

    Still a dict, so ``json.dumps``, ``torch.save`` and ``{**recipe, **overrides}`` work; it unpickles as a
    plain dict. Copy with ``dict(entry.recipe)`` to edit.
    """

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("zoo recipes are read-only; copy with dict(entry.recipe) to change one")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]
    __ior__ = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self):
        return (dict, (dict(self),))


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo and its defaults."""

    name: str
    build: Callable[..., nn.Module]  # build(in_chans, num_classes, img_size, **kwargs) -> nn.Module
    in_chans: int  # default input channels
    img_size: int  # default square input side
    domain: str  # "fashion-mnist" (1x28x28) or "photo" (RGB)
    source: str  # the seed report row it reproduces
    recipe: Mapping[str, Any]  # training defaults, every key of RECIPE_DEFAULTS
    timm_name: Optional[str] = None  # timm architecture behind it, if any (pretrained weights need a network)
    quantize: str = "int8"  # its export's quantization mode, one of QUANTIZE_MODES


_REGISTRY: "dict[str, ZooEntry]" = {}


def _make_recipe(name: str, recipe: Mapping[str, Any]) -> _Recipe:
    unknown = sorted(set(recipe) - set(RECIPE_DEFAULTS))
    if unknown:
        raise ValueError(f"model {name!r}: unknown recipe keys {unknown}; allowed: {', '.join(RECIPE_DEFAULTS)}")
    full = {**RECIPE_DEFAULTS, **recipe}
    for key, choices in _RECIPE_CHOICES.items():
        if full[key] not in choices:
            raise ValueError(f"model {name!r}: recipe {key}={full[key]!r}; choose from: {', '.join(choices)}")
    return _Recipe(full)


def register_model(
    name: str,
    *,
    in_chans: int,
    img_size: int,
    domain: str,
    source: str,
    timm_name: Optional[str] = None,
    quantize: str = "int8",
    **recipe: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``build(in_chans, num_classes, img_size, **kwargs)`` under ``name``.

    Keyword arguments beyond the entry's fields form its training recipe (keys of ``RECIPE_DEFAULTS``; missing
    keys take the default). ``quantize`` is the export's default quantization mode (``QUANTIZE_MODES``).
    Raises ValueError on a duplicate name, an unknown domain, quantization mode or recipe key.
    """
    if domain not in DOMAINS:
        raise ValueError(f"model {name!r}: unknown domain {domain!r}; choose from: {', '.join(DOMAINS)}")
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"model {name!r}: unknown quantize {quantize!r}; choose from: {', '.join(QUANTIZE_MODES)}")
    full_recipe = _make_recipe(name, recipe)

    def wrapper(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        _REGISTRY[name] = ZooEntry(
            name=name,
            build=build,
            in_chans=in_chans,
            img_size=img_size,
            domain=domain,
            source=source,
            recipe=full_recipe,
            timm_name=timm_name,
            quantize=quantize,
        )
        return build

    return wrapper


def list_models(domain: Optional[str] = None) -> "list[str]":
    """Registered model names in registration (= report) order, optionally only those of one domain."""
    if domain is not None and domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose from: {', '.join(DOMAINS)}")
    return [name for name, entry in _REGISTRY.items() if domain is None or entry.domain == domain]


def get_entry(name: str) -> ZooEntry:
    """The entry of a registered model; ValueError listing the choices for an unknown name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; choose from: {', '.join(_REGISTRY)}") from None


def create_model(
    name: str,
    num_classes: int,
    in_chans: Optional[int] = None,
    img_size: Optional[int] = None,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model; ``in_chans``/``img_size`` default to the entry's.

    ``pretrained=True`` is only for timm-backed models (it downloads timm's weights, so it needs a network);
    for the others it raises ValueError.
    """
    entry = get_entry(name)
    in_chans = entry.in_chans if in_chans is None else int(in_chans)
    img_size = entry.img_size if img_size is None else int(img_size)
    if num_classes < 1 or in_chans < 1 or img_size < 1:
        raise ValueError(f"num_classes, in_chans and img_size must be positive, "
                         f"got {num_classes}, {in_chans}, {img_size}")
    if entry.timm_name is not None:
        kwargs["pretrained"] = pretrained
    elif pretrained:
        raise ValueError(f"model {name!r} has no pretrained weights (only timm-backed models do: "
                         f"{', '.join(n for n, e in _REGISTRY.items() if e.timm_name)})")
    return entry.build(in_chans=in_chans, num_classes=int(num_classes), img_size=img_size, **kwargs)


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def model_mflops(model: nn.Module, in_chans: int, img_size: int) -> float:
    """Forward FLOPs of one ``in_chans x img_size x img_size`` image, in millions.

    Counted by ``torch.utils.flop_counter.FlopCounterMode``: 2 FLOPs per multiply-accumulate of convolutions and
    matrix products; BatchNorm, activations, pooling and additions are not counted. The model runs in eval mode
    without gradients; its train/eval mode is restored afterwards.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    param = next(model.parameters(), None)
    x = torch.zeros(1, in_chans, img_size, img_size,
                    dtype=param.dtype if param is not None else torch.float32,
                    device=param.device if param is not None else "cpu")
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e6


# --------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------

def _flat_features(features: nn.Module, in_chans: int, img_size: int, name: str) -> int:
    """Size of ``features``' flattened output for one image (dummy forward, eval mode, no grad)."""
    was_training = features.training
    features.eval()
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, in_chans, img_size, img_size))
    except RuntimeError as exc:  # a kernel larger than its input
        raise ValueError(f"{name}: {img_size}x{img_size} input is too small for this network ({exc})") from None
    finally:
        features.train(was_training)
    if out.numel() == 0:
        raise ValueError(f"{name}: {img_size}x{img_size} input is too small for this network")
    return out.numel()


def _head(flat: int, hidden: Sequence[int], num_classes: int, dropout: float) -> nn.Sequential:
    """[Linear - ReLU - Dropout] per hidden width, then the output Linear."""
    layers: "list[nn.Module]" = []
    for width in hidden:
        layers += [nn.Linear(flat, width), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        flat = width
    layers.append(nn.Linear(flat, num_classes))
    return nn.Sequential(*layers)


def _convnet(features: nn.Sequential, hidden: Sequence[int], dropout: float, *, in_chans: int, num_classes: int,
             img_size: int, name: str) -> nn.Sequential:
    """features -> Flatten -> classifier, the classifier sized from ``img_size``."""
    flat = _flat_features(features, in_chans, img_size, name)
    return nn.Sequential(OrderedDict(
        features=features,
        flatten=nn.Flatten(),
        classifier=_head(flat, hidden, num_classes, dropout),
    ))


def _mlp(in_chans: int, num_classes: int, img_size: int, hidden: Sequence[int], dropout: float) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        flatten=nn.Flatten(),
        classifier=_head(in_chans * img_size * img_size, hidden, num_classes, dropout),
    ))


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> "list[nn.Module]":
    # bias=False: BatchNorm's shift makes a conv bias redundant (and it fuses away at export anyway).
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU()]


# --------------------------------------------------------------------------------------------------------------
# Fashion-MNIST report: Keras models on 1x28x28 (Dense = Linear, Conv2D 'valid' padding = padding 0)
# --------------------------------------------------------------------------------------------------------------

_FMNIST = dict(in_chans=1, img_size=28, domain="fashion-mnist", batch_size=32, augment="none", scheduler="plateau")
# The MLPs and logistic regression are Linear layers only: dynamic quantization.
_FMNIST_SGD = dict(_FMNIST, optimizer="sgd", lr=0.01, epochs=100, early_stopping=False, quantize="dynamic")
_FMNIST_CNN = dict(_FMNIST, optimizer="adam", lr=1e-3, epochs=40, early_stopping=True)


@register_model("logreg", source="Fashion-MNIST report, logistic regression (82.6% test)", **dict(
    _FMNIST, optimizer="sgd", lr=0.1, epochs=40, early_stopping=True, quantize="dynamic"))
def logreg(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """Multinomial logistic regression: Flatten + Linear (softmax lives in the loss).

    Fashion-MNIST report, logistic regression (SGD lr 0.1; 82.6% test). 7,850 params at 1x28x28, 10 classes.
    """
    return _mlp(in_chans, num_classes, img_size, hidden=(), dropout=0.0)


@register_model("mlp1", source="Fashion-MNIST report, 1st MLP: 1 hidden layer of 10 (84.9% test)", **_FMNIST_SGD)
def mlp1(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """MLP with one hidden layer of 10 ReLU units.

    Fashion-MNIST report, 1st MLP (84.9% test). 7,960 params at 1x28x28, 10 classes.
    """
    return _mlp(in_chans, num_classes, img_size, hidden=(10,), dropout=0.0)


@register_model("mlp2", source="Fashion-MNIST report, 2nd MLP: 256/128 (87.9% test)", **_FMNIST_SGD)
def mlp2(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """MLP with hidden layers of 256 and 128 ReLU units.

    Fashion-MNIST report, 2nd MLP (87.9% test). 235,146 params at 1x28x28, 10 classes.
    """
    return _mlp(in_chans, num_classes, img_size, hidden=(256, 128), dropout=0.0)


@register_model("mlp3", source="Fashion-MNIST report, 3rd MLP: 256/128 + dropout 0.2 (88.5% test)", **_FMNIST_SGD)
def mlp3(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """mlp2 with dropout 0.2 after each hidden layer.

    Fashion-MNIST report, 3rd MLP with dropout (88.5% test). 235,146 params at 1x28x28, 10 classes.
    """
    return _mlp(in_chans, num_classes, img_size, hidden=(256, 128), dropout=0.2)


@register_model("mlp4", source="Fashion-MNIST report, 4th MLP: 256/128 + early stopping (86.6% test)",
                **dict(_FMNIST_SGD, early_stopping=True))
def mlp4(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """mlp2's network trained with early stopping (the seed run stopped after 37 of 100 epochs).

    Fashion-MNIST report, 4th MLP with early stopping (86.6% test). 235,146 params at 1x28x28, 10 classes.
    """
    return _mlp(in_chans, num_classes, img_size, hidden=(256, 128), dropout=0.0)


def _same_conv(cin: int, cout: int, kernel: int) -> "list[nn.Module]":
    """A conv padded by kernel // 2 on every side: 'same' for odd kernels; an even kernel gains one pixel
    (28 -> 29 for 2x2), which the following 2x2 max-pool floors away. The padding stays inside the Conv node,
    so export needs no Pad op (an asymmetric 'same' pad for even kernels would add one)."""
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2)]


def _small_cnn(in_chans: int, num_classes: int, img_size: int, filters: int, kernel: int, name: str) -> nn.Module:
    """[Conv(kernel, padded) - ReLU - MaxPool 2] x2 -> Dropout 0.2 -> Flatten -> Linear 128 - ReLU -> Linear.

    The report gives one dropout rate (0.2) per CNN and train accuracies of 91-99%, which fits one dropout
    layer, as in the Keras examples of its time. It gives no padding; padding keeps the border pixels, where
    sleeves and soles are: measured here, cnn4 after 3 epochs reaches 89.9% test accuracy padded against
    88.9% unpadded (and 88.6% with dropout after every block)."""
    features = nn.Sequential(
        *_same_conv(in_chans, filters, kernel), nn.ReLU(), nn.MaxPool2d(2),
        *_same_conv(filters, filters, kernel), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.2),
    )
    return _convnet(features, (128,), 0.0, in_chans=in_chans, num_classes=num_classes, img_size=img_size, name=name)


@register_model("cnn1", source="Fashion-MNIST report, 1st CNN: 8 filters 2x2, Adam (89.6% test)", **_FMNIST_CNN)
def cnn1(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """2 conv layers of 8 2x2 filters, dropout 0.2, trained with Adam.

    Fashion-MNIST report, 1st CNN (89.6% test; early-stopped at 30 epochs). 51,898 params at 1x28x28, 10 classes.
    """
    return _small_cnn(in_chans, num_classes, img_size, filters=8, kernel=2, name="cnn1")


@register_model("cnn2", source="Fashion-MNIST report, 2nd CNN: 8 filters 2x2, SGD (85.5% test)",
                **dict(_FMNIST_CNN, optimizer="sgd", lr=0.01))
def cnn2(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """cnn1's network trained with SGD (lr 0.01) instead of Adam.

    Fashion-MNIST report, 2nd CNN (85.5% test; 26 epochs). 51,898 params at 1x28x28, 10 classes.
    """
    return _small_cnn(in_chans, num_classes, img_size, filters=8, kernel=2, name="cnn2")


@register_model("cnn3", source="Fashion-MNIST report, 3rd CNN: 32 filters 2x2 (91.1% test)", **_FMNIST_CNN)
def cnn3(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """cnn1 with 32 2x2 filters per conv layer.

    Fashion-MNIST report, 3rd CNN (91.1% test; 22 epochs). The report's results table says Adam,
    its model slide SGD; Adam is used here. 206,410 params at 1x28x28, 10 classes.
    """
    return _small_cnn(in_chans, num_classes, img_size, filters=32, kernel=2, name="cnn3")


@register_model("cnn4", source="Fashion-MNIST report, 4th CNN: 32 filters 3x3 (91.8% test)", **_FMNIST_CNN)
def cnn4(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """cnn1 with 32 3x3 filters per conv layer.

    Fashion-MNIST report, 4th CNN (91.8% test, the report's best; 27 epochs). 211,690 params at 1x28x28, 10 classes.
    """
    return _small_cnn(in_chans, num_classes, img_size, filters=32, kernel=3, name="cnn4")


@register_model("cnn5", source="Fashion-MNIST report, 5th CNN: 4 conv, 64 filters 3x3 (91.8% test)", **_FMNIST_CNN)
def cnn5(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """4 conv layers of 64 3x3 filters ('same' padding): [Conv-ReLU-Conv-ReLU-MaxPool 2] x2 -> Dropout 0.2 ->
    Flatten -> Linear 128 - ReLU -> Linear (one dropout layer, as in the smaller CNNs).

    Fashion-MNIST report, 5th CNN (91.8% test; 16 epochs). 514,250 params at 1x28x28, 10 classes.
    """
    blocks: "list[nn.Module]" = []
    cin = in_chans
    for _ in range(2):
        blocks += [nn.Conv2d(cin, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                   nn.MaxPool2d(2)]
        cin = 64
    blocks.append(nn.Dropout(0.2))
    return _convnet(nn.Sequential(*blocks), (128,), 0.0, in_chans=in_chans, num_classes=num_classes,
                    img_size=img_size, name="cnn5")


# --------------------------------------------------------------------------------------------------------------
# Carousell report: RGB product photos
# --------------------------------------------------------------------------------------------------------------
# The report gives each model's kernels, pooling and parameter count but not its widths or input size; the
# widths, dense sizes and default input size here are chosen to land within ~5-10% of its parameter counts at 15
# classes. The dense head is sized from the input, so all of them run at 64 px and up (AlexNet at 67 px and up).

_PHOTO = dict(in_chans=3, domain="photo", optimizer="adam", lr=1e-3, epochs=40, batch_size=32, early_stopping=True,
              patience=5, scheduler="plateau", augment="carousell")


# Adam 1e-3, the report's, underfits it (63% train, 58.33% test at 67 px after 40 epochs); 1e-4 at 128 px reaches
# ~77% val (benchmarks/reproduce-photos.md).
@register_model("alexnet", img_size=227, source="Carousell report, AlexNet (6% prediction accuracy)",
                **dict(_PHOTO, lr=1e-4))
def alexnet(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """The original AlexNet (Krizhevsky et al. 2012) on 227x227 inputs.

    conv96 11x11/4 - maxpool 3/2 - conv256 5x5 p2 - pool - conv384 3x3 - conv384 3x3 - conv256 3x3 - pool -
    FC4096 - dropout 0.5 - FC4096 - dropout 0.5 - FC. Without the local response normalisation and the two-GPU
    grouped convolutions of the paper (dense convs, as in torchvision and most re-implementations).
    Smallest input: 67x67 (1x1 after the last pool).

    Carousell report, AlexNet (6% prediction accuracy).
    58.3M params at 227x227, 15 classes (seed: 60M; 62.4M at 1000 classes).
    """
    features = nn.Sequential(
        nn.Conv2d(in_chans, 96, 11, stride=4), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    )
    return _convnet(features, (4096, 4096), 0.5, in_chans=in_chans, num_classes=num_classes, img_size=img_size,
                    name="alexnet")


# Twelve plain ReLU layers at Adam's 1e-3 stay at the majority class whatever the init (measured: Glorot, He; and
# He with SGD 0.01); He init at 1e-4 learns (val 23.8% -> 31.1% in 3 epochs at 64 px).
@register_model("alexnet-3conv", img_size=128, source="Carousell report, AlexNet 3Conv Block (58% prediction accuracy)",
                **dict(_PHOTO, lr=1e-4))
def alexnet_3conv(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """AlexNet-style: 3 blocks of [3x (Conv 5x5 'same' - ReLU) - MaxPool 2x2] at 32/64/128 filters ->
    FC224 - dropout 0.5 - FC224 - dropout 0.5 - FC, He-initialised (normal, fan_in, zero biases) and trained
    at Adam 1e-4.

    Twelve plain ReLU layers without normalisation lose the signal at init: with PyTorch's default init (variance
    1/(3 fan_in)) the logits vary by 1e-5 across images; with Keras's Glorot init (the seed's framework) the
    activations' std still falls ~0.7x per ReLU (0.24 -> 0.019 over the nine convolutions) and the logits vary
    by 0.004, and the seed recipe sat at the majority class (23.8% val) until early stopping. He's variance
    2/fan_in keeps it through each ReLU; Adam 1e-3 still diverges to the prior from there, 1e-4 learns.

    Carousell report, AlexNet 3Conv Block (58% prediction accuracy). 8.7M params at 128x128, 15 classes (seed: 9M).
    """
    blocks: "list[nn.Module]" = []
    cin = in_chans
    for cout in (32, 64, 128):
        for _ in range(3):
            blocks += [nn.Conv2d(cin, cout, 5, padding=2), nn.ReLU()]
            cin = cout
        blocks.append(nn.MaxPool2d(2))
    model = _convnet(nn.Sequential(*blocks), (224, 224), 0.5, in_chans=in_chans, num_classes=num_classes,
                     img_size=img_size, name="alexnet-3conv")
    _he_init(model)
    return model


def _he_init(model: nn.Module) -> None:
    """He-normal (fan_in, ReLU gain) kernels and zero biases for every Conv2d/Linear layer."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@register_model("seq5", img_size=128, source="Carousell report, Sequential 5 Block (57% prediction accuracy)", **_PHOTO)
def seq5(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """"Sequential 5 Block": 5 blocks of [Conv 3x3 - BatchNorm - ReLU - MaxPool 2x2] at 32/64/128/256/256
    filters -> Flatten -> Dense 256 - ReLU - Dropout 0.5 -> Dense.

    Carousell report, Sequential 5 Block (57% prediction accuracy). 2.0M params at 128x128, 15 classes (seed: 2M).
    """
    blocks: "list[nn.Module]" = []
    cin = in_chans
    for cout in (32, 64, 128, 256, 256):
        blocks += [*_conv_bn_relu(cin, cout, 3), nn.MaxPool2d(2)]
        cin = cout
    return _convnet(nn.Sequential(*blocks), (256,), 0.5, in_chans=in_chans, num_classes=num_classes,
                    img_size=img_size, name="seq5")


@register_model("seq6", img_size=128, source="Carousell report, Sequential 6 Block (60% prediction accuracy)", **_PHOTO)
def seq6(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """"Sequential 6 Block": 6 blocks of [Conv 5x5 - BatchNorm - ReLU - MaxPool] at 32/64/128/256/512/512
    filters, the first five pooling 2x2 and the last 1x1 (an identity, kept as in the seed) -> Flatten ->
    Dense 1024 - ReLU - Dropout 0.5 -> Dense.

    Carousell report, Sequential 6 Block (60% prediction accuracy, the report's best).
    19.3M params at 128x128, 15 classes (seed: 20M).
    """
    blocks: "list[nn.Module]" = []
    cin = in_chans
    for i, cout in enumerate((32, 64, 128, 256, 512, 512)):
        blocks += [*_conv_bn_relu(cin, cout, 5), nn.MaxPool2d(2 if i < 5 else 1)]
        cin = cout
    return _convnet(nn.Sequential(*blocks), (1024,), 0.5, in_chans=in_chans, num_classes=num_classes,
                    img_size=img_size, name="seq6")


@register_model("seq5-strided", img_size=128,
                source="Carousell report, Sequential 5 Block with strides (48% prediction accuracy)",
                **_PHOTO)
def seq5_strided(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """Sequential 5 Block where stride-2 3x3 convs replace the max-pools of the first three blocks:
    3x [Conv 3x3/2 - BatchNorm - ReLU] + 2x [Conv 3x3 - BatchNorm - ReLU - MaxPool 2x2] at 64/128/256/512/512
    filters -> Flatten -> Dense 1280 - ReLU - Dropout 0.5 -> Dense.

    Carousell report, Sequential 5 Block with strides (48% prediction accuracy).
    14.4M params at 128x128, 15 classes (seed: 14M).
    """
    blocks: "list[nn.Module]" = []
    cin = in_chans
    for i, cout in enumerate((64, 128, 256, 512, 512)):
        if i < 3:
            blocks += _conv_bn_relu(cin, cout, 3, stride=2)
        else:
            blocks += [*_conv_bn_relu(cin, cout, 3), nn.MaxPool2d(2)]
        cin = cout
    return _convnet(nn.Sequential(*blocks), (1280,), 0.5, in_chans=in_chans, num_classes=num_classes,
                    img_size=img_size, name="seq5-strided")


# --------------------------------------------------------------------------------------------------------------
# ResNet follow-up
# --------------------------------------------------------------------------------------------------------------

_RESNET = dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, epochs=60,
               early_stopping=False, scheduler="cosine", augment="resnet", label_smoothing=0.1, warmup_epochs=1)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, a 1x1 conv-BN shortcut where the shape changes (option B)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


@register_model("resnet20", in_chans=1, img_size=28, domain="fashion-mnist", batch_size=128,
                source="ResNet follow-up, the Carousell report's next step: CIFAR-style ResNet-20", **_RESNET)
def resnet20(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """CIFAR-style ResNet-20 (He et al. 2016, sec. 4.2): 3x3 stem of 16 channels, 3 stages of 3 BasicBlocks at
    16/32/64 channels (stride 2 at stages 2 and 3, option-B 1x1 conv + BN shortcuts), global average pooling
    (ONNX GlobalAveragePool, any input size), Linear.

    ResNet follow-up (the Carousell report's next step). 272,186 params at 1x28x28, 10 classes (paper: 0.27M).
    """
    layers: "list[tuple[str, nn.Module]]" = [
        ("conv1", nn.Conv2d(in_chans, 16, 3, padding=1, bias=False)), ("bn1", nn.BatchNorm2d(16)), ("relu", nn.ReLU()),
    ]
    cin = 16
    for stage, cout in enumerate((16, 32, 64), start=1):
        first_stride = 1 if stage == 1 else 2
        blocks = [BasicBlock(cin if i == 0 else cout, cout, stride=first_stride if i == 0 else 1) for i in range(3)]
        layers.append((f"layer{stage}", nn.Sequential(*blocks)))
        cin = cout
    layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(64, num_classes))]
    return nn.Sequential(OrderedDict(layers))


@register_model("resnet10", in_chans=3, img_size=96, domain="photo",
                source="ResNet follow-up, ResNet-10 for camera photos: one BasicBlock per stage, 32-256 channels",
                **dict(_RESNET, batch_size=64, epochs=150, augment="camera", warmup_epochs=3, mixup=0.2, cutmix=1.0))
def resnet10(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """ResNet-10 for small photos: a 3x3 stem of 32 channels (stride 2 above 64 px, as resnet18's), then 4 stages
    of one BasicBlock each at 32/64/128/256 channels (stride 2 at stages 2-4), global average pooling, Linear.

    Sized for training from scratch on a few thousand photos on a CPU and for a camera on a Pi: measured here,
    at 96 px it trains at ~96 images/s on one thread (ResNet-18-like depth 1,1,2,2 at the same widths: ~64/s) and
    costs 287 MFLOPs per image. Its recipe is long (150 epochs) and strongly regularised (scale/aspect/colour
    jitter, erasing, mixup/CutMix, label smoothing): small data sets need many passes more than depth. Its
    augmentation is the camera domain's (`camera`: garments composited onto real scenes under camera conditions,
    and garment-free scenes trained to be 'uncertain'), as it is the model `edgefashion camera` runs.

    ResNet follow-up. 1.23M params at 3x96x96, 10 classes.
    """
    stem = 32
    layers: "list[tuple[str, nn.Module]]" = [
        ("conv1", nn.Conv2d(in_chans, stem, 3, stride=1 if img_size <= 64 else 2, padding=1, bias=False)),
        ("bn1", nn.BatchNorm2d(stem)), ("relu", nn.ReLU()),
    ]
    cin = stem
    for stage, cout in enumerate((32, 64, 128, 256), start=1):
        layers.append((f"layer{stage}", nn.Sequential(BasicBlock(cin, cout, stride=1 if stage == 1 else 2))))
        cin = cout
    layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(cin, num_classes))]
    return nn.Sequential(OrderedDict(layers))


def _timm_create(timm_name: str, **kwargs: Any) -> nn.Module:
    import timm  # imported lazily: listing the zoo must not pay for it

    return timm.create_model(timm_name, **kwargs)


@register_model("resnet18", in_chans=3, img_size=128, domain="photo", timm_name="resnet18",
                source="ResNet follow-up, ResNet-18 (timm) with a small-input stem", **dict(_RESNET, batch_size=64))
def resnet18(in_chans: int, num_classes: int, img_size: int, pretrained: bool = False) -> nn.Module:
    """timm ``resnet18`` with a stem for small inputs: conv1 is a 3x3 conv (64 channels) and the stem max-pool
    is removed. The 3x3 conv has stride 1 up to 64 px (CIFAR-style, 8x8 final maps at 64 px) and stride 2 above,
    so 128 px costs ~4.4 GFLOPs instead of ~17.8 (ImageNet's 7x7/2 + pool stem would leave 4x4 maps at 128 px).

    With ``pretrained=True`` timm's ImageNet weights are loaded for everything except conv1: a 7x7 kernel has no
    meaning as a 3x3 one, so the new stem starts from scratch (fine-tune with the stem learning).

    ResNet follow-up. 11.18M params at 3x128x128, 15 classes (11.17M at 10).
    """
    model = _timm_create("resnet18", pretrained=pretrained, in_chans=in_chans, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1 if img_size <= 64 else 2, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # timm's ResNet init
    model.maxpool = nn.Identity()
    return model


@register_model("mobilenetv3-small", in_chans=3, img_size=128, domain="photo", timm_name="mobilenetv3_small_100",
                source="ResNet follow-up, MobileNetV3-Small 1.0 (timm), edge-first",
                optimizer="adam", lr=2e-3, weight_decay=0.0, epochs=60, batch_size=64, early_stopping=False,
                scheduler="cosine", augment="resnet", label_smoothing=0.1, warmup_epochs=2)
def mobilenetv3_small(in_chans: int, num_classes: int, img_size: int, pretrained: bool = False) -> nn.Module:
    """timm ``mobilenetv3_small_100`` (Howard et al. 2019), unchanged: stride-2 stem, hard-swish, squeeze-and-
    excitation with hard-sigmoid, global average pool + 1x1 conv head. Exports to ONNX opset 17 (HardSwish,
    HardSigmoid, GlobalAveragePool). With ``pretrained=True`` timm adapts the stem to ``in_chans``.

    ResNet follow-up. 1.53M params at 3x128x128, 15 classes (2.54M at 1000 classes).
    """
    return _timm_create("mobilenetv3_small_100", pretrained=pretrained, in_chans=in_chans, num_classes=num_classes)


# --------------------------------------------------------------------------------------------------------------
# Ensembles: zoo models side by side as one (`edgefashion ensemble`; training/ensemble.py makes and scores them).
# Here, beside the networks, so that a checkpoint's "ensemble" rebuilds like any zoo model.
# --------------------------------------------------------------------------------------------------------------

ENSEMBLE = "ensemble"


class EnsembleError(ValueError):
    """Checkpoints that cannot be one ensemble; the message names the file and what differs."""


class Ensemble(nn.Module):
    """The mean of the members' logits. Logits, not probabilities: the runtime's softmax, temperature and
    'uncertain' threshold then apply to the ensemble as to any model, and the graph stays Conv/Gemm/Add/Mul,
    which quantizes like its members.

    With `flip`, each member also sees the image mirrored left to right and the mean runs over both views
    (test-time augmentation baked into the graph): a garment is the same garment mirrored, every model here
    trains with random flips, and the two views' errors differ. The views go through each member as one batch
    of 2N, so the graph holds each member once."""

    def __init__(self, members: Sequence[nn.Module], flip: bool = False,
                 locator: "BoxHead | None" = None, garment: "GarmentHead | None" = None) -> None:
        super().__init__()
        if len(members) < (1 if flip or locator is not None else 2):
            raise EnsembleError("an ensemble needs at least two members (or one, with --flip or a locator)")
        if garment is not None and locator is None:
            raise EnsembleError("a garment head comes with a locator (edgefashion locate trains both)")
        self.members = nn.ModuleList(members)
        self.flip = bool(flip)
        self.locator = locator
        self.garment = garment
        # (trunk, head) of the first member, views of its own modules (a plain tuple: not registered again, so the
        # state dict keeps one copy); split_features refuses a network the box head cannot read.
        self._first_split = split_features(members[0]) if locator is not None else None

    def forward(self, x: torch.Tensor):
        n = x.shape[0]
        if self.flip:
            x = torch.cat([x, torch.flip(x, dims=[3])], 0)
        box = garment = None
        out = None
        for i, m in enumerate(self.members):
            if i == 0 and self.locator is not None:
                # The box head reads the first member's feature map of the unmirrored view: one pass of the
                # trunk serves both outputs.
                features, head = self._first_split
                f = features(x)
                box = self.locator(f[:n])
                if self.garment is not None:
                    garment = self.garment(f[:n])
                logits = head(f)
            else:
                logits = m(x)
            out = logits if out is None else out + logits
        if self.flip:
            out = out[:n] + out[n:]
        out = out * (1.0 / (len(self.members) * (2 if self.flip else 1)))
        if box is None:
            return out
        return (out, box) if garment is None else (out, box, garment)


class BoxHead(nn.Module):
    """Where the garment is, from a classifier's last feature map: (N, 4) = (cx, cy, w, h) of the garment's box
    in fractions of the model's input view. A 1x1 convolution keeps every cell's features apart and the
    flattening keeps where each cell is, which global pooling would throw away."""

    def __init__(self, channels: int, grid: int, hidden: int = 128, reduced: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, reduced, 1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(reduced * grid * grid, hidden), nn.ReLU(), nn.Linear(hidden, 4))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


class GarmentHead(nn.Module):
    """Is there a garment at all: (N, 1), a logit of 'garment' against 'only a room', from a classifier's last
    feature map (pooled: where the garment is does not matter here). The camera's 'uncertain' reads it instead
    of the logits' energy when the file has it: a score learnt on empty training scenes ranks empty frames
    below garment frames far better than how confident the classes are (benchmarks/camera/README.md, "A garment
    detector")."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


def split_features(model: nn.Module) -> "tuple[nn.Module, nn.Module]":
    """(trunk, head) of a classifier: the trunk gives the last feature map, the head pools it into logits.
    The zoo's own networks end in pool, flatten, fc; timm's have forward_features / forward_head."""
    if isinstance(model, nn.Sequential) and len(model) > 3 and \
            isinstance(model[-3], (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and \
            isinstance(model[-2], nn.Flatten) and isinstance(model[-1], nn.Linear):
        return model[:-3], model[-3:]
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        return _Call(model.forward_features), _Call(model.forward_head)
    raise EnsembleError(f"{type(model).__name__}: no feature map to locate a garment from (the zoo's networks "
                        "end in pooling and a linear layer; this one does not)")


class _Call(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def build_ensemble(model_args: dict) -> Ensemble:
    """The (untrained) Ensemble a checkpoint's model_args describe."""
    members, flip = model_args.get("members"), bool(model_args.get("flip", False))
    if not isinstance(members, list) or len(members) < (1 if flip or model_args.get("locator") else 2):
        raise EnsembleError("ensemble checkpoint: model_args.members must list at least two members "
                            "(one with flip)")
    loc = model_args.get("locator")
    locator = BoxHead(int(loc["channels"]), int(loc["grid"])) if loc else None
    garment = GarmentHead(int(loc["channels"])) if loc and loc.get("garment") else None
    return Ensemble([create_model(m["model"], **m["model_args"]) for m in members], flip=flip, locator=locator,
                    garment=garment)
