"""The console's WSGI application (Werkzeug).

Why Werkzeug: the daemon already runs a threaded stdlib HTTP server for /healthz and /metrics;
the console needs routing, request parsing and streamed responses on that same port, not a
second server or an event loop.  Werkzeug (Pallets, the core of Flask) is a small, well-kept
WSGI toolkit with no dependencies of its own: `Map`/`Rule` routing, `Request`/`Response`, and
a generator response for Server-Sent Events, run per request by wsgiref on the existing
server's thread.  A page costs nothing while no browser is connected (the feed buffers only
event/command/speech bytes the publisher already encoded) and the hot path never waits for it.

Security: state-changing requests are POSTs carrying the page's CSRF token (X-CSRF-Token,
compared in constant time) and, when the browser sends one, an Origin naming this host;
with `console.token_hash` set every request needs the token (Bearer header or the HttpOnly
cookie `/?token=...` sets) or gets 401; POSTs are rate limited; static files come from a fixed
table read from the package's static/ folder at start, so no request path reaches the disk.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from perceptd.daemon.console.config import ConsoleConfig
from perceptd.daemon.console.feed import Feed
from perceptd.daemon.console.host import DaemonView, LabelRefused
from perceptd.daemon.console.retrain import Retrainer, RetrainRefused
from perceptd.daemon.console.teach import PromptTrial, TryBusy

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
COOKIE = "perceptd_console"
MAX_BODY = 64 * 1024  # as on the control socket
POSTS_PER_S = 10.0
HEARTBEAT_S = 15.0
MAX_LABEL_IDS = 500
THUMB_FPS = 2.0
THUMB_WIDTH = 320

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


def _static_table() -> dict[str, tuple[bytes, str]]:
    """Every file the console serves, read once: a request names a key, never a path."""
    return {p.name: (p.read_bytes(), _TYPES.get(p.suffix, "application/octet-stream"))
            for p in sorted(STATIC.iterdir()) if p.is_file() and p.suffix in _TYPES}


class _RateLimit:
    """A token bucket shared by every client (as the control socket limits requests)."""

    def __init__(self, per_s: float, burst: int) -> None:
        self.per_s, self.burst = per_s, float(burst)
        self.tokens, self.t = float(burst), time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.per_s)
            self.t = now
            if self.tokens < 1.0:
                return False
            self.tokens -= 1.0
            return True


def _json(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), status, mimetype="application/json")


def _cookie_token(cookie_header: str) -> str | None:
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


class Console:
    """The page, its API and its live feed, for one daemon."""

    def __init__(self, cfg: ConsoleConfig, view: DaemonView) -> None:
        self.cfg = cfg
        self.view = view
        self.feed = Feed(cfg.recent_events)
        self.csrf = secrets.token_urlsafe(32)  # per process; rendered into the page
        self.trial = PromptTrial(view.models, view.latest_rows)
        self.retrainer = Retrainer(view.config_path, view.config)
        self._static = _static_table()
        self._posts = _RateLimit(POSTS_PER_S, burst=20)
        self._stopped = threading.Event()
        self._live_cache: tuple[float, bytes] = (0.0, b"")
        self._live_lock = threading.Lock()
        self._thumbs: dict[str, tuple[float, bytes]] = {}
        self._thumb_lock = threading.Lock()
        self.url_map = Map([
            Rule("/", endpoint="index", methods=["GET"]),
            Rule("/static/<name>", endpoint="static", methods=["GET"]),
            Rule("/api/stream", endpoint="stream", methods=["GET"]),
            Rule("/api/recent", endpoint="recent", methods=["GET"]),
            Rule("/api/status", endpoint="status", methods=["GET"]),
            Rule("/api/samples", endpoint="samples", methods=["GET"]),
            Rule("/api/samples/label", endpoint="label", methods=["POST"]),
            Rule("/api/samples/delete", endpoint="delete_samples", methods=["POST"]),
            Rule("/api/samples/<sid>", endpoint="sample", methods=["GET"]),
            Rule("/api/samples/<sid>/frame.jpg", endpoint="sample_frame", methods=["GET"]),
            Rule("/api/try", endpoint="try_prompt", methods=["POST"]),
            Rule("/api/thumb/<camera>", endpoint="thumb", methods=["GET"]),
            Rule("/api/snapshot/<sid>", endpoint="snapshot", methods=["GET"]),
            Rule("/api/snapshot/<sid>/<camera>.jpg", endpoint="snapshot_image", methods=["GET"]),
            Rule("/api/retrain", endpoint="retrain_status", methods=["GET"]),
            Rule("/api/retrain/start", endpoint="retrain_start", methods=["POST"]),
            Rule("/api/retrain/<int:job>/gate.png", endpoint="retrain_png", methods=["GET"]),
            Rule("/api/retrain/promote", endpoint="promote", methods=["POST"]),
            Rule("/api/retrain/rollback", endpoint="rollback", methods=["POST"]),
        ])

    # ------------------------------------------------------------------ auth

    def authorized(self, headers: dict[str, str], target: str = "/") -> bool:
        """With a token configured, the Bearer header or the cookie must carry it (any path);
        `/?token=...` (the page's login link) carries it in the query once."""
        if self.cfg.token_hash is None:
            return True
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        token = token or _cookie_token(headers.get("cookie", ""))
        url = urlsplit(target)
        if not token and url.path == "/":
            token = (parse_qs(url.query).get("token") or [None])[0]
        if not token:
            return False
        digest = "sha256:" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        return hmac.compare_digest(digest, self.cfg.token_hash)

    def _check_post(self, request: Request) -> Response | None:
        sent = request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(sent.encode(), self.csrf.encode()):
            return _json({"ok": False, "error": "missing or wrong CSRF token"}, 403)
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.host:
            return _json({"ok": False, "error": f"cross-origin request from {origin} refused"}, 403)
        if (request.content_length or 0) > MAX_BODY:
            return _json({"ok": False, "error": f"request body over {MAX_BODY} bytes"}, 413)
        if not self._posts.take():
            return _json({"ok": False, "error": "too many requests; slow down"}, 429)
        return None

    # ------------------------------------------------------------------ WSGI

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        request.max_content_length = MAX_BODY
        try:
            endpoint, args = self.url_map.bind_to_environ(environ).match()
            if request.method == "POST":
                refused = self._check_post(request)
                if refused is not None:
                    return self._finish(refused, environ, start_response)
            response = getattr(self, f"on_{endpoint}")(request, **args)
        except HTTPException as exc:
            response = _json({"ok": False, "error": exc.description}, exc.code or 500)
        except Exception as exc:  # noqa: BLE001 - one bad request must not kill the server
            log.exception("event=console_error path=%s", request.path)
            response = _json({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, 500)
        return self._finish(response, environ, start_response)

    def _finish(self, response: Response, environ: dict[str, Any], start_response: Any) -> Any:
        for k, v in _SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response(environ, start_response)

    def stop(self) -> None:
        self._stopped.set()
        self.feed.close()
        self.retrainer.stop()

    # ------------------------------------------------------------------ pages

    def on_index(self, request: Request) -> Response:
        token = request.args.get("token")
        if token is not None and self.cfg.token_hash is not None:
            # authorized() checked it: log in once, the token moves into an HttpOnly cookie
            resp = Response("", 303, headers={"Location": "/"})
            resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
            return resp
        body, ctype = self._static["index.html"]
        page = body.replace(b"{{csrf}}", self.csrf.encode()).replace(
            b"{{timeline_minutes}}", str(self.cfg.timeline_minutes).encode())
        return Response(page, 200, content_type=ctype)

    def on_static(self, _request: Request, name: str) -> Response:
        hit = self._static.get(name)
        if hit is None or name == "index.html":
            raise NotFound(f"no static file {name!r}")
        return Response(hit[0], 200, content_type=hit[1])

    # ------------------------------------------------------------------ API

    def _starting(self) -> Response | None:
        return None if self.view.ready() else _json({"ok": False, "error": "starting"}, 503)

    def on_status(self, _request: Request) -> Response:
        return self._starting() or _json({"ok": True, **self.view.status()})

    def on_recent(self, request: Request) -> Response:
        after = request.args.get("after", 0, type=int)
        items = self.feed.recent(after)
        last = items[-1].n if items else max(after, self.feed.cursor)
        body = b'{"after":%d,"items":[' % last + b",".join(i.body for i in items) + b"]}"
        return Response(body, 200, mimetype="application/json")

    def _live_bytes(self) -> bytes:
        """One status computation per interval, however many pages watch."""
        now = time.monotonic()
        with self._live_lock:
            if now - self._live_cache[0] >= self.cfg.status_interval_s * 0.9:
                latest = {k: json.loads(v) for k, v in self.feed.latest().items()}
                live = {**self.view.live(), "latest": latest} if self.view.ready() else {"state": "starting"}
                self._live_cache = (now, json.dumps(live, separators=(",", ":")).encode())
            return self._live_cache[1]

    def on_stream(self, request: Request) -> Response:
        """Server-Sent Events: `msg` per published event/command/transcript, `live` per interval."""
        last = request.headers.get("Last-Event-ID", "")
        after = int(last) if last.isdigit() else request.args.get("after", 0, type=int)
        resp = Response(self._events(after), 200, mimetype="text/event-stream", direct_passthrough=True)
        resp.headers["X-Accel-Buffering"] = "no"
        return resp

    def _events(self, cursor: int) -> Iterator[bytes]:
        self.feed.watch()
        try:
            yield b"retry: 2000\n\n"
            next_live = next_beat = 0.0
            while not self._stopped.is_set():
                now = time.monotonic()
                if now >= next_live:
                    yield b"event: live\ndata: " + self._live_bytes() + b"\n\n"
                    next_live = now + self.cfg.status_interval_s
                    next_beat = now + HEARTBEAT_S
                elif now >= next_beat:
                    yield b": keep-alive\n\n"
                    next_beat = now + HEARTBEAT_S
                for item in self.feed.wait(cursor, timeout=max(0.05, next_live - time.monotonic())):
                    cursor = item.n
                    yield (b"id: %d\nevent: msg\ndata: " % item.n) + item.body.replace(b"\n", b" ") + b"\n\n"
        finally:
            self.feed.unwatch()

    def on_samples(self, request: Request) -> Response:
        starting = self._starting()
        if starting:
            return starting
        limit = max(1, min(500, request.args.get("limit", 100, type=int)))
        rows = self.view.samples(limit, request.args.get("trigger") or None,
                                 request.args.get("event") or None)
        return _json({"ok": True, "samples": rows, "events": [*self.view.event_names(), "none"]})

    def on_label(self, request: Request) -> Response:
        starting = self._starting()
        if starting:
            return starting
        data = request.get_json(silent=True) or {}
        ids, event = data.get("ids"), data.get("event")
        if (not isinstance(ids, list) or not ids or len(ids) > MAX_LABEL_IDS
                or not all(isinstance(i, str) for i in ids) or not isinstance(event, str)):
            return _json({"ok": False, "error": 'expected {"ids": [sample id, ...], "event": NAME}'}, 400)
        done, errors = [], {}
        for sid in ids:
            try:
                self.view.label(sid, event)
                done.append(sid)
            except LabelRefused as exc:
                errors[sid] = str(exc)
        status = 200 if done else 400
        return _json({"ok": bool(done), "labelled": done, "event": event, "errors": errors}, status)

    def on_sample(self, _request: Request, sid: str) -> Response:
        starting = self._starting()
        if starting:
            return starting
        detail = self.view.sample_detail(sid)
        if detail is None:
            raise NotFound(f"no sample {sid!r}")
        return _json({"ok": "error" not in detail, **detail})

    def on_sample_frame(self, _request: Request, sid: str) -> Response:
        """The frame a sample kept (only where `samples.raw_media.frames` allowed it)."""
        jpeg = self.view.sample_frame(sid) if self.view.ready() else None
        if jpeg is None:
            raise NotFound(f"no frame kept for sample {sid!r}")
        resp = Response(jpeg, 200, content_type="image/jpeg")
        resp.headers["Cache-Control"] = "private, max-age=3600"
        return resp

    def on_delete_samples(self, request: Request) -> Response:
        starting = self._starting()
        if starting:
            return starting
        ids = (request.get_json(silent=True) or {}).get("ids")
        if (not isinstance(ids, list) or not ids or len(ids) > MAX_LABEL_IDS
                or not all(isinstance(i, str) for i in ids)):
            return _json({"ok": False, "error": 'expected {"ids": [sample id, ...]}'}, 400)
        try:
            n = self.view.delete_samples(ids)
        except LabelRefused as exc:
            return _json({"ok": False, "error": str(exc)}, 400)
        log.info("event=console_samples_deleted requested=%d deleted=%d", len(ids), n)
        return _json({"ok": True, "deleted": n})

    def on_try_prompt(self, request: Request) -> Response:
        starting = self._starting()
        if starting:
            return starting
        data = request.get_json(silent=True) or {}
        text = data.get("text")
        if not isinstance(text, str):
            return _json({"ok": False, "error": 'expected {"text": "a sentence"}'}, 400)
        try:
            return _json({"ok": True, **self.trial.score(text)})
        except TryBusy as exc:
            return _json({"ok": False, "error": str(exc)}, 429)
        except ValueError as exc:
            return _json({"ok": False, "error": str(exc)}, 400)

    # ------------------------------------------------------------------ retrain

    def on_retrain_status(self, _request: Request) -> Response:
        return _json({"ok": True, **self.retrainer.status()})

    def on_retrain_start(self, _request: Request) -> Response:
        try:
            return _json({"ok": True, **self.retrainer.start()})
        except RetrainRefused as exc:
            return _json({"ok": False, "error": str(exc)}, 409)

    def on_retrain_png(self, _request: Request, job: int) -> Response:
        png = self.retrainer.png(job)
        if png is None:
            raise NotFound(f"no gate report image for retrain {job}")
        return Response(png, 200, content_type="image/png")

    def _switch(self, fn: Any) -> Response:
        starting = self._starting()
        if starting:
            return starting
        try:
            result = fn()
        except RetrainRefused as exc:
            return _json({"ok": False, "error": str(exc)}, 409)
        return _json(result, 200 if result["ok"] else 409)

    def on_promote(self, _request: Request) -> Response:
        return self._switch(self.retrainer.promote)

    def on_rollback(self, _request: Request) -> Response:
        return self._switch(self.retrainer.rollback)

    # ------------------------------------------------------------------ snapshots

    def on_snapshot(self, _request: Request, sid: str) -> Response:
        """A snapshot's meta (event, time, cameras); the store checks the id's form before any
        path is built, and camera names map to files through the meta, never through the URL."""
        meta = self.view.snapshot_meta(sid)
        if meta is None:
            raise NotFound(f"no snapshot {sid!r} (snapshots off, evicted by retention, or not kept)")
        cams = sorted(meta.get("cameras", {}))
        return _json({"ok": True, "id": sid, "event": meta.get("event"), "wall_time": meta.get("wall_time"),
                      "cameras": cams, "images": {c: f"/api/snapshot/{sid}/{quote(c)}.jpg" for c in cams}})

    def on_snapshot_image(self, _request: Request, sid: str, camera: str) -> Response:
        jpeg = self.view.snapshot_image(sid, camera)
        if jpeg is None:
            raise NotFound(f"no image of camera {camera!r} in snapshot {sid!r}")
        resp = Response(jpeg, 200, content_type="image/jpeg")
        resp.headers["Cache-Control"] = "private, max-age=3600"  # a snapshot never changes
        return resp

    # ------------------------------------------------------------------ thumbnails

    def on_thumb(self, _request: Request, camera: str) -> Response:
        """A small JPEG of the camera's newest frame, encoded only when a page asks for it (at most
        THUMB_FPS per camera however many pages ask): nothing is encoded while no page watches."""
        jpeg = self._thumb(camera)
        if jpeg is None:
            raise NotFound(f"no frame from camera {camera!r}")
        return Response(jpeg, 200, content_type="image/jpeg")

    def _thumb(self, camera: str) -> bytes | None:
        now = time.monotonic()
        with self._thumb_lock:
            hit = self._thumbs.get(camera)
            if hit is not None and now - hit[0] < 1.0 / THUMB_FPS:
                return hit[1]
            image = self.view.camera_image(camera) if self.view.ready() else None
            if image is None:
                return None
            import cv2

            h, w = image.shape[:2]
            if w > THUMB_WIDTH:
                image = cv2.resize(image, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))),
                                   interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
            if not ok:
                return None
            self._thumbs[camera] = (now, buf.tobytes())
            return self._thumbs[camera][1]
