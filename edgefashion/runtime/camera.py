"""`edgefashion camera`: classify a live camera, a stream, a video, images or the demo, frame by frame.

The loop per frame, a stage a function (run_camera): read (capture) -> prepare + normalise into preallocated
buffers (FrameRunner.preprocess) -> onnxruntime through an IO binding onto those same buffers (infer) ->
softmax and EMA smoothing (Smoother) -> top-k and 'uncertain' (decide, Tally) -> one JSON line or a status line
(emit), the overlay in a window or a recording (show_frame), a frame for the HTTP view (serve_frame). Nothing in
it allocates more than the small arrays prepare() returns, the stage timings go into a fixed ring, and JSON
lines are formatted from pre-escaped labels, so memory stays flat
over any number of frames and a small model runs at hundreds of frames per second.

onnxruntime's intra-op threads spin-wait for work by default, which keeps a core busy between frames (heat
and throttling on a Raspberry Pi); the camera turns spinning off unless --spin asks for it.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TextIO

import cv2
import numpy as np

from ..meta import Roi
from .classifier import Classifier
from .preprocess import located_crop, prepare
from .sources import RetryPolicy, SourceError, open_source

MODEL_DEFAULT = "model"  # an option left to the model file's own camera default

STAGES = ("capture", "preprocess", "inference", "total")
RING = 1 << 16  # latency samples kept for percentiles: the last 65,536 frames (1 MB), so memory stays flat
WINDOW = "edgefashion"
_UNCERTAIN = json.dumps("uncertain")


@dataclass(frozen=True)
class CameraOptions:
    model: Path
    source: str = "demo"
    threads: Optional[int] = None
    spin: bool = False
    headless: bool = False
    json: bool = False
    max_frames: Optional[int] = None
    record: Optional[Path] = None
    realtime: bool = False
    top_k: int = 3
    smooth: Optional[float] = None  # EMA weight of the newest frame; 1 = no smoothing; None: the model's
    threshold: Optional[float] = None  # below this smoothed top probability "uncertain"; None: the model's
    temperature: Optional[float] = None  # softmax(logits / T); None: the model's
    # 'nothing there' logit (ModelMeta.background_logit): a number, None (the top-probability rule) or the model's.
    background_logit: "float | str | None" = MODEL_DEFAULT
    retries: Optional[int] = None
    retry_delay: Optional[float] = None
    data_dir: Optional[str] = None
    roi: Optional[str] = None  # None: the model's own (ModelMeta.roi)
    serve: Optional[str] = None  # [HOST:]PORT of the HTTP view (serve.py); None: no server
    serve_fps: float = 15.0
    serve_quality: int = 80
    serve_max_clients: int = 4
    serve_token: Optional[str] = None

    def __post_init__(self) -> None:
        if self.roi is not None:
            Roi.parse(self.roi)  # a bad --roi is an error before the model and the camera are opened
        if self.serve is not None:
            from .serve import parse_address
            parse_address(self.serve)  # likewise a bad --serve
            if not self.serve_fps > 0:
                raise ValueError(f"--serve-fps must be positive, got {self.serve_fps}")
            if not 1 <= self.serve_quality <= 100:
                raise ValueError(f"--serve-quality must be in [1, 100], got {self.serve_quality}")
            if self.serve_max_clients < 1:
                raise ValueError(f"--serve-max-clients must be positive, got {self.serve_max_clients}")
        if self.smooth is not None and not 0 < self.smooth <= 1:
            raise ValueError(f"--smooth must be in (0, 1], got {self.smooth}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError(f"--threshold must be in [0, 1], got {self.threshold}")
        if self.temperature is not None and not 0 < self.temperature <= 100:
            raise ValueError(f"--temperature must be in (0, 100], got {self.temperature}")
        if self.background_logit != MODEL_DEFAULT and self.background_logit is not None:
            if isinstance(self.background_logit, bool) or not isinstance(self.background_logit, (int, float)) \
                    or not math.isfinite(self.background_logit):
                raise ValueError(f"--background-logit must be a number, none or model, got {self.background_logit!r}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--max-frames must be positive, got {self.max_frames}")
        if self.top_k < 1:
            raise ValueError(f"--top-k must be positive, got {self.top_k}")


class FrameRunner:
    """One frame through the model without per-frame allocations: prepare() output is normalised into a
    preallocated NCHW buffer that onnxruntime reads in place (IO binding), and writes its logits into a
    preallocated array. Normalisation is preprocess.normalize's arithmetic, op for op (a test holds them equal)."""

    def __init__(self, clf: Classifier, roi: "Roi | str | None" = None) -> None:
        import onnxruntime as ort
        m = self.meta = clf.meta
        self.roi = clf.check_roi(roi)
        self._box_for: tuple = ()
        self.box: tuple = ()
        self.session = clf.session
        s, c = m.input_size, m.in_chans
        self.hwc = np.empty((s, s, c), np.float32)
        self.x = np.empty((1, c, s, s), np.float32)
        self.logits = np.empty((1, m.num_classes), np.float32)
        self.mean = np.asarray(m.mean, np.float32)
        self.std = np.asarray(m.std, np.float32)
        self.binding = self.session.io_binding()
        self.binding.bind_ortvalue_input(clf.input_name, ort.OrtValue.ortvalue_from_numpy(self.x))
        self.binding.bind_ortvalue_output(clf.output_name, ort.OrtValue.ortvalue_from_numpy(self.logits))
        self._frame: Optional[np.ndarray] = None
        self.located_box: tuple = ()  # `--roi auto`: the square around the garment in the last frame
        # `--roi auto` and `--roi flip` run a second view and average the two passes' logits: the mirrored square
        # around the garment the model's box output found, or the mirrored frame.
        self.two_views = self.roi.locates or self.roi.mirrors
        if self.two_views:
            self.first = np.empty((1, m.num_classes), np.float32)
        if self.roi.locates:
            self.located = np.empty((1, 4), np.float32)
            self.binding.bind_ortvalue_output(clf.box_name, ort.OrtValue.ortvalue_from_numpy(self.located))
        # A file with a garment head: its 'is there a garment' logit, averaged over the views like the logits.
        self.garment: Optional[np.ndarray] = None
        if clf.garment_name is not None:
            self.garment = np.empty((1, 1), np.float32)
            self._first_garment = np.empty((1, 1), np.float32)
            self.binding.bind_ortvalue_output(clf.garment_name, ort.OrtValue.ortvalue_from_numpy(self.garment))

    def region(self, frame: np.ndarray) -> np.ndarray:
        """The ROI of `frame` (a view); its pixel box is kept in self.box, recomputed only when the frame size
        changes."""
        if not self.roi.crops:
            return frame
        if self._box_for != frame.shape[:2]:
            self.box = self.roi.box(frame.shape[0], frame.shape[1])
            self._box_for = frame.shape[:2]
        x0, y0, x1, y1 = self.box
        return frame[y0:y1, x0:x1]

    def preprocess(self, frame: np.ndarray) -> None:
        self._frame = frame
        self._normalize(prepare(self.region(frame), self.meta))

    def _normalize(self, u8: np.ndarray) -> None:
        h = self.hwc
        np.divide(u8.reshape(h.shape), np.float32(255.0), out=h, dtype=np.float32)
        np.subtract(h, self.mean, out=h)
        np.divide(h, self.std, out=h)
        self.x[0] = h.transpose(2, 0, 1)

    def infer(self) -> np.ndarray:
        self.session.run_with_iobinding(self.binding)
        if self.two_views:
            np.copyto(self.first, self.logits)
            if self.garment is not None:
                np.copyto(self._first_garment, self.garment)
            if self.roi.locates:
                frame = self._frame
                self.located_box = located_crop(frame.shape[0], frame.shape[1], self.meta, self.located[0],
                                                self.roi.margin)
                x0, y0, x1, y1 = self.located_box
                self._normalize(prepare(frame[y0:y1, x0:x1], self.meta)[:, ::-1])  # Classifier.located_logits
            else:
                self.x[0] = self.x[0][:, :, ::-1].copy()  # the same pixels, mirrored: Classifier.flipped_logits
            self.session.run_with_iobinding(self.binding)
            self.logits += self.first
            self.logits *= np.float32(0.5)
            if self.garment is not None:
                self.garment += self._first_garment
                self.garment *= np.float32(0.5)
        return self.logits[0]

    def garment_logit(self) -> Optional[float]:
        """The last frame's garment logit (after infer()), None for a file without a garment head."""
        return None if self.garment is None else float(self.garment[0, 0])


def rss_mb() -> Optional[float]:
    """Current resident memory (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        return None


def peak_rss_mb() -> Optional[float]:
    # Linux: VmHWM belongs to this address space. getrusage's ru_maxrss survives exec(), so a camera started
    # by a big parent (a test runner with torch loaded) would report the parent's peak.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


GUIDE_TEXT = "hold the garment here"
LOCATED_TEXT = "garment found here"  # `--roi auto`: the box follows the garment the model found


def draw_guide(frame: np.ndarray, box: tuple, uncertain: bool, text: str = GUIDE_TEXT) -> None:
    """The ROI as a guide box: the model only sees what is inside it, so the user is shown where to hold the
    garment. Corner brackets rather than a full rectangle keep the garment's edges visible."""
    x0, y0, x1, y1 = box
    x1, y1 = x1 - 1, y1 - 1
    colour = (80, 200, 255) if uncertain else (90, 220, 90)
    arm = max(12, (x1 - x0) // 6)
    for (cx, cy, dx, dy) in ((x0, y0, 1, 1), (x1, y0, -1, 1), (x0, y1, 1, -1), (x1, y1, -1, -1)):
        cv2.line(frame, (cx, cy), (cx + dx * arm, cy), colour, 2, cv2.LINE_AA)
        cv2.line(frame, (cx, cy), (cx, cy + dy * arm), colour, 2, cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), _ = cv2.getTextSize(text, font, 0.5, 1)
    tx = x0 + ((x1 - x0) - tw) // 2
    ty = y1 - 8 if y1 + th + 8 >= frame.shape[0] else y1 + th + 6
    # A dark outline under the text keeps it readable over a light wall and a dark garment alike.
    cv2.putText(frame, text, (tx, ty), font, 0.5, (20, 20, 20), 3, cv2.LINE_AA)
    cv2.putText(frame, text, (tx, ty), font, 0.5, colour, 1, cv2.LINE_AA)


def draw_overlay(frame: np.ndarray, labels, probs, uncertain: bool, fps: float, ms: float,
                 truth: Optional[str] = None, guide: Optional[tuple] = None, guide_text: str = GUIDE_TEXT) -> None:
    """Top-k labels with probability bars, FPS and latency, drawn in place in the top-left corner; `guide`, the
    ROI's pixel box, drawn as a "hold the garment here" box (or the located garment's, with `guide_text`)."""
    if guide:
        draw_guide(frame, guide, uncertain, guide_text)
    font, aa = cv2.FONT_HERSHEY_SIMPLEX, cv2.LINE_AA
    h = 30 + 24 * len(labels) + (22 if truth else 0)
    cv2.rectangle(frame, (0, 0), (300, h), (32, 32, 32), -1)
    head = "uncertain" if uncertain else labels[0]
    cv2.putText(frame, f"{head}   {fps:5.1f} FPS  {ms:5.1f} ms", (8, 20), font, 0.5,
                (80, 200, 255) if uncertain else (255, 255, 255), 1, aa)
    for i, (lab, p) in enumerate(zip(labels, probs)):
        y = 30 + 24 * i
        cv2.rectangle(frame, (8, y + 4), (8 + int(140 * p), y + 20), (90, 170, 90), -1)
        cv2.putText(frame, f"{lab} {p:.2f}", (155, y + 17), font, 0.5, (255, 255, 255), 1, aa)
    if truth:
        cv2.putText(frame, f"truth: {truth}", (8, h - 6), font, 0.45, (200, 200, 200), 1, aa)


def _percentiles(ring: np.ndarray, n: int) -> dict:
    x = ring[:min(n, len(ring))] * 1000.0
    if not len(x):
        return {}
    p50, p95 = np.percentile(x, (50, 95), axis=0)
    mean = x.mean(0)
    return {s: {"p50": round(float(p50[i]), 3), "p95": round(float(p95[i]), 3), "mean": round(float(mean[i]), 3)}
            for i, s in enumerate(STAGES)}


# --- the loop: source -> preprocess -> infer -> smooth -> decide -> emit / draw / serve ------------------------

class Smoother:
    """Softmax of each frame's logits at `temperature` and their exponential moving average over frames (weight
    `alpha` for the newest; 1 = none), in place on preallocated vectors.

    With a `background_logit` b (ModelMeta.background_logit) the softmax runs over [logits / T, b]: the last
    entry is 'nothing there', `garment` is the smoothed probability of the garment classes together, and `ema`
    shows the garment classes' probabilities given that a garment is there (summing to 1, as without b), at
    temperature 1 and smoothed alike: there T only sets how P(garment) ranks frames (calibrated T of 8-16 would
    show every class near 1/K), and T does not change the classes' order, so what is shown and what is decided
    agree.

    A file with a garment head gives update() its garment logit g as well: then P(garment) = sigmoid(g - b),
    which replaces the energy's (the classes' share of it is their softmax at T), and T no longer matters."""

    def __init__(self, num_classes: int, alpha: float, temperature: float = 1.0,
                 background_logit: Optional[float] = None) -> None:
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.background_logit = None if background_logit is None else float(background_logit)
        self._inv_t = np.float32(1.0 / self.temperature)
        self._k = num_classes
        n = num_classes + (self.background_logit is not None)
        self._p = np.empty(n, np.float32)
        self._ema = np.zeros(n, np.float32)
        self.probs = self._p[:num_classes]  # this frame's (a view)
        # What is shown: the EMA itself, or the garment classes' own softmax (T = 1), smoothed the same way.
        self.ema = self._ema if self.background_logit is None else np.zeros(num_classes, np.float32)
        self._q = np.empty(num_classes, np.float32)
        self.garment: Optional[float] = None if self.background_logit is None else 1.0
        self._started = False

    def update(self, logits: np.ndarray, garment: Optional[float] = None) -> None:
        p, k = self._p, self._k
        p[:k] = logits
        if self._inv_t != 1:
            p[:k] *= self._inv_t
        if self.background_logit is not None and garment is not None:
            _softmax_inplace(p[:k])
            nothing = 1.0 / (1.0 + math.exp(min(garment - self.background_logit, 80.0)))
            p[:k] *= np.float32(1.0 - nothing)
            p[k] = nothing
        else:
            if self.background_logit is not None:
                p[k] = self.background_logit
            _softmax_inplace(p)
        first = not self._started
        self._started = True
        self._smooth(self._ema, p, first)
        if self.background_logit is not None:
            self.garment = float(1.0 - self._ema[k])
            self._q[:] = logits
            self._smooth(self.ema, _softmax_inplace(self._q), first)

    def _smooth(self, ema: np.ndarray, p: np.ndarray, first: bool) -> None:
        if first or self.alpha >= 1.0:
            ema[:] = p
        else:
            ema *= 1.0 - self.alpha
            ema += self.alpha * p


def _softmax_inplace(z: np.ndarray) -> np.ndarray:
    """softmax of the float32 vector `z`, written into it (a camera frame allocates nothing); returns `z`."""
    z -= z.max()  # keeps exp() finite
    np.exp(z, out=z)
    z /= z.sum()
    return z

@dataclass
class Shown:
    """What one frame shows: the smoothed top-k, and 'uncertain' when the best is below the threshold."""
    top: np.ndarray
    best: int
    p_best: float
    unsure: bool


def decide(ema: np.ndarray, k: int, threshold: float, garment: Optional[float] = None) -> Shown:
    """`garment` (a background logit's P(garment)): 'uncertain' when it is below the threshold; else when the
    top class's probability is."""
    top = np.argsort(-ema, kind="stable")[:k]
    best = int(top[0])
    p_best = float(ema[best])
    return Shown(top, best, p_best, (p_best if garment is None else garment) < threshold)


@dataclass
class Tally:
    """Counts over the run: frames, 'uncertain' frames and, on labelled sources, right answers. A frame is right
    when it SHOWS the right label: one shown as 'uncertain' is not right, whatever its top guess was."""
    frames: int = 0
    uncertain: int = 0
    labelled: int = 0
    correct: int = 0  # shown label right
    correct_top1: int = 0  # top guess right, at any confidence
    correct_raw: int = 0  # top guess right, unsmoothed

    def count(self, shown: Shown, probs: np.ndarray, truth: Optional[str], label_index: dict) -> None:
        self.uncertain += shown.unsure
        if truth is not None and truth in label_index:
            self.labelled += 1
            top1 = shown.best == label_index[truth]
            self.correct_top1 += top1
            self.correct += top1 and not shown.unsure
            self.correct_raw += int(probs.argmax()) == label_index[truth]


@dataclass
class Loop:
    """Everything the loop holds, opened by open_loop and released by close_loop."""
    opt: CameraOptions
    meta: object
    roi: Roi
    threshold: float
    runner: FrameRunner
    src: object
    smoother: Smoother
    k: int
    label_index: dict
    quoted: list  # labels escaped once: JSON lines are then plain string joins
    server: object = None
    writer: object = None
    ring: np.ndarray = None
    tally: Tally = None
    fps_ema: float = 0.0
    last_status: float = 0.0
    rss_start: Optional[float] = None

    @property
    def guide(self) -> Optional[tuple]:
        if self.roi.locates:
            return self.runner.located_box or None
        return self.runner.box if self.roi.crops else None

    @property
    def draws(self) -> bool:
        return not self.opt.headless or self.opt.record is not None


def open_loop(opt: CameraOptions, log: Callable[[str], None]) -> Loop:
    """The model, its camera defaults (ROI, threshold, smoothing, temperature) unless the options override them,
    the source and the server."""
    if not opt.headless and sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # OpenCV's Qt backend aborts the whole process without a display; say it in one line first.
        raise SourceError("no display (DISPLAY is not set) to open a window on; use --headless")
    clf = Classifier(opt.model, threads=opt.threads, spin=opt.spin)
    meta = clf.meta
    roi = clf.check_roi(opt.roi if opt.roi is not None else meta.roi)  # before the source opens
    threshold = opt.threshold if opt.threshold is not None else meta.threshold
    temperature = opt.temperature if opt.temperature is not None else meta.temperature
    background = meta.background_logit if opt.background_logit == MODEL_DEFAULT else opt.background_logit
    src = open_source(opt.source, meta, realtime=opt.realtime, retry=RetryPolicy.from_env(opt.retries, opt.retry_delay),
                      data_root=Path(opt.data_dir) if opt.data_dir else None, log=log)
    # Image folders are unrelated pictures: smoothing across them would blend different garments.
    alpha = 1.0 if src.__class__.__name__ == "ImageFolderSource" else float(
        opt.smooth if opt.smooth is not None else meta.smooth)
    loop = Loop(opt=opt, meta=meta, roi=roi, threshold=threshold, runner=FrameRunner(clf, roi), src=src,
                smoother=Smoother(meta.num_classes, alpha, temperature, background), k=min(opt.top_k, meta.num_classes),
                label_index={lab: i for i, lab in enumerate(meta.labels)},
                quoted=[json.dumps(lab) for lab in meta.labels],
                ring=np.zeros((RING, len(STAGES)), np.float32), tally=Tally())
    try:
        loop.server = _start_server(opt, src, threshold, log) if opt.serve is not None else None
    except BaseException:
        src.close()
        raise
    return loop


def emit(loop: Loop, out: TextIO, shown: Shown, truth: Optional[str], times: tuple, now: float) -> None:
    """--json: one line per frame; headless text: a status line a second; a window: nothing here."""
    opt, ema, frame_no = loop.opt, loop.smoother.ema, loop.tally.frames
    if opt.json:
        tops = ", ".join(f'{{"label": {loop.quoted[i]}, "prob": {ema[i]:.4f}}}' for i in shown.top)
        capture, pre, inference, total = times
        garment = loop.smoother.garment
        out.write(f'{{"frame": {frame_no}, "top": [{tops}], '
                  f'"label": {_UNCERTAIN if shown.unsure else loop.quoted[shown.best]}, '
                  f'"uncertain": {"true" if shown.unsure else "false"}, '
                  f'{"" if garment is None else f""""garment": {garment:.6f}, """}'
                  f'"truth": {"null" if truth is None else json.dumps(truth)}, '
                  f'"latency_ms": {{"capture": {capture * 1e3:.3f}, "preprocess": {pre * 1e3:.3f}, '
                  f'"inference": {inference * 1e3:.3f}, "total": {total * 1e3:.3f}}}}}\n')
        if loop.src.live:  # a live consumer wants each line now; a file run wants throughput
            out.flush()
    elif opt.headless and now - loop.last_status >= 1.0:
        loop.last_status = now
        out.write(f"frame {frame_no}: {'uncertain' if shown.unsure else loop.meta.labels[shown.best]} "
                  f"{shown.p_best:.2f}  ({times[3] * 1e3:.2f} ms)\n")
        out.flush()


def _overlay(loop: Loop, frame: np.ndarray, shown: Shown, truth: Optional[str], fps: float, ms: float) -> None:
    ema, labels = loop.smoother.ema, loop.meta.labels
    draw_overlay(frame, [labels[i] for i in shown.top], [float(ema[i]) for i in shown.top], shown.unsure, fps, ms,
                 truth, guide=loop.guide, guide_text=LOCATED_TEXT if loop.roi.locates else GUIDE_TEXT)


def show_frame(loop: Loop, frame: np.ndarray, shown: Shown, truth: Optional[str], ms: float, dt: float) -> bool:
    """The overlay into the window and --record; False when the user closed the window."""
    loop.fps_ema = 1.0 / dt if not loop.fps_ema else 0.9 * loop.fps_ema + 0.1 / max(dt, 1e-6)
    _overlay(loop, frame, shown, truth, loop.fps_ema, ms)
    if loop.opt.record is not None:
        loop.writer = loop.writer or _open_writer(loop.opt.record, frame, loop.src.fps)
        loop.writer.write(frame)
    return loop.opt.headless or _show(frame)


def serve_frame(loop: Loop, frame: np.ndarray, shown: Shown, truth: Optional[str], ms: float, now: float) -> None:
    """Hand the server a frame when its encoder asked for one (drawn here only if the window did not draw it)
    and the status when due: one attribute test per frame otherwise."""
    hub = loop.server.hub
    if not (hub.wants_frame or now >= hub.status_due):
        return
    if hub.wants_frame:
        if not loop.draws:
            _overlay(loop, frame, shown, truth, hub.fps, ms)
        hub.publish_frame(frame)
    if now >= hub.status_due:
        t, labels, ema = loop.tally, loop.meta.labels, loop.smoother.ema
        hub.publish_status(now, t.frames, t.uncertain, [(labels[i], float(ema[i])) for i in shown.top],
                           "uncertain" if shown.unsure else labels[shown.best], loop.ring, STAGES, t.labelled,
                           t.correct)


def close_loop(loop: Loop) -> dict:
    """Stop the server, close the source, the recording and the window; the source's stats."""
    if loop.server is not None:
        loop.server.stop()
    stats = loop.src.stats()
    loop.src.close()
    if loop.writer is not None:
        loop.writer.release()
    if not loop.opt.headless:
        cv2.destroyAllWindows()
    return stats


def run_camera(opt: CameraOptions, out: TextIO = sys.stdout, log: Callable[[str], None] = None) -> dict:
    """Run the loop until the end of the stream, --max-frames, q/Esc in the window or Ctrl-C; returns the
    summary (also written as the last JSON object with --json). A live source that fails for good raises
    SourceError after the summary is written."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    loop = open_loop(opt, log)
    src, runner, smoother, tally, ring = loop.src, loop.runner, loop.smoother, loop.tally, loop.ring
    stopped, failure = "end of stream", None
    perf = time.perf_counter
    t_start = perf()
    try:
        while opt.max_frames is None or tally.frames < opt.max_frames:
            t0 = perf()
            try:
                frame, truth = src.read()
            except SourceError as e:
                stopped, failure = "source failed", e
                break
            if frame is None:
                break
            t1 = perf()
            runner.preprocess(frame)
            t2 = perf()
            smoother.update(runner.infer(), runner.garment_logit())
            t3 = perf()
            shown = decide(smoother.ema, loop.k, loop.threshold, smoother.garment)
            tally.count(shown, smoother.probs, truth, loop.label_index)
            t4 = perf()
            times = (t1 - t0, t2 - t1, t3 - t2, t4 - t0)
            emit(loop, out, shown, truth, times, t4)
            go_on = not loop.draws or show_frame(loop, frame, shown, truth, times[3] * 1e3, perf() - t0)
            ring[tally.frames % RING] = times
            tally.frames += 1
            if not go_on:
                stopped = "user"
                break
            if loop.server is not None:
                serve_frame(loop, frame, shown, truth, times[3] * 1e3, t4)
            if tally.frames == 100:
                loop.rss_start = rss_mb()
        else:
            stopped = "max frames"
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        elapsed = perf() - t_start
        src_stats = close_loop(loop)
    if tally.frames == 0 and failure is None and stopped == "end of stream":
        # A source whose every frame failed to decode would otherwise "succeed" with an empty summary.
        skipped = src_stats.get("skipped")
        why = f"none of its {skipped} image(s) could be read" if skipped else "no frame could be read"
        raise SourceError(f"{src.name}: {why}; 0 frames classified")
    summary = summarize(loop, elapsed, stopped, src_stats)
    out.write((json.dumps({"summary": summary}) if opt.json else format_summary(summary)) + "\n")
    out.flush()
    if failure is not None:
        raise failure
    return summary


def summarize(loop: Loop, elapsed: float, stopped: str, src_stats: dict) -> dict:
    opt, t = loop.opt, loop.tally
    summary = {
        "frames": t.frames, "seconds": round(elapsed, 3), "fps": round(t.frames / elapsed, 1) if elapsed else None,
        "latency_ms": _percentiles(loop.ring, t.frames), "peak_rss_mb": _round(peak_rss_mb()),
        "rss_mb": {"after_100_frames": _round(loop.rss_start), "end": _round(rss_mb())},
        "stopped": stopped, "model": str(opt.model), "source": loop.src.name, "source_stats": src_stats,
        "threads": opt.threads, "spin": opt.spin, "smooth": loop.smoother.alpha, "threshold": loop.threshold,
        "temperature": loop.smoother.temperature, "background_logit": loop.smoother.background_logit,
        "roi": str(loop.roi), "uncertain_frames": t.uncertain,
    }
    if loop.server is not None:
        summary["serve"] = loop.server.stats()
    if t.labelled:
        summary.update(accuracy=round(t.correct / t.labelled, 4), accuracy_top1=round(t.correct_top1 / t.labelled, 4),
                       accuracy_unsmoothed=round(t.correct_raw / t.labelled, 4), labelled_frames=t.labelled)
    return summary


def _start_server(opt: CameraOptions, src, threshold: float, log: Callable[[str], None]):
    from .serve import FrameHub, FrameServer
    hub = FrameHub(opt.serve_fps, opt.serve_quality,
                   static={"model": str(opt.model), "source": src.name, "threads": opt.threads,
                           "threshold": threshold})
    server = FrameServer(opt.serve, hub, token=opt.serve_token, max_clients=opt.serve_max_clients)
    where = server.url
    if server.httpd.server_address[0] in ("0.0.0.0", "::"):
        where += " (all interfaces: open this machine's address from another one)"
    log(f"serving the camera on {where}{' (token required)' if opt.serve_token else ''}; "
        f"stream /stream.mjpg, status /status, snapshot /snapshot.jpg")
    return server


def _round(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(x, 1)


def _open_writer(path: Path, frame: np.ndarray, fps: float):
    h, w = frame.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps if fps > 0 else 30.0, (w, h))
    if not writer.isOpened():
        raise SourceError(f"{path}: cannot write a video there (folder missing, or no mp4v encoder)")
    return writer


_window_open = False


def _show(frame: np.ndarray) -> bool:
    """Show a frame; False when the user pressed q/Esc or closed the window."""
    global _window_open
    try:
        if not _window_open:
            cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE)
            _window_open = True
        cv2.imshow(WINDOW, frame)
        key = cv2.waitKey(1) & 0xFF
    except cv2.error as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else "cv2.error"
        raise SourceError(f"cannot open a window ({msg[:120]}); use --headless where there is no display") from None
    if key in (ord("q"), 27):
        return False
    return cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) >= 1


def format_summary(s: dict) -> str:
    lines = [f"{s['frames']} frames in {s['seconds']} s: {s['fps']} FPS ({s['stopped']}); "
             f"peak RSS {s['peak_rss_mb']} MB"]
    for stage, v in s["latency_ms"].items():
        lines.append(f"  {stage:<10} p50 {v['p50']:7.3f} ms   p95 {v['p95']:7.3f} ms")
    if "accuracy" in s:
        lines.append(f"  accuracy {s['accuracy']:.4f} on {s['labelled_frames']} labelled frames ('uncertain' "
                     f"counts as not right; top guess right at any confidence {s['accuracy_top1']:.4f}, "
                     f"unsmoothed {s['accuracy_unsmoothed']:.4f})")
    return "\n".join(lines)
