"""Classifier: one exported ONNX file -> an onnxruntime session, its ModelMeta, and top-k predictions.

onnxruntime + numpy + OpenCV only (through preprocess): this is what runs on the Raspberry Pi. The file's
``metadata_props`` are the only source of labels and preprocessing; a model without them is refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from ..meta import ORT_DISABLED_OPTIMIZERS_KEY, ModelMeta, Roi
from .preprocess import located_crop, preprocess

BOX_OUTPUT = "box"  # a located model's second output: (cx, cy, w, h) of the garment, fractions of its view
# A located model's optional third output: (N, 1), the logit of 'a garment is there' against 'only a room'.
GARMENT_OUTPUT = "garment"


class ModelError(ValueError):
    """A file that is not a loadable ONNX model; the message names the file."""


@dataclass(frozen=True)
class Prediction:
    """Top-k result for one image, best first."""
    labels: tuple[str, ...]
    indices: tuple[int, ...]
    probs: tuple[float, ...]

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def index(self) -> int:
        return self.indices[0]

    @property
    def prob(self) -> float:
        return self.probs[0]

    def to_dict(self) -> dict:
        return {"label": self.label, "index": self.index, "prob": self.prob,
                "top": [{"label": l, "index": i, "prob": p} for l, i, p in zip(self.labels, self.indices, self.probs)]}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax; subtracting the row maximum keeps exp() from overflowing on large logits."""
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def session_options(threads: int | None = None, spin: bool = False,
                    config: dict | None = None) -> ort.SessionOptions:
    """`config`: extra onnxruntime session config entries (e.g. session.x64quantprecision), applied last."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    # onnxruntime's worker threads spin-wait for work by default; between camera frames that keeps a whole
    # core busy doing nothing, which on a Raspberry Pi costs heat and throttling. Off unless asked for.
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin else "0")
    for k, v in (config or {}).items():
        so.add_session_config_entry(str(k), str(v))
    return so


def open_session(path: str | Path, threads: int | None = None, spin: bool = False,
                 disabled_optimizers: Sequence[str] | None = None,
                 config: dict | None = None) -> ort.InferenceSession:
    """The one way edgefashion opens an ONNX file with onnxruntime (CPU provider, our thread settings).

    ``disabled_optimizers=None`` takes them from the file's ``ort_disabled_optimizers`` metadata: an INT8 file
    whose first convolution block was kept in FP32 asks for QDQPropagationTransformer to be off, because that
    optimizer would move its QuantizeLinear across the MaxPool and make onnxruntime run the pool on uint8 NCHW
    with a generic kernel (measured for cnn4: 2.8x slower with it, 0.7x of FP32 without; benchmarks/README.md).
    Reading the metadata needs a session, so such a file is opened twice; any other file once."""
    # Providers named explicitly: onnxruntime warns (and newer versions may refuse) otherwise, and a GPU build
    # must not silently pick another provider with other numerics.
    def session(disabled: Sequence[str]) -> ort.InferenceSession:
        return ort.InferenceSession(str(path), sess_options=session_options(threads, spin, config),
                                    providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled))

    if disabled_optimizers is not None:
        return session(disabled_optimizers)
    sess = session(())
    wanted = sess.get_modelmeta().custom_metadata_map.get(ORT_DISABLED_OPTIMIZERS_KEY, "")
    disabled = [name.strip() for name in wanted.split(",") if name.strip()]
    return session(disabled) if disabled else sess


def read_meta(path: str | Path) -> ModelMeta:
    """ModelMeta of an ONNX file, read through onnxruntime (no onnx package needed)."""
    return Classifier(path, threads=1).meta


class Classifier:
    """An exported edgefashion model ready to classify images.

    >>> clf = Classifier("export/cnn4-fashion-mnist/model.int8.onnx", threads=2)
    >>> clf.predict_images([cv2.imread("shirt.jpg")])[0].label
    """

    def __init__(self, path: str | Path, threads: int | None = None, spin: bool = False,
                 ort_config: dict | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such model file")
        try:
            self.session = open_session(self.path, threads, spin, config=ort_config)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{self.path}: not a valid ONNX model ({msg[:200]})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = ModelMeta.from_onnx_props(props, source=str(self.path))
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names = [o.name for o in outputs]
        # One output (logits), or two (logits, box): a model with a garment locator (`edgefashion locate`), or
        # three (logits, box, garment): one that also tells whether there is a garment at all.
        if len(inputs) != 1 or names[1:] not in ([], [BOX_OUTPUT], [BOX_OUTPUT, GARMENT_OUTPUT]):
            raise ModelError(f"{self.path}: expected one input and one output (or logits, box and optionally "
                             f"garment), got {len(inputs)} and {names}")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.box_name = BOX_OUTPUT if len(outputs) >= 2 else None
        self.garment_name = GARMENT_OUTPUT if len(outputs) == 3 else None
        self.threads = threads
        self.spin = spin

    @property
    def labels(self) -> tuple[str, ...]:
        return self.meta.labels

    def logits(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) normalised batch -> (N, num_classes) logits."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        m = self.meta
        if x.ndim != 4 or x.shape[1:] != (m.in_chans, m.input_size, m.input_size):
            raise ValueError(f"{self.path}: expected input (N, {m.in_chans}, {m.input_size}, {m.input_size}), "
                             f"got {x.shape}")
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def probs(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.logits(x))

    @property
    def locates(self) -> bool:
        return self.box_name is not None

    def check_roi(self, roi) -> Roi:
        """`roi` parsed; `auto` needs a model with a garment locator."""
        roi = Roi.parse(roi)
        if roi.locates and not self.locates:
            raise ModelError(f"{self.path}: --roi {roi} needs a model with a garment locator (a 'box' output, "
                             f"from `edgefashion locate`); this one has none")
        return roi

    def located_logits(self, images: Sequence[np.ndarray], margin: float) -> np.ndarray:
        """`roi auto`: each image's logits averaged with those of the square around the garment the model
        finds in it, mirrored left to right (after resizing: FrameRunner does the same). Mirrored, because two
        views that differ more err apart more: on the camera calibration video the mirrored square gave 74.2%
        of items right against 73.3% unmirrored, and on the test photos 86.6% against 83.9%
        (benchmarks/camera/README.md, "A garment locator")."""
        x = preprocess(images, self.meta)
        logits, boxes = self.session.run([self.output_name, self.box_name], {self.input_name: x})
        crops = []
        for im, b in zip(images, boxes):
            x0, y0, x1, y1 = located_crop(im.shape[0], im.shape[1], self.meta, b, margin)
            crops.append(im[y0:y1, x0:x1])
        mirrored = np.ascontiguousarray(preprocess(crops, self.meta)[..., ::-1])
        return (logits + self.logits(mirrored)) * np.float32(0.5)

    def flipped_logits(self, x: np.ndarray) -> np.ndarray:
        """`roi flip`: a normalised batch's logits averaged with those of its mirror image (left to right)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return (self.logits(x) + self.logits(np.ascontiguousarray(x[..., ::-1]))) * np.float32(0.5)

    def view_logits(self, x: np.ndarray, roi: Roi) -> np.ndarray:
        """A normalised batch, already cropped to `roi` -> its logits, with the mirror view where `roi` is flip."""
        return self.flipped_logits(x) if roi.mirrors else self.logits(x)

    def roi_logits(self, images: Sequence[np.ndarray], roi: Roi) -> np.ndarray:
        """Decoded images -> logits as `roi` (parsed, checked) has the model look at them."""
        if roi.locates:
            return self.located_logits(images, roi.margin)
        return self.view_logits(preprocess(images, self.meta, roi), roi)

    def predict_images(self, images: Sequence[np.ndarray], top_k: int = 3, roi=None) -> list[Prediction]:
        """Images as OpenCV decodes them (BGR, BGRA or grey uint8) -> one Prediction each; `roi` (meta.Roi
        syntax) crops each image first, the whole image by default."""
        if not len(images):
            return []
        roi = self.check_roi(roi)
        return self.predictions(softmax(self.roi_logits(images, roi)), top_k)

    def predictions(self, probs: np.ndarray, top_k: int = 3) -> list[Prediction]:
        k = max(1, min(int(top_k), self.meta.num_classes))
        # argsort on the negated row: stable, so equal probabilities keep label order.
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [Prediction(labels=tuple(self.meta.labels[i] for i in row), indices=tuple(int(i) for i in row),
                           probs=tuple(float(p[i]) for i in row)) for row, p in zip(order, probs)]

    def __repr__(self) -> str:
        return f"Classifier({str(self.path)!r}, model={self.meta.model!r}, classes={self.meta.num_classes})"
