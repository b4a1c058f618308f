"""ModelMeta: everything a device needs to turn a camera frame into a model input, and the model's output into
labels. Training writes it into checkpoints, export writes it into the ONNX file's ``metadata_props``, and the
runtime reads nothing else. Standard library only, so every half of the package can import it.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Optional

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
FORMAT_VERSION = 2  # 2: background_logit (a file that sets it says 2, so an older runtime refuses it)
# ModelMeta.split's keys: the fields of data.splits.SplitSpec (not imported: this module is standard library only).
SPLIT_KEYS = frozenset({"val_fraction", "test_fraction", "seed"})

FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The region of a camera frame the model looks at (`camera --roi`, ModelMeta.roi). "full" is the whole frame;
# files exported before the field existed read as "full". Photo models trained on product shots see a garment
# that fills the picture; on a webcam the garment is held near the centre and the rest is the room, so a centred
# square is what they should classify (benchmarks/camera/README.md measures the choice).
ROI_FULL = "full"
# `auto`: a model with a box output (`edgefashion locate`) finds the garment in the frame; the camera classifies
# the frame and the square around the garment (LOCATE_MARGIN times the box's longer side, mirrored), and averages
# the two.
ROI_AUTO = "auto"
LOCATE_MARGIN = 1.1
# `flip`: the whole image and its mirror image, logits averaged (test-time augmentation for photos: predict and
# eval; ModelMeta.photo_roi records it where validation chose it).
ROI_FLIP = "flip"
# Measured on the camera benchmark (benchmarks/camera/results.md): the default of newly trained photo models.
PHOTO_CAMERA_ROI = "center:0.7"
# Below this smoothed top probability the camera shows 'uncertain' (ModelMeta.threshold): the default of files
# without a calibrated one (export --camera-threshold records one chosen on a camera-like validation video).
DEFAULT_THRESHOLD = 0.5
# The camera's EMA weight of the newest frame's probabilities (ModelMeta.smooth; 1 = no smoothing): the default
# of files without a calibrated one (export --camera-smooth).
DEFAULT_SMOOTH = 0.5
# The camera's softmax temperature (ModelMeta.temperature): probabilities are softmax(logits / T). T > 1
# flattens them, and ranks frames by how far the best logit stands above the rest more than by the top
# probability alone, which separates garments from empty scenes better on the calibration video
# (benchmarks/camera/README.md); the threshold is calibrated at the same T. Files made before it read as 1.
DEFAULT_TEMPERATURE = 1.0
# The camera's 'nothing there' logit (ModelMeta.background_logit). None: 'uncertain' when the top class's
# probability is below the threshold. A number b: the frame's probabilities get one more entry, softmax over
# [logits / T, b], and 'uncertain' is when the garment classes together, P(garment) = sigmoid(logsumexp(logits
# / T) - b), fall below the threshold. That ranks frames by their energy score (Liu et al., "Energy-based
# Out-of-distribution Detection", NeurIPS 2020) instead of their top probability: an empty scene often has
# no single strong class yet some sizable logits, and a garment several strong ones (a shirt that might be a
# longsleeve). On the calibration video it separates garment from empty frames better (AUROC 0.930 vs 0.888
# for the bundled photo model, benchmarks/camera/README.md). Files made before it read as None.
DEFAULT_BACKGROUND_LOGIT = None


def _is_number(v: Any) -> bool:
    """An int or a float from JSON, not a bool (which is an int to Python)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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
    # The camera's default region of interest (Roi.parse syntax).
    roi: str = ROI_FULL
    # predict's and eval's default (Roi.parse syntax): the whole image, as photos are framed already, unless the
    # export measured another view better on the validation photos (export --photo-roi, e.g. flip).
    photo_roi: str = ROI_FULL
    # The camera's 'uncertain' threshold on the smoothed top probability (files made before it read as 0.5).
    threshold: float = DEFAULT_THRESHOLD
    # The camera's smoothing over frames (EMA weight of the newest; files made before it read as 0.5).
    smooth: float = DEFAULT_SMOOTH
    # The camera's softmax temperature (files made before it read as 1: plain softmax).
    temperature: float = DEFAULT_TEMPERATURE
    # The camera's 'nothing there' logit (DEFAULT_BACKGROUND_LOGIT); None: the top-probability rule.
    background_logit: Optional[float] = DEFAULT_BACKGROUND_LOGIT
    # How the data set's unshipped splits were carved for training (data.splits.SplitSpec as a dict:
    # val_fraction, test_fraction, seed), so `eval --split val|test` scores the images training held out.
    # Empty in files made before it was recorded: those used SplitSpec's defaults.
    split: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)  # accuracy figures, versions, dates; free-form

    def __post_init__(self) -> None:
        # Coerce JSON lists to tuples so metas compare equal after a round trip.
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        object.__setattr__(self, "extra", dict(self.extra))
        object.__setattr__(self, "split", dict(self.split or {}))
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
        if not _is_number(self.threshold) or not 0 <= self.threshold <= 1:
            raise MetaError(f"metadata threshold must be a number in [0, 1], got {self.threshold!r}")
        if not _is_number(self.smooth) or not 0 < self.smooth <= 1:
            raise MetaError(f"metadata smooth must be a number in (0, 1], got {self.smooth!r}")
        if not _is_number(self.temperature) or not 0 < self.temperature <= 100:
            raise MetaError(f"metadata temperature must be a number in (0, 100], got {self.temperature!r}")
        if self.background_logit is not None and (not _is_number(self.background_logit)
                                                  or not math.isfinite(self.background_logit)):
            raise MetaError(f"metadata background_logit must be a finite number or null, got {self.background_logit!r}")
        for name in ("roi", "photo_roi"):
            try:
                Roi.parse(getattr(self, name))
            except ValueError as e:
                raise MetaError(f"metadata {name}: {e}") from None
        # Keys this version does not know are left alone, so that a newer file still opens.
        for k, v in ((k, v) for k, v in self.split.items() if k in SPLIT_KEYS):
            if not _is_number(v) or v < 0 or (k != "seed" and v > 1):
                raise MetaError(f"metadata split {k} must be a number{' in [0, 1]' if k != 'seed' else ' >= 0'}, "
                                f"got {v!r}")

    def replace(self, **changes: Any) -> "ModelMeta":
        d = self.to_dict()
        d.update(changes)
        return ModelMeta.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        # Version 1 where nothing needs 2, so files without the new field still open in older runtimes.
        d["format_version"] = FORMAT_VERSION if self.background_logit is not None else 1
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


@dataclass(frozen=True)
class Roi:
    """A region of interest of a frame: the whole frame, a centred square, or a rectangle.

    Syntax (``--roi``, ModelMeta.roi): ``full``; ``center:F``, a centred square whose side is F (0 < F <= 1) of
    the frame's shorter side (its height, for a landscape camera); ``X,Y,W,H``, a rectangle, in pixels when all
    four are integers, in fractions of the frame's width and height when any has a decimal point. A rectangle is
    clipped to the frame; one that misses the frame entirely is an error when a frame arrives. ``auto`` or
    ``auto:M``, for models with a garment locator: the whole frame, then the square around the garment the model
    finds there (M times its box's longer side). ``flip``: the whole image and its mirror image, logits averaged
    (for photos: predict and eval)."""
    kind: str  # "full", "center", "rect", "auto" or "flip"
    values: tuple = ()
    fractional: bool = False
    spec: str = ROI_FULL

    @classmethod
    def parse(cls, spec: "str | Roi | None") -> "Roi":
        if isinstance(spec, Roi):
            return spec
        text = (spec or ROI_FULL).strip().lower()
        if text == ROI_FULL:
            return cls("full", (), False, ROI_FULL)
        if text == ROI_FLIP:
            return cls("flip", (), False, ROI_FLIP)
        if text == ROI_AUTO or text.startswith(ROI_AUTO + ":"):
            try:
                m = float(text.split(":", 1)[1]) if ":" in text else LOCATE_MARGIN
            except ValueError:
                m = -1.0
            if not 1 <= m <= 3:
                raise ValueError(f"ROI {spec!r}: auto:M needs 1 <= M <= 3 (the located square's side as a "
                                 f"multiple of the garment box's longer side)")
            return cls("auto", (m,), True, ROI_AUTO if ":" not in text else f"{ROI_AUTO}:{m:g}")
        if text.startswith(("center:", "centre:")):
            try:
                f = float(text.split(":", 1)[1])
            except ValueError:
                f = -1.0
            if not 0 < f <= 1:
                raise ValueError(f"ROI {spec!r}: center:F needs 0 < F <= 1 (the square's side as a fraction of "
                                 f"the frame's shorter side)")
            return cls("center", (f,), True, f"center:{f:g}")
        parts = [p.strip() for p in text.split(",")]
        if len(parts) == 4:
            fractional = any("." in p for p in parts)
            try:
                vals = tuple(float(p) if fractional else int(p) for p in parts)
            except ValueError:
                vals = ()
            if vals and vals[2] > 0 and vals[3] > 0 and vals[0] >= 0 and vals[1] >= 0 and \
                    (not fractional or all(v <= 1 for v in vals)):
                return cls("rect", vals, fractional, ",".join(parts))
        raise ValueError(f"ROI {spec!r}: expected full, center:F (0 < F <= 1), X,Y,W,H (pixels, or "
                         f"fractions of the frame such as 0.2,0.1,0.6,0.8), auto[:M] or flip")

    @property
    def is_full(self) -> bool:
        return self.kind == "full"

    @property
    def locates(self) -> bool:
        """`auto`: the model finds the garment in the whole frame, then classifies the square around it too."""
        return self.kind == "auto"

    @property
    def crops(self) -> bool:
        """center and rect classify a part of the frame; full, auto and flip start from the whole of it."""
        return self.kind in ("center", "rect")

    @property
    def mirrors(self) -> bool:
        """`flip`: the whole image and its mirror image, averaged."""
        return self.kind == "flip"

    @property
    def margin(self) -> float:
        return float(self.values[0]) if self.locates else 1.0

    def box(self, height: int, width: int) -> tuple:
        """(x0, y0, x1, y1) in pixels for a frame of this size."""
        if self.kind in ("full", "auto", "flip"):
            return 0, 0, width, height
        if self.kind == "center":
            side = max(1, int(round(self.values[0] * min(height, width))))
            x0, y0 = (width - side) // 2, (height - side) // 2
            return x0, y0, x0 + side, y0 + side
        x, y, w, h = self.values
        if self.fractional:
            x, w = x * width, w * width
            y, h = y * height, h * height
        x0, y0 = int(round(x)), int(round(y))
        x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
        if x0 >= x1 or y0 >= y1:
            raise ValueError(f"ROI {self.spec} lies outside the {width}x{height} frame")
        return x0, y0, x1, y1

    def __str__(self) -> str:
        return self.spec


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
        domain="photo", dataset=dataset, roi=PHOTO_CAMERA_ROI,
    )
