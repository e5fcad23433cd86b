"""The daemon's ZeroMQ sockets: bind URIs checked (loopback unless allowed), sockets opened
bound with keepalive and optional CURVE, and the lifecycle the socket owners share (the events
PUB in publish/, the control ROUTER in control/)."""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Self
from urllib.parse import urlsplit

import zmq
from pydantic import ValidationInfo

_HEARTBEAT_IVL_MS = 10_000  # ZMTP heartbeats reap dead peers on a daemon that runs for months
_HEARTBEAT_TIMEOUT_MS = 30_000


# --------------------------------------------------------------------------- endpoints


def is_loopback_endpoint(uri: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on a loopback address (or the `lo` interface)."""
    parts = urlsplit(uri)
    if parts.scheme in ("ipc", "inproc"):
        return True
    if parts.scheme != "tcp":
        return False
    host = parts.netloc.rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a host name: may reach beyond this machine


def check_bind_endpoint(uri: str, allow_insecure: bool) -> str:
    """Validate a bind URI; refuse non-loopback binds unless explicitly allowed."""
    parts = urlsplit(uri)
    if parts.scheme not in ("tcp", "ipc", "inproc"):
        raise ValueError(f"{uri!r}: scheme must be tcp://, ipc:// or inproc://")
    if parts.scheme == "tcp":
        host, sep, port = parts.netloc.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{uri!r}: expected tcp://HOST:PORT")
        if port != "*" and not (port.isdigit() and 0 <= int(port) <= 65535):
            raise ValueError(f"{uri!r}: port must be 0-65535 or * (any free port)")
    elif not (parts.netloc or parts.path):
        raise ValueError(f"{uri!r}: missing path/name")
    if not allow_insecure and not is_loopback_endpoint(uri):
        raise ValueError(
            f"{uri!r} binds beyond loopback without encryption; "
            "set allow_insecure: true to permit it"
        )
    return uri


def bind_socket(sock: zmq.Socket, uri: str) -> str:
    """Bind and return the real endpoint (port 0 and * become the chosen port)."""
    if uri.startswith("tcp://") and uri.endswith(":0"):
        uri = uri[:-2] + ":*"  # libzmq spells "any free port" as *
    sock.bind(uri)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def set_keepalive(sock: zmq.Socket) -> None:
    sock.setsockopt(zmq.HEARTBEAT_IVL, _HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _HEARTBEAT_TIMEOUT_MS)


def open_bound_socket(
    ctx: zmq.Context,
    kind: int,
    uri: str,
    *,
    what: str,
    options: Mapping[int, int] | None = None,
    secure: Callable[[zmq.Socket], None] | None = None,
    error: type[Exception] = RuntimeError,
) -> tuple[zmq.Socket, str]:
    """A daemon-side socket (LINGER 0, keepalive, `options`, `secure` before bind), bound.

    Returns (socket, real endpoint). A bind failure raises `error` naming `what` in the
    caller's thread, so a bad endpoint stops start-up with one clear line; the socket is closed.
    """
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    for option, value in (options or {}).items():
        sock.setsockopt(option, value)
    set_keepalive(sock)
    try:
        if secure is not None:
            secure(sock)
        return sock, bind_socket(sock, uri)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise error(f"cannot bind {what} endpoint {uri}: {exc}") from None


class SocketService:
    """The lifecycle the daemon's socket owners share (events PUB, control ROUTER).

    One socket served by one thread: `start` binds in the caller's thread (so errors raise
    there) and starts it, `stop` ends it; `error` is the first error that ended the thread,
    read by the app's supervisor. Subclasses set `_sock`, `_endpoint`, `_thread`, `_error`.
    """

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._sock: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        self._endpoint = ""
        self._error: BaseException | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout_s: float = 5.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """The bound endpoint with the real port (after start)."""
        return self._endpoint

    @property
    def error(self) -> BaseException | None:
        """The error that ended the serving thread, if any."""
        return self._error

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _join(self, timeout_s: float) -> None:
        """Bounded: a wedged thread is logged (by the subclass's logger), never waited for forever."""
        if self._thread is None:
            return
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logging.getLogger(type(self).__module__).error(
                "%s thread did not stop within %.1f s", self._thread.name, timeout_s)


def curve_on(info: ValidationInfo) -> bool:
    """CURVE (security.curve, passed as validation context by the loader) permits wide binds."""
    return bool((info.context or {}).get("curve"))
