"""`edgefashion camera --serve`: the live overlay and the loop's status over HTTP, for a camera box without a
screen (a Raspberry Pi watched from a laptop's browser).

    /             a page: the stream and stats that refresh themselves
    /stream.mjpg  multipart MJPEG of the overlaid frames, at most --serve-fps a second
    /status       JSON: model, source, FPS, latency per stage, the last top-k, frames, uncertain rate, uptime
    /snapshot.jpg one fresh frame

The MJPEG servers people run on a Pi fall behind with a slow viewer, drop frames with a third one and encode
once per viewer. Here:
- The loop never waits on a client. It checks one attribute per frame; only when the encoder has asked for a
  frame does it copy the overlaid frame into a slot under a lock (sources recycle their frame buffers, and the
  copy is cheaper than an encode by far). A status dict is handed over a few times a second the same way.
- One encoder thread turns that slot into a JPEG, and only while some client is waiting for a newer frame and
  at most --serve-fps times a second: a stalled viewer asks for nothing, so it costs nothing, and every
  viewer shares the same encoded bytes.
- A viewer gets the newest JPEG when it is ready for one, never a queue, so a slow one only sees fewer frames;
  a small send buffer bounds how stale what it sees can get, and one that takes nothing for STALL_TIMEOUT
  seconds is dropped.
- At most `max_clients` streams at once (503 beyond); with a token every request must carry it (401 without).
- Nothing is written on the device: GET and HEAD only, the page is inline, requests are not logged.
Standard library (http.server, threads), numpy and OpenCV: nothing to install on a Pi.
"""
from __future__ import annotations

import hmac
import json
import socket
import socketserver
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, Sequence, Tuple
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

TOKEN_ENV = "EDGEFASHION_SERVE_TOKEN"
DEFAULT_HOST = "127.0.0.1"
STALL_TIMEOUT = 10.0  # seconds a client may take nothing (or send no request) before it is dropped
CHUNK = 4096  # bytes per send: the stall timeout then applies to a little progress, not to a whole frame
SNDBUF = 128 * 1024  # per-stream kernel send buffer: caps how far behind a slow viewer's picture can be
STATUS_PERIOD = 0.2  # seconds between status hand-overs from the loop
BOUNDARY = "edgefashionframe"


class ServeError(ValueError):
    """A --serve address that cannot be used (malformed, in use, not this machine's); one line."""


def parse_address(spec: str) -> Tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[IPv6]:PORT` -> (host, port); the host defaults to 127.0.0.1, so serving to the
    network is always an explicit choice."""
    s = str(spec).strip()
    host, sep, port = s.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, s
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ServeError(f"--serve {spec!r}: write an IPv6 host in brackets, e.g. [::]:8080")
    try:
        p = int(port)
    except ValueError:
        raise ServeError(f"--serve {spec!r}: expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080") from None
    if not 0 <= p <= 65535:
        raise ServeError(f"--serve {spec!r}: port must be 0-65535")
    return host or DEFAULT_HOST, p


class FrameHub:
    """The hand-over between the camera loop (one producer) and the server's threads.

    Loop side, per frame: `if hub.wants_frame or t >= hub.status_due:` then publish_frame() / publish_status().
    Both are cheap and never block on a client. Server side: the encoder thread and the handlers."""

    def __init__(self, fps: float = 15.0, quality: int = 80, static: Optional[dict] = None) -> None:
        self.period = 1.0 / fps
        self.quality = int(quality)
        self.static = dict(static or {})
        self.wants_frame = False  # set by the encoder, cleared by the loop; a plain attribute read per frame
        self.status_due = 0.0
        self.fps = 0.0  # the loop's recent rate, drawn on frames when nothing else draws them every frame
        self._cond = threading.Condition()
        self._buf: Optional[np.ndarray] = None
        self._frame_seq = 0
        self._jpeg: Optional[bytes] = None
        self._jpeg_seq = 0
        self._waiting = 0
        self._status: dict = {**self.static, "fps": 0.0, "latency_ms": {}, "top": [], "label": None, "frames": 0,
                               "uncertain_frames": 0, "uncertain_rate": None, "uptime_s": 0.0}
        self._history: deque = deque()
        self._closed = False
        self.encoded = 0
        self.t0 = time.perf_counter()
        self._encoder = threading.Thread(target=self._encode_loop, name="edgefashion-serve-encode", daemon=True)
        self._encoder.start()

    # --- the loop's side --------------------------------------------------------------------------------------

    def publish_frame(self, frame: np.ndarray) -> None:
        with self._cond:
            if not self.wants_frame:  # closed meanwhile; the encoder may be reading the slot
                return
            if self._buf is None or self._buf.shape != frame.shape:
                self._buf = np.empty_like(frame)
            np.copyto(self._buf, frame)
            self._frame_seq += 1
            self.wants_frame = False
            self._cond.notify_all()

    def publish_status(self, t: float, frames: int, uncertain: int, top: Sequence[Tuple[str, float]], label: str,
                       ring: np.ndarray, stages: Sequence[str], labelled: int = 0, correct: int = 0) -> None:
        """`t`: the loop's perf_counter now; `ring`: its latency ring (seconds), row frames-1 the newest."""
        self.status_due = t + STATUS_PERIOD
        h = self._history
        h.append((t, frames))
        while len(h) > 2 and t - h[1][0] >= 1.0:  # a rate over the last second or so
            h.popleft()
        if len(h) > 1 and t > h[0][0]:
            self.fps = (frames - h[0][1]) / (t - h[0][0])
        n = min(frames, 256, len(ring))
        lat = {}
        if n:
            rows = ring[np.arange(frames - n, frames) % len(ring)] * 1000.0
            p50, p95 = np.percentile(rows, (50, 95), axis=0)
            lat = {s: {"last": round(float(rows[-1, i]), 3), "p50": round(float(p50[i]), 3),
                       "p95": round(float(p95[i]), 3)} for i, s in enumerate(stages)}
        status = {**self.static, "fps": round(self.fps, 1), "latency_ms": lat,
                  "top": [{"label": lab, "prob": round(p, 4)} for lab, p in top], "label": label,
                  "frames": frames, "uncertain_frames": uncertain,
                  "uncertain_rate": round(uncertain / frames, 4) if frames else None,
                  "uptime_s": round(t - self.t0, 3)}
        if labelled:
            status.update(accuracy=round(correct / labelled, 4), labelled_frames=labelled)
        with self._cond:
            self._status = status

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self.wants_frame = False
            self._cond.notify_all()
        self._encoder.join(timeout=5)

    # --- the server's side ------------------------------------------------------------------------------------

    def status(self) -> dict:
        with self._cond:
            return dict(self._status)

    def _encode_loop(self) -> None:
        c = self._cond
        seen = 0
        due = 0.0
        params = [cv2.IMWRITE_JPEG_QUALITY, self.quality]
        while True:
            with c:
                while not self._closed and not self._waiting:
                    c.wait()
                if self._closed:
                    return
            delay = due - time.perf_counter()
            if delay > 0:  # the rate cap: sleep, not spin, and ask the loop for nothing meanwhile
                time.sleep(delay)
            with c:
                self.wants_frame = True
                while not self._closed and self._frame_seq == seen:
                    c.wait()
                if self._closed:
                    return
                seen = self._frame_seq
                buf = self._buf  # the loop writes it again only after wants_frame is set, below, by this thread
            # Due times on a fixed grid: a frame handed over a little late (a 30 FPS camera under a 15 FPS cap)
            # does not push every later one back, which would settle at 10 FPS. After an idle spell or with a
            # source slower than the cap, the grid restarts instead of bursting to catch up.
            handed = time.perf_counter()
            if handed - due > self.period:
                due = handed
            due += self.period
            ok, jpeg = cv2.imencode(".jpg", buf, params)
            if not ok:
                continue
            with c:
                self._jpeg = jpeg.tobytes()
                self._jpeg_seq += 1
                self.encoded += 1
                c.notify_all()

    def current_seq(self) -> int:
        with self._cond:
            return self._jpeg_seq

    def next_jpeg(self, after: int, timeout: float) -> Tuple[int, Optional[bytes]]:
        """The newest JPEG newer than sequence number `after`, waiting up to `timeout` s for one; (after, None)
        on a timeout or when the loop has stopped."""
        c = self._cond
        deadline = time.monotonic() + timeout
        with c:
            self._waiting += 1
            c.notify_all()  # wake the encoder
            try:
                while not self._closed and self._jpeg_seq <= after:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return after, None
                    c.wait(left)
                if self._closed:
                    return after, None
                return self._jpeg_seq, self._jpeg
            finally:
                self._waiting -= 1

    @property
    def closed(self) -> bool:
        return self._closed


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler stuck on a stalled client must not hold the process open

    def __init__(self, addr, hub: FrameHub, token: Optional[str], max_clients: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.hub, self.token, self.max_clients = hub, token, max_clients
        self.lock = threading.Lock()
        self.streams = 0
        self.served = 0
        self.refused = 0
        self.conns: set = set()
        super().__init__(addr, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:
        with self.lock:
            self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        pass  # a viewer that goes away mid-frame is normal, and must not print a traceback into the camera's log

    def close_connections(self) -> None:
        with self.lock:
            conns = list(self.conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)  # unblocks a handler stuck sending to a stalled viewer
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = STALL_TIMEOUT
    server_version = "edgefashion"
    sys_version = ""

    def log_message(self, format, *args) -> None:
        pass  # nothing written on the device, and stderr stays the camera's

    def _authorized(self, query: dict) -> bool:
        token = self.server.token
        if not token:
            return True
        given = (query.get("token") or [""])[0]
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            given = given or auth[7:].strip()
        return hmac.compare_digest(given.encode(), token.encode())

    def _reply(self, code: int, body: bytes, ctype: str, extra: Optional[dict] = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self._send(body)

    def _send(self, data: bytes) -> None:
        mv = memoryview(data)
        for i in range(0, len(mv), CHUNK):
            self.connection.sendall(mv[i:i + CHUNK])

    def _error(self, code: int, text: str, extra: Optional[dict] = None) -> None:
        self._reply(code, (text + "\n").encode(), "text/plain; charset=utf-8", extra)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._authorized(query):
            self._error(401, "a token is needed: ?token=... or 'Authorization: Bearer ...'",
                        {"WWW-Authenticate": 'Bearer realm="edgefashion"'})
            return
        hub = self.server.hub
        path = url.path.rstrip("/") or "/"
        if path in ("/", "/index.html"):
            self._reply(200, PAGE, "text/html; charset=utf-8")
        elif path == "/status":
            s = hub.status()
            with self.server.lock:
                s["serve"] = {"clients": self.server.streams, "max_clients": self.server.max_clients,
                              "fps_cap": round(1.0 / hub.period, 2), "quality": hub.quality,
                              "frames_encoded": hub.encoded}
            self._reply(200, json.dumps(s).encode(), "application/json")
        elif path == "/snapshot.jpg":
            _, jpeg = hub.next_jpeg(hub.current_seq(), timeout=5.0)
            if jpeg is None:
                self._error(503, "no frame (the camera loop has stopped or has no frame yet)")
            else:
                self._reply(200, jpeg, "image/jpeg")
        elif path == "/stream.mjpg":
            self._stream()
        else:
            self._error(404, "not found: try /, /stream.mjpg, /status or /snapshot.jpg")

    def _stream(self) -> None:
        srv, hub = self.server, self.server.hub
        with srv.lock:
            full = srv.streams >= srv.max_clients
            if full:
                srv.refused += 1
            else:
                srv.streams += 1
                srv.served += 1
        if full:
            self._error(503, f"busy: {srv.max_clients} viewers already (--serve-max-clients)", {"Retry-After": "5"})
            return
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "HEAD":
                return
            seq = hub.current_seq()
            while not hub.closed:
                new, jpeg = hub.next_jpeg(seq, timeout=1.0)
                if jpeg is None:
                    continue
                seq = new
                self._send(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                           .encode() + jpeg + b"\r\n")
        except OSError:
            pass  # gone, reset or stalled past the timeout: the viewer's loss only
        finally:
            with srv.lock:
                srv.streams -= 1


class FrameServer:
    """The HTTP server on its own thread around a FrameHub; stop() ends it and frees the port."""

    def __init__(self, address: str, hub: FrameHub, token: Optional[str] = None, max_clients: int = 4) -> None:
        host, port = parse_address(address)
        if max_clients < 1:
            raise ServeError(f"--serve-max-clients must be positive, got {max_clients}")
        self.hub = hub
        try:
            self.httpd = _Server((host, port), hub, token or None, max_clients)
        except OSError as e:
            hub.close()
            raise ServeError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
        h, p = self.httpd.server_address[:2]
        self.url = f"http://{'[' + h + ']' if ':' in h else h}:{p}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="edgefashion-serve", daemon=True)
        self._thread.start()

    def stats(self) -> dict:
        with self.httpd.lock:
            return {"url": self.url, "clients_served": self.httpd.served, "clients_refused": self.httpd.refused,
                    "frames_encoded": self.hub.encoded}

    def stop(self) -> None:
        self.hub.close()  # streams see it within their next wait and end
        self.httpd.shutdown()
        self.httpd.server_close()  # the listening socket: the port is free from here on
        self.httpd.close_connections()
        self._thread.join(timeout=5)


PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgefashion camera</title>
<style>
body{margin:0;font:14px/1.4 system-ui,sans-serif;background:#16181d;color:#e6e6e6}
header{padding:10px 16px;background:#22252c;display:flex;gap:16px;align-items:baseline}
header b{font-size:16px} #state{color:#8fd18f} #state.down{color:#ff9a6a}
main{display:flex;flex-wrap:wrap;gap:16px;padding:16px}
#view{max-width:100%;background:#000;border-radius:4px;min-width:320px;min-height:240px}
table{border-collapse:collapse;min-width:280px} td{padding:3px 10px 3px 0;vertical-align:top}
td:first-child{color:#9aa0aa} .bar{display:inline-block;height:10px;background:#5aaa5a;margin-right:6px}
h2{font-size:14px;margin:14px 0 4px;color:#9aa0aa;font-weight:normal}
</style></head><body>
<header><b>edgefashion camera</b><span id="model"></span><span id="state">connecting</span></header>
<main><img id="view" alt="live camera with the classifier's overlay">
<section><table id="stats"></table><h2>top</h2><table id="top"></table><h2>latency (ms, p50 / p95)</h2>
<table id="lat"></table></section></main>
<script>
const q = location.search, $ = id => document.getElementById(id);
const view = $("view");
function connect() { view.src = "stream.mjpg" + q; }
view.onerror = () => { $("state").textContent = "stream lost, retrying"; $("state").className = "down";
                       setTimeout(connect, 2000); };
connect();
function rows(el, list) {
  el.replaceChildren(...list.map(r => { const tr = document.createElement("tr");
    r.forEach(c => { const td = document.createElement("td");
      if (c instanceof Node) td.append(c); else td.textContent = c; tr.append(td); }); return tr; }));
}
function bar(p) { const s = document.createElement("span"); s.className = "bar";
  s.style.width = Math.round(120 * p) + "px"; return s; }
async function poll() {
  try {
    const r = await fetch("status" + q, {cache: "no-store"});
    if (!r.ok) throw new Error(r.status);
    const s = await r.json();
    $("model").textContent = s.model.split("/").slice(-2).join("/") + "  \\u2190  " + s.source;
    $("state").textContent = "live"; $("state").className = "";
    const up = Math.round(s.uptime_s);
    const st = [["label", s.label], ["FPS", s.fps], ["frames", s.frames],
      ["uncertain", s.uncertain_rate == null ? "-" : (100 * s.uncertain_rate).toFixed(1) + " %"],
      ["uptime", Math.floor(up / 60) + " min " + up % 60 + " s"],
      ["viewers", s.serve.clients + " / " + s.serve.max_clients]];
    if (s.accuracy != null) st.push(["accuracy", (100 * s.accuracy).toFixed(1) + " %"]);
    rows($("stats"), st);
    rows($("top"), s.top.map(t => { const d = document.createElement("span");
      d.append(bar(t.prob), t.prob.toFixed(2)); return [t.label, d]; }));
    rows($("lat"), Object.entries(s.latency_ms).map(([k, v]) => [k, v.p50.toFixed(2) + " / " + v.p95.toFixed(2)]));
  } catch (e) { $("state").textContent = "camera stopped or unreachable"; $("state").className = "down"; }
}
poll(); setInterval(poll, 1000);
</script></body></html>
"""
