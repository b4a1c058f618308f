"""`edgefashion camera`: classify a live camera, a stream, a video, images or the demo, frame by frame.

The loop per frame: read (capture) -> prepare + normalise into preallocated buffers (preprocess) ->
onnxruntime through an IO binding onto those same buffers (inference) -> softmax, EMA smoothing, top-k, one
JSON line or an overlay. Nothing in it allocates more than the small arrays prepare() returns, the stage
timings go into a fixed ring, and JSON lines are formatted from pre-escaped labels, so memory stays flat
over any number of frames and a small model runs at hundreds of frames per second.

onnxruntime's intra-op threads spin-wait for work by default, which keeps a core busy between frames (heat
and throttling on a Raspberry Pi); the camera turns spinning off unless --spin asks for it.
"""
from __future__ import annotations

import json
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
from .preprocess import prepare
from .sources import RetryPolicy, SourceError, open_source

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
    smooth: float = 0.5  # EMA weight of the newest frame; 1 = no smoothing
    threshold: Optional[float] = None  # below this smoothed top probability "uncertain"; None: the model's
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
        if not 0 < self.smooth <= 1:
            raise ValueError(f"--smooth must be in (0, 1], got {self.smooth}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError(f"--threshold must be in [0, 1], got {self.threshold}")
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
        self.roi = Roi.parse(roi)
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

    def region(self, frame: np.ndarray) -> np.ndarray:
        """The ROI of `frame` (a view); its pixel box is kept in self.box, recomputed only when the frame size
        changes."""
        if self.roi.is_full:
            return frame
        if self._box_for != frame.shape[:2]:
            self.box = self.roi.box(frame.shape[0], frame.shape[1])
            self._box_for = frame.shape[:2]
        x0, y0, x1, y1 = self.box
        return frame[y0:y1, x0:x1]

    def preprocess(self, frame: np.ndarray) -> None:
        u8 = prepare(self.region(frame), self.meta)
        h = self.hwc
        np.divide(u8.reshape(h.shape), np.float32(255.0), out=h, dtype=np.float32)
        np.subtract(h, self.mean, out=h)
        np.divide(h, self.std, out=h)
        self.x[0] = h.transpose(2, 0, 1)

    def infer(self) -> np.ndarray:
        self.session.run_with_iobinding(self.binding)
        return self.logits[0]


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


def draw_guide(frame: np.ndarray, box: tuple, uncertain: bool) -> None:
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
    (tw, th), _ = cv2.getTextSize(GUIDE_TEXT, font, 0.5, 1)
    tx = x0 + ((x1 - x0) - tw) // 2
    ty = y1 - 8 if y1 + th + 8 >= frame.shape[0] else y1 + th + 6
    # A dark outline under the text keeps it readable over a light wall and a dark garment alike.
    cv2.putText(frame, GUIDE_TEXT, (tx, ty), font, 0.5, (20, 20, 20), 3, cv2.LINE_AA)
    cv2.putText(frame, GUIDE_TEXT, (tx, ty), font, 0.5, colour, 1, cv2.LINE_AA)


def draw_overlay(frame: np.ndarray, labels, probs, uncertain: bool, fps: float, ms: float,
                 truth: Optional[str] = None, guide: Optional[tuple] = None) -> None:
    """Top-k labels with probability bars, FPS and latency, drawn in place in the top-left corner; `guide`, the
    ROI's pixel box, drawn as a "hold the garment here" box."""
    if guide:
        draw_guide(frame, guide, uncertain)
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


def run_camera(opt: CameraOptions, out: TextIO = sys.stdout, log: Callable[[str], None] = None) -> dict:
    """Run the loop until the end of the stream, --max-frames, q/Esc in the window or Ctrl-C; returns the
    summary (also written as the last JSON object with --json). A live source that fails for good raises
    SourceError after the summary is written."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if not opt.headless and sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # OpenCV's Qt backend aborts the whole process without a display; say it in one line first.
        raise SourceError("no display (DISPLAY is not set) to open a window on; use --headless")
    clf = Classifier(opt.model, threads=opt.threads, spin=opt.spin)
    meta = clf.meta
    roi = Roi.parse(opt.roi if opt.roi is not None else meta.roi)
    threshold = opt.threshold if opt.threshold is not None else meta.threshold
    runner = FrameRunner(clf, roi)
    retry = RetryPolicy.from_env(opt.retries, opt.retry_delay)
    src = open_source(opt.source, meta, realtime=opt.realtime, retry=retry,
                      data_root=Path(opt.data_dir) if opt.data_dir else None, log=log)
    labels = meta.labels
    k = min(opt.top_k, meta.num_classes)
    # Image folders are unrelated pictures: smoothing across them would blend different garments.
    alpha = 1.0 if src.__class__.__name__ == "ImageFolderSource" else float(opt.smooth)
    label_index = {lab: i for i, lab in enumerate(labels)}
    quoted = [json.dumps(lab) for lab in labels]  # escaped once; JSON lines are then plain string joins
    flush = src.live  # a live consumer wants each line now; a file run wants throughput
    try:
        server = _start_server(opt, src, threshold, log) if opt.serve is not None else None
    except BaseException:
        src.close()
        raise
    hub = server.hub if server is not None else None

    ring = np.zeros((RING, len(STAGES)), np.float32)
    ema = np.zeros(meta.num_classes, np.float32)
    probs = np.empty(meta.num_classes, np.float32)
    frames = correct = correct_raw = labelled = uncertain_n = 0
    fps_ema, stopped, failure, last_status = 0.0, "end of stream", None, 0.0
    writer = None
    show = not opt.headless
    draw = show or opt.record is not None
    rss_start = None
    perf = time.perf_counter
    t_start = perf()
    try:
        while opt.max_frames is None or frames < opt.max_frames:
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
            logits = runner.infer()
            t3 = perf()
            # softmax in place on a 10-vector; subtracting the max keeps exp() finite
            np.subtract(logits, logits.max(), out=probs)
            np.exp(probs, out=probs)
            probs /= probs.sum()
            if frames == 0 or alpha >= 1.0:
                ema[:] = probs
            else:
                ema *= 1.0 - alpha
                ema += alpha * probs
            top = np.argsort(-ema, kind="stable")[:k]
            best = int(top[0])
            p_best = float(ema[best])
            unsure = p_best < threshold
            uncertain_n += unsure
            if truth is not None and truth in label_index:
                labelled += 1
                correct += best == label_index[truth]
                correct_raw += int(probs.argmax()) == label_index[truth]
            t4 = perf()
            if opt.json:
                tops = ", ".join(f'{{"label": {quoted[i]}, "prob": {ema[i]:.4f}}}' for i in top)
                out.write(f'{{"frame": {frames}, "top": [{tops}], '
                          f'"label": {_UNCERTAIN if unsure else quoted[best]}, '
                          f'"uncertain": {"true" if unsure else "false"}, '
                          f'"truth": {"null" if truth is None else json.dumps(truth)}, '
                          f'"latency_ms": {{"capture": {(t1 - t0) * 1e3:.3f}, "preprocess": {(t2 - t1) * 1e3:.3f}, '
                          f'"inference": {(t3 - t2) * 1e3:.3f}, "total": {(t4 - t0) * 1e3:.3f}}}}}\n')
                if flush:
                    out.flush()
            elif opt.headless and t4 - last_status >= 1.0:
                # Headless text mode: a status line a second, not one per frame.
                last_status = t4
                out.write(f"frame {frames}: {'uncertain' if unsure else labels[best]} {p_best:.2f}  "
                          f"({(t4 - t0) * 1e3:.2f} ms)\n")
                out.flush()
            if draw:
                dt = perf() - t0
                fps_ema = 1.0 / dt if not fps_ema else 0.9 * fps_ema + 0.1 / max(dt, 1e-6)
                draw_overlay(frame, [labels[i] for i in top], [float(ema[i]) for i in top], unsure, fps_ema,
                             (t4 - t0) * 1e3, truth, guide=None if roi.is_full else runner.box)
                if opt.record is not None:
                    writer = writer or _open_writer(opt.record, frame, src.fps)
                    writer.write(frame)
                if show and not _show(frame):
                    stopped = "user"
                    ring[frames % RING] = (t1 - t0, t2 - t1, t3 - t2, t4 - t0)
                    frames += 1
                    break
            ring[frames % RING] = (t1 - t0, t2 - t1, t3 - t2, t4 - t0)
            frames += 1
            # One attribute test per frame; a frame is drawn and copied only when the server's encoder asked.
            if hub is not None and (hub.wants_frame or t4 >= hub.status_due):
                if hub.wants_frame:
                    if not draw:  # the window and --record draw every frame; the server needs only this one
                        draw_overlay(frame, [labels[i] for i in top], [float(ema[i]) for i in top], unsure,
                                     hub.fps, (t4 - t0) * 1e3, truth, guide=None if roi.is_full else runner.box)
                    hub.publish_frame(frame)
                if t4 >= hub.status_due:
                    hub.publish_status(t4, frames, uncertain_n, [(labels[i], float(ema[i])) for i in top],
                                       "uncertain" if unsure else labels[best], ring, STAGES, labelled, correct)
            if frames == 100:
                rss_start = rss_mb()
        else:
            stopped = "max frames"
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        elapsed = perf() - t_start
        if server is not None:
            server.stop()
        src_stats = src.stats()
        src.close()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
    if frames == 0 and failure is None and stopped == "end of stream":
        # A source whose every frame failed to decode would otherwise "succeed" with an empty summary.
        skipped = src_stats.get("skipped")
        why = f"none of its {skipped} image(s) could be read" if skipped else "no frame could be read"
        raise SourceError(f"{src.name}: {why}; 0 frames classified")
    summary = {
        "frames": frames, "seconds": round(elapsed, 3), "fps": round(frames / elapsed, 1) if elapsed else None,
        "latency_ms": _percentiles(ring, frames), "peak_rss_mb": _round(peak_rss_mb()),
        "rss_mb": {"after_100_frames": _round(rss_start), "end": _round(rss_mb())},
        "stopped": stopped, "model": str(opt.model), "source": src.name, "source_stats": src_stats,
        "threads": opt.threads, "spin": opt.spin, "smooth": alpha, "threshold": threshold,
        "roi": str(roi), "uncertain_frames": uncertain_n,
    }
    if server is not None:
        summary["serve"] = server.stats()
    if labelled:
        summary.update(accuracy=round(correct / labelled, 4), accuracy_unsmoothed=round(correct_raw / labelled, 4),
                       labelled_frames=labelled)
    if opt.json:
        out.write(json.dumps({"summary": summary}) + "\n")
    else:
        out.write(format_summary(summary) + "\n")
    out.flush()
    if failure is not None:
        raise failure
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
        lines.append(f"  accuracy {s['accuracy']:.4f} on {s['labelled_frames']} labelled frames "
                     f"(unsmoothed {s['accuracy_unsmoothed']:.4f})")
    return "\n".join(lines)
