"""The HTTP side of health: /healthz and /metrics on a small threaded stdlib server.

Loopback by default; a wider bind needs `allow_insecure: true` (HTTP here has neither
encryption nor authentication, and /metrics tells a lot about the device).  Routes are plain
callables, so the server knows nothing about the daemon.  Every other path and method goes to an
optional WSGI application (the web console, daemon/console/), run by the stdlib's wsgiref
handler on this same threaded server; an optional `authorize(headers, request target)` guards
every path (401).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit
from wsgiref.handlers import SimpleHandler

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

log = logging.getLogger(__name__)

DEFAULT_PORT = 9460

# a route: request headers -> (status, content type, body)
Route = Callable[[dict[str, str]], tuple[int, str, bytes]]
# a WSGI application (PEP 3333) for the paths no route answers
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def is_loopback_host(host: str) -> bool:
    """A literal loopback address or `localhost` (what may bind without authentication)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HttpConfig(BaseModel):
    """Health and metrics over HTTP (/healthz, /metrics)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="serve /healthz and /metrics")
    allow_insecure: bool = Field(
        default=False, description="permit a non-loopback host (plain HTTP, no authentication)"
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, description="TCP port (0 = any free port)")
    required_sources: list[str] = Field(
        default_factory=lambda: ["*"],
        description="source ids whose loss makes /healthz answer 503 ('*' = every source)",
    )

    @field_validator("host")
    @classmethod
    def _host(cls, v: str, info: ValidationInfo) -> str:
        if not is_loopback_host(v) and not info.data.get("allow_insecure", False):
            raise ValueError(f"{v!r} serves health and metrics beyond loopback; "
                             "set allow_insecure: true to permit it")
        return v


def json_body(status: int, obj: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class _Handler(BaseHTTPRequestHandler):
    server_version = "perceptd"
    sys_version = ""
    timeout = 10  # a client that never finishes its request cannot hold a thread for long
    routes: dict[str, Route] = {}
    app: WsgiApp | None = None
    authorize: Callable[[dict[str, str], str], bool] | None = None

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        self._serve(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def do_POST(self) -> None:  # noqa: N802
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        headers = {k.lower(): v for k, v in self.headers.items()}
        route = self.routes.get(path) if self.command in ("GET", "HEAD") else None
        if self.authorize is not None and not type(self).authorize(headers, self.path):  # pyright: ignore[reportOptionalCall]
            status, ctype, body = json_body(401, {"error": "authentication required"})
        elif route is None and self.app is not None:
            self._wsgi()
            return
        elif route is None:
            status, ctype, body = json_body(404, {"error": f"no such path {path}",
                                                  "paths": sorted(self.routes)})
        else:
            try:
                status, ctype, body = route(headers)
            except Exception as exc:  # noqa: BLE001 - one bad scrape must not kill the server
                log.exception("event=http_route_failed path=%s", path)
                status, ctype, body = json_body(500, {"error": f"{type(exc).__name__}: {exc}"})
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="perceptd"')
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _wsgi(self) -> None:
        """Hand the request to the WSGI app; the response streams (Server-Sent Events)."""
        url = urlsplit(self.path)
        host, port = self.server.server_address[:2]  # pyright: ignore[reportIndexIssue] - an (host, port) tuple
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command, "SCRIPT_NAME": "",
            "PATH_INFO": unquote(url.path, "latin-1"), "QUERY_STRING": url.query,
            "SERVER_NAME": str(host), "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version, "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("content-type", ""),
            "CONTENT_LENGTH": self.headers.get("content-length", ""),
        }
        for k, v in self.headers.items():
            key = "HTTP_" + k.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = v
        handler = SimpleHandler(self.rfile, self.wfile, sys.stderr, environ, multithread=True,  # pyright: ignore[reportArgumentType]
                                multiprocess=False)
        handler.os_environ = {}  # the process environment is none of a request's business
        handler.server_software = self.server_version
        handler.http_version = "1.0"
        handler.run(type(self).app)  # pyright: ignore[reportArgumentType] - set whenever _wsgi is reached
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("event=http_request peer=%s %s", self.client_address[0], format % args)


class HttpServer:
    """ThreadingHTTPServer in its own thread; bind errors raise in start()."""

    def __init__(self, cfg: HttpConfig, routes: dict[str, Route], app: WsgiApp | None = None,
                 authorize: Callable[[dict[str, str], str], bool] | None = None) -> None:
        self.cfg = cfg
        self.routes = dict(routes)
        self.app = app
        self.authorize = authorize
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        handler = type("PerceptdHandler", (_Handler,), {
            "routes": self.routes, "app": staticmethod(self.app) if self.app else None,
            "authorize": staticmethod(self.authorize) if self.authorize else None})
        try:
            srv = ThreadingHTTPServer((self.cfg.host.strip("[]"), self.cfg.port), handler)
        except OSError as exc:
            raise RuntimeError(f"cannot listen on http {self.cfg.host}:{self.cfg.port}: {exc}") from None
        srv.daemon_threads = True
        self._server = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.25},
                                        name="http", daemon=True)
        self._thread.start()
        log.info("event=http_started endpoint=%s paths=%s", self.endpoint, ",".join(sorted(self.routes)))

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else 0

    @property
    def endpoint(self) -> str:
        host = self.cfg.host if ":" not in self.cfg.host else f"[{self.cfg.host.strip('[]')}]"
        return f"http://{host}:{self.port}" if self._server else ""

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)
        log.info("event=http_stopped")
