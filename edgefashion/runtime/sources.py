"""Frame sources for `edgefashion camera`: webcams and network streams (live), video files, image folders, and
`demo`, a simulated camera made of labelled test images.

Every source has ``read() -> (frame, label)`` returning a BGR uint8 frame (or None at the end of the stream)
and the true class name when the source knows it (demo, class folders), else None; ``close()``; ``stats()``.

Live sources are read on a capture thread that keeps only the newest frame: a camera produces frames at its
own pace, and queueing them while the model is busy would make the shown result ever older. Files and folders
are read in order on the caller's thread, every frame, as fast as the loop runs (or paced with `realtime`).
OpenCV, numpy and the standard library only.
"""
from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..data.folders import IMAGE_EXTENSIONS
from ..meta import ModelMeta

# FFmpeg and OpenCV print their own multi-line warnings on stderr for every failed open or dropped stream;
# our errors say the same in one line. Quiet by default; set these variables to debug a source.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET (read when FFmpeg is first used)
try:
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
except AttributeError:  # builds without cv2.utils.logging
    pass

Frame = Optional[np.ndarray]
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
# Environment overrides of the reconnect policy (the options win); tests use them for short backoffs.
RETRIES_ENV = "EDGEFASHION_CAMERA_RETRIES"
RETRY_DELAY_ENV = "EDGEFASHION_CAMERA_RETRY_DELAY"


class SourceError(RuntimeError):
    """A source that cannot be opened or has failed for good; the message is one line naming it."""


@dataclass(frozen=True)
class RetryPolicy:
    """Reconnects of a dropped live source: `retries` attempts, waiting `delay` seconds before the first and
    doubling up to `max_delay`, so a camera that is re-plugged comes back and a dead one is given up soon."""
    retries: int = 5
    delay: float = 0.5
    max_delay: float = 8.0
    timeout_ms: int = 5000  # open and read timeouts of network streams (FFmpeg backend)

    @classmethod
    def from_env(cls, retries: Optional[int] = None, delay: Optional[float] = None) -> "RetryPolicy":
        r = retries if retries is not None else int(os.environ.get(RETRIES_ENV) or cls.retries)
        d = delay if delay is not None else float(os.environ.get(RETRY_DELAY_ENV) or cls.delay)
        if r < 0 or d < 0:
            raise ValueError(f"retries and retry delay must be >= 0, got {r} and {d}")
        return cls(retries=r, delay=d, max_delay=max(d, cls.max_delay))


def is_live(spec: str) -> bool:
    return spec.isdigit() or spec.lower().startswith(LIVE_SCHEMES)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- live: newest-frame capture thread ---------------------------------------------------------------------------

class LatestFrame:
    """A one-frame mailbox: the producer overwrites, the consumer takes the newest frame it has not seen.
    Frames overwritten before anyone took them are counted as dropped."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame = None
        self._seq = 0  # frames published
        self._taken = 0  # seq of the last frame taken
        self.delivered = 0
        self.error: Optional[BaseException] = None
        self.closed = False

    def put(self, frame: np.ndarray) -> None:
        with self._cond:
            self._frame = frame
            self._seq += 1
            self._cond.notify()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            self.error = error
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def take(self, poll: float = 0.1) -> Frame:
        """The newest unseen frame; waits for one. Raises the producer's error once it has given up; None
        when closed. Waits in short slices so Ctrl-C is seen promptly."""
        with self._cond:
            while self._seq == self._taken:
                if self.error is not None:
                    raise self.error
                if self.closed:
                    return None
                self._cond.wait(poll)
            self._taken = self._seq
            self.delivered += 1
            frame, self._frame = self._frame, None  # hand over ownership: the producer never touches it again
            return frame

    @property
    def captured(self) -> int:
        return self._seq

    @property
    def dropped(self) -> int:
        return self._seq - self.delivered


class LiveSource:
    """A webcam index or a stream URL, read on a daemon thread into a LatestFrame."""
    live = True
    labelled = False

    def __init__(self, spec: str, retry: RetryPolicy = RetryPolicy(), log: Callable[[str], None] = _stderr) -> None:
        self.spec = spec
        self.name = f"camera {spec}" if spec.isdigit() else spec
        self.retry = retry
        self.log = log
        self.reconnects = 0
        self.fps = 0.0
        self.mailbox = LatestFrame()
        self._stop = threading.Event()
        cap = self._open()
        if cap is None:
            what = "no such device, no permission, or in use" if spec.isdigit() else "unreachable or not a stream"
            raise SourceError(f"{self.name}: cannot open ({what})")
        ok, frame = cap.read()
        if not ok:
            cap.release()
            raise SourceError(f"{self.name}: opened but no frame could be read")
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.mailbox.put(frame)
        self._thread = threading.Thread(target=self._run, args=(cap,), name="edgefashion-capture", daemon=True)
        self._thread.start()

    def _open(self) -> Optional[cv2.VideoCapture]:
        if self.spec.isdigit():
            cap = cv2.VideoCapture(int(self.spec))
            # Where the backend supports it, a 1-frame driver buffer also keeps latency from piling up there.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        else:
            t = self.retry.timeout_ms
            # Without timeouts FFmpeg can block for minutes on a stalled network stream.
            cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, t, cv2.CAP_PROP_READ_TIMEOUT_MSEC, t])
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _run(self, cap: cv2.VideoCapture) -> None:
        box, stop = self.mailbox, self._stop
        try:
            while not stop.is_set():
                ok, frame = cap.read()
                if ok:
                    box.put(frame)
                    continue
                cap.release()
                cap = self._reconnect()
                if cap is None:
                    return
        except Exception as e:  # a crash on this thread must reach the consumer, not vanish
            box.fail(SourceError(f"{self.name}: capture failed ({type(e).__name__}: {e})"))
        finally:
            if cap is not None:
                cap.release()

    def _reconnect(self) -> Optional[cv2.VideoCapture]:
        r = self.retry
        delay = r.delay
        for attempt in range(1, r.retries + 1):
            self.log(f"{self.name}: stream dropped; reconnecting in {delay:.1f}s (attempt {attempt}/{r.retries})")
            if self._stop.wait(delay):
                return None
            cap = self._open()
            if cap is not None:
                ok, frame = cap.read()
                if ok:
                    self.reconnects += 1
                    self.log(f"{self.name}: reconnected")
                    self.mailbox.put(frame)
                    return cap
                cap.release()
            delay = min(delay * 2, r.max_delay)
        self.mailbox.fail(SourceError(f"{self.name}: stream dropped and {r.retries} reconnect attempts failed; "
                                      f"giving up"))
        return None

    def read(self) -> Tuple[Frame, Optional[str]]:
        return self.mailbox.take(), None

    def stats(self) -> dict:
        return {"kind": "live", "captured": self.mailbox.captured, "dropped": self.mailbox.dropped,
                "reconnects": self.reconnects}

    def close(self) -> None:
        self._stop.set()
        self.mailbox.close()
        self._thread.join(timeout=2 * self.retry.timeout_ms / 1000)


# --- files ---------------------------------------------------------------------------------------------------------

class _Pacer:
    """Sleeps so frames come out at `fps` (for --realtime)."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.next = 0.0

    def wait(self) -> None:
        if not self.period:
            return
        now = time.perf_counter()
        if self.next > now:
            time.sleep(self.next - now)
        # Resynchronise after a stall instead of racing to catch up.
        self.next = max(self.next, now) + self.period


class VideoFileSource:
    """A video file read in order, every frame. A decoder thread stays a few frames ahead (FFmpeg decodes
    without the GIL), so decoding overlaps preprocessing and inference on another core; frames are decoded
    into a small pool of recycled buffers, so nothing is allocated per frame. A frame returned by read() is
    valid until the next read()."""
    live = False
    labelled = False
    AHEAD = 3

    def __init__(self, path: Path, realtime: bool = False) -> None:
        self.name = str(path)
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{path}: cannot open as a video (unsupported format or codec, or not a video)")
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        ok, first = cap.read()
        if not ok:
            cap.release()
            raise SourceError(f"{path}: no frame could be decoded")
        if realtime and self.fps <= 0:
            cap.release()
            raise SourceError(f"{path}: --realtime needs the file's frame rate, and it does not state one")
        self.cap = cap
        self.pacer = _Pacer(self.fps if realtime else 0.0)
        self._free: "queue.Queue[np.ndarray]" = queue.Queue()
        for _ in range(self.AHEAD):
            self._free.put(np.empty_like(first))
        self._ready: "queue.Queue" = queue.Queue()
        self._ready.put(first)
        self._held: Frame = None
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._decode, name="edgefashion-decode", daemon=True)
        self._thread.start()

    def _decode(self) -> None:
        try:
            while not self._stop.is_set():
                buf = self._free.get()
                if self._stop.is_set():
                    break
                ok, frame = self.cap.read(buf)
                if not ok:
                    break
                self._ready.put(frame)
        except Exception as e:  # reach the consumer instead of dying silently
            self._ready.put(SourceError(f"{self.name}: decoding failed ({type(e).__name__}: {e})"))
        self._ready.put(None)

    def read(self) -> Tuple[Frame, Optional[str]]:
        if self._held is not None:
            self._free.put(self._held)  # the caller is done with the previous frame
            self._held = None
        if self._done:
            return None, None
        item = self._ready.get()
        if isinstance(item, Exception):
            self._done = True
            raise item
        if item is None:
            self._done = True
            return None, None
        self.pacer.wait()
        self._held = item
        return item, None

    def stats(self) -> dict:
        return {"kind": "video", "fps": self.fps}

    def close(self) -> None:
        self._stop.set()
        self._free.put(np.empty(0, np.uint8))  # wake the decoder if it waits for a buffer
        self._thread.join(timeout=5)
        self.cap.release()


def list_images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())


class ImageFolderSource:
    """Image files (a folder, recursively, in path order; or one image) as frames. The name of an image's
    parent folder is its label when that is one of the model's labels (a class-folder data set), so accuracy
    is reported. Unreadable files are reported on stderr and skipped: one bad file must not stop a run."""
    live = False

    def __init__(self, path: Path, labels: Sequence[str] = (), realtime: bool = False, fps: float = 30.0,
                 log: Callable[[str], None] = _stderr) -> None:
        self.name = str(path)
        self.files = [path] if path.is_file() else list_images(path)
        if not self.files:
            raise SourceError(f"{path}: no images in it ({'/'.join(sorted(IMAGE_EXTENSIONS))})")
        known = set(labels)
        self.file_labels = [p.parent.name if p.parent != path and p.parent.name in known else None
                            for p in self.files]
        self.labelled = any(lab is not None for lab in self.file_labels)
        self.fps = fps
        self.pacer = _Pacer(fps if realtime else 0.0)
        self.log = log
        self.i = 0
        self.skipped = 0

    def read(self) -> Tuple[Frame, Optional[str]]:
        from ..data import DataError, read_image
        while self.i < len(self.files):
            self.pacer.wait()
            path, label = self.files[self.i], self.file_labels[self.i]
            self.i += 1
            try:
                return read_image(path), label
            except DataError as e:
                self.skipped += 1
                self.log(f"skipped: {e}")
        return None, None

    def stats(self) -> dict:
        return {"kind": "images", "files": len(self.files), "skipped": self.skipped}

    def close(self) -> None:
        pass


# --- demo: a simulated camera -----------------------------------------------------------------------------------

def _fashion_mnist_test(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Only the 10,000 test images: loading the training set too would double the demo's memory."""
    from ..data import DataError, read_idx
    from ..data.fashion_mnist import FASHION_MNIST_FILES, _find
    folder = path if path.is_dir() and _find(path, FASHION_MNIST_FILES["test"][0]) else path / "fashion-mnist"
    found = [_find(folder, name) for name in FASHION_MNIST_FILES["test"]]
    if None in found:
        raise DataError(f"{folder}: Fashion-MNIST test files not found ({', '.join(FASHION_MNIST_FILES['test'])}); "
                        f"run `edgefashion data download fashion-mnist`")
    images, labels = read_idx(found[0]), read_idx(found[1])
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"{found[0]}: not Fashion-MNIST test images ({images.shape}, {len(labels)} labels)")
    return images, labels.astype(np.int64)


# The offline demo set: 5 clothing-small TEST photos per class (CC0, LICENSE beside them), shipped in the package
# so that `camera --source demo` needs no data folder (benchmarks/camera/make_demo_set.py rebuilds it).
DEMO_DIR = Path(__file__).resolve().parents[1] / "demo"
DEMO_SETS = {"clothing-small": DEMO_DIR / "clothing-small"}


class DemoSource:
    """Labelled test images shown as a 640x480 camera stream.

    Photo models: each garment is cut out of its product shot (data.scene.garment_mask) and held up in front of
    a real scene (a view of one of the HELD-OUT background photographs, never used in training) at 50-90% of
    the frame's height near the centre, under its own exposure, colour cast and sometimes defocus; frames
    add hand shake, a flicker of brightness and sensor noise. clothing-small models take the photos shipped in
    the package (DEMO_SETS), other folder data sets their test split. Fashion-MNIST images are inverted back
    to dark objects on a light wall, as the product photos they were made from, so the model's domain mapping
    (runtime/preprocess.py) is exercised for real. Each item is composed once (~60 ms with its matte); a frame
    is then a crop, one convertScaleAbs and one add of a precomputed noise field (~1 ms)."""
    live = False
    labelled = True
    W, H, JITTER = 640, 480, 6

    def __init__(self, meta: ModelMeta, data_root: Optional[Path] = None, hold: int = 10, seed: int = 0,
                 realtime: bool = False, fps: float = 30.0) -> None:
        self.name = "demo"
        self.meta = meta
        self.hold = max(1, int(hold))
        self.fps = fps
        self.rng = np.random.default_rng(seed)
        self.pacer = _Pacer(fps if realtime else 0.0)
        self.scenes: list = []
        self._load(data_root)
        self.order = self.rng.permutation(len(self.labels))
        n, j = 4, self.JITTER
        # Sensor noise: a few precomputed fields, cycled; uint8 so cv2.add/subtract saturate for free.
        self.noise = [np.clip(self.rng.normal(0, 4, (self.H, self.W, 3)), 0, None).astype(np.uint8)
                      for _ in range(n)]
        self.canvas = np.empty((self.H + 2 * j, self.W + 2 * j, 3), np.uint8)
        self.frame = np.empty((self.H, self.W, 3), np.uint8)
        self.t = 0
        self.item = -1

    def _load(self, data_root: Optional[Path]) -> None:
        from .. import data as efdata
        from .evaluate import match_labels
        m = self.meta
        if not m.dataset:
            raise SourceError(f"demo: the model ({m.model}) does not name its data set in its metadata")
        shipped = DEMO_SETS.get(m.dataset)
        shipped = shipped if shipped is not None and shipped.is_dir() else None
        try:
            if shipped is not None:
                kind, path = "folder", shipped
            else:
                kind, path = efdata.resolve_dataset(m.dataset, efdata.resolve_data_root(data_root), download=False)
            if kind == "fashion-mnist":
                images, y = _fashion_mnist_test(path)
                names = list(efdata.FASHION_MNIST_LABELS)
                self.images: list = list(images)
                self.paths: Optional[list] = None
            else:
                # Every photo of the shipped folder is a test photo: none is carved off; else the test split.
                ds = (efdata.load_folder_dataset(path, val_fraction=0.0, test_fraction=0.0) if shipped is not None
                      else efdata.load_folder_dataset(path))
                paths, y = ds.splits["train" if shipped is not None else "test"]
                names = list(ds.labels)
                self.images, self.paths = [], list(paths)
                from ..data import scene
                self.scenes = scene.backgrounds("heldout")
        except efdata.DataError as e:
            raise SourceError(f"demo: cannot load the test images of {m.dataset!r} ({e})") from None
        # By name, so the demo's truth is in the model's own label space (and a foreign class is an error).
        to_model = match_labels(names, m.labels, source=str(path))
        self.labels = [m.labels[to_model[int(c)]] for c in y]
        self.kind = kind
        self.path = path

    def _compose(self, idx: int) -> None:
        """Draw item `idx` onto the (jitter-padded) canvas with this item's scene, scale, place and lighting."""
        rng, c = self.rng, self.canvas
        if self.kind == "fashion-mnist":
            wall = rng.integers(200, 246)
            tint = rng.integers(-8, 9, 3)
            c[:] = np.clip(wall + tint, 0, 255).astype(np.uint8)
            obj = 255 - self.images[idx]  # back to a dark product on white
            side = int(rng.integers(180, 400))
            obj = cv2.cvtColor(cv2.resize(obj, (side, side), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR)
            h, w = obj.shape[:2]
            y = int(rng.integers(0, c.shape[0] - h + 1))
            x = int(rng.integers(0, c.shape[1] - w + 1))
            region = c[y:y + h, x:x + w]
            np.minimum(region, obj, out=region)  # white paper disappears into the wall
            self.gain = float(rng.uniform(0.75, 1.15))
            self.offset = float(rng.uniform(-25, 20))
            return
        from ..data import DataError, read_image, scene
        try:
            img = read_image(self.paths[idx])
        except DataError as e:
            raise SourceError(f"demo: {e}") from None
        ch, cw = c.shape[:2]
        c[:] = scene.view_of(self.scenes[int(rng.integers(len(self.scenes)))], rng, cw, ch)
        alpha = scene.garment_mask(img, seed=int(idx))
        scene.paste(c, img, alpha, cw / 2 + rng.uniform(-0.1, 0.1) * self.W, ch / 2 + rng.uniform(-0.08, 0.08) * self.H,
                    rng.uniform(0.5, 0.9) * self.H, float(rng.uniform(-4, 4)))
        # The item's look without its noise: frames add their own (a precomputed field) in read().
        c[:] = scene.finish(c, dataclasses.replace(scene.Look.random(rng), noise=0.0), rng)
        self.gain, self.offset = 1.0, 0.0

    def read(self) -> Tuple[Frame, Optional[str]]:
        item, k = divmod(self.t, self.hold)
        if item >= len(self.order):
            return None, None
        self.pacer.wait()
        idx = int(self.order[item])
        if item != self.item:
            self._compose(idx)
            self.item = item
        j = self.JITTER
        # Hand shake: a slow drift of a few pixels with a little jitter, as a held garment moves.
        dy = int(round(j + (j - 1) * np.sin(0.9 * self.t + idx))) + int(self.rng.integers(-1, 2))
        dx = int(round(j + (j - 1) * np.sin(0.7 * self.t + 2 * idx))) + int(self.rng.integers(-1, 2))
        flicker = 1.0 + 0.03 * np.sin(self.t * 0.9)
        cv2.convertScaleAbs(self.canvas[dy:dy + self.H, dx:dx + self.W], dst=self.frame,
                            alpha=self.gain * flicker, beta=self.offset)
        cv2.add(self.frame, self.noise[self.t % len(self.noise)], dst=self.frame)
        self.t += 1
        return self.frame, self.labels[idx]

    def stats(self) -> dict:
        return {"kind": "demo", "data": self.meta.dataset, "images": len(self.labels), "hold": self.hold,
                "photos": str(self.path), "scenes": "heldout" if self.scenes else "plain wall"}

    def close(self) -> None:
        pass


def open_source(spec: str, meta: ModelMeta, *, realtime: bool = False, retry: Optional[RetryPolicy] = None,
                data_root: Optional[Path] = None, log: Callable[[str], None] = _stderr):
    """`0` (webcam index), a URL, a video file, an image or folder of images, or `demo`."""
    spec = str(spec)
    if spec == "demo":
        return DemoSource(meta, data_root=data_root, realtime=realtime)
    if is_live(spec):
        return LiveSource(spec, retry or RetryPolicy.from_env(), log=log)
    path = Path(spec).expanduser()
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder (a source is 0, a URL, a video, images, or demo)")
    if path.is_dir() or path.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageFolderSource(path, labels=meta.labels, realtime=realtime, log=log)
    return VideoFileSource(path, realtime=realtime)
