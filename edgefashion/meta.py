"""ModelMeta: everything a device needs to turn a camera frame into a model input, and the model's output into
labels. Training writes it into checkpoints, export writes it into the ONNX file's ``metadata_props``, and the
runtime reads nothing else. Standard library only, so every half of the package can import it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

# Geometric rules a frame goes through before normalisation (see runtime/preprocess.py for the code).
RESIZE_MODES = ("stretch", "center_crop")
COLOR_MODES = ("rgb", "gray")
# "fashion-mnist": frames from the real world are mapped into Fashion-MNIST's domain (grey, object-centred,
# dark background); "photo": frames are used as they are.
DOMAINS = ("photo", "fashion-mnist")

META_KEY = "edgefashion"  # the metadata_props key holding ModelMeta as JSON
# A plain metadata_props key (comma-separated onnxruntime graph transformer names) the runtime reads before it
# builds its session: some INT8 files are only fast with one of onnxruntime's optimizers switched off.
ORT_DISABLED_OPTIMIZERS_KEY = "ort_disabled_optimizers"
FORMAT_VERSION = 1

FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MetaError(ValueError):
    """Metadata that is missing or inconsistent; the message names what is wrong."""


@dataclass(frozen=True)
class ModelMeta:
    model: str
    labels: tuple[str, ...]
    input_size: int  # square side in pixels
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "center_crop"
    color: str = "rgb"
    domain: str = "photo"
    interpolation: str = "area"  # OpenCV INTER_AREA: the right filter for downscaling photos
    dataset: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # accuracy figures, versions, dates; free-form

    def __post_init__(self) -> None:
        # Coerce JSON lists to tuples so metas compare equal after a round trip.
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        object.__setattr__(self, "extra", dict(self.extra))
        self.validate()

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def validate(self) -> None:
        if not self.labels:
            raise MetaError("metadata has no labels")
        if len(set(self.labels)) != len(self.labels):
            raise MetaError(f"metadata labels are not unique: {list(self.labels)}")
        if self.in_chans not in (1, 3):
            raise MetaError(f"in_chans must be 1 or 3, got {self.in_chans}")
        if int(self.input_size) < 8:
            raise MetaError(f"input_size must be at least 8, got {self.input_size}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise MetaError(f"mean/std need {self.in_chans} values, got {self.mean} / {self.std}")
        if any(s <= 0 for s in self.std):
            raise MetaError(f"std must be positive, got {self.std}")
        if self.resize not in RESIZE_MODES:
            raise MetaError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.color not in COLOR_MODES:
            raise MetaError(f"color must be one of {COLOR_MODES}, got {self.color!r}")
        if (self.color == "gray") != (self.in_chans == 1):
            raise MetaError(f"color {self.color!r} does not fit in_chans={self.in_chans}")
        if self.domain not in DOMAINS:
            raise MetaError(f"domain must be one of {DOMAINS}, got {self.domain!r}")
        if self.interpolation not in ("area", "linear", "nearest", "cubic"):
            raise MetaError(f"unknown interpolation {self.interpolation!r}")

    def replace(self, **changes: Any) -> "ModelMeta":
        d = self.to_dict()
        d.update(changes)
        return ModelMeta.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelMeta":
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("model", "labels", "input_size", "in_chans", "mean", "std") if k not in d]
        if missing:
            raise MetaError(f"metadata lacks {', '.join(missing)}")
        version = int(d.get("format_version", FORMAT_VERSION))
        if version > FORMAT_VERSION:
            raise MetaError(f"metadata format {version} is newer than this edgefashion understands ({FORMAT_VERSION})")
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelMeta":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise MetaError(f"metadata is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise MetaError("metadata JSON is not an object")
        return cls.from_dict(d)

    def to_onnx_props(self) -> dict[str, str]:
        """metadata_props entries: the whole meta as JSON under one key, plus the most-read fields as plain keys
        so `onnx` tools and Netron show them without parsing."""
        props = {
            META_KEY: self.to_json(),
            "labels": json.dumps(list(self.labels)),
            "input_size": str(self.input_size),
            "model": self.model,
        }
        disabled = self.extra.get(ORT_DISABLED_OPTIMIZERS_KEY)
        if disabled:
            props[ORT_DISABLED_OPTIMIZERS_KEY] = ",".join(disabled)
        return props

    @classmethod
    def from_onnx_props(cls, props: Mapping[str, str], source: str = "model") -> "ModelMeta":
        if META_KEY not in props:
            raise MetaError(
                f"{source}: no edgefashion metadata in this ONNX file (export it with `edgefashion export`)"
            )
        try:
            return cls.from_json(props[META_KEY])
        except MetaError as e:
            raise MetaError(f"{source}: {e}") from None


def fashion_mnist_meta(model: str, labels: tuple[str, ...] | list[str], input_size: int = 28) -> ModelMeta:
    return ModelMeta(
        model=model, labels=tuple(labels), input_size=input_size, in_chans=1,
        mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD, resize="stretch", color="gray",
        domain="fashion-mnist", dataset="fashion-mnist",
    )


def photo_meta(model: str, labels: tuple[str, ...] | list[str], input_size: int, dataset: str = "") -> ModelMeta:
    return ModelMeta(
        model=model, labels=tuple(labels), input_size=input_size, in_chans=3,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="center_crop", color="rgb",
        domain="photo", dataset=dataset,
    )
