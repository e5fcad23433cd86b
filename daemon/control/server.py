"""The control socket: a ROUTER in its own thread that answers every frame it receives.

ROUTER rather than REP: a client that never reads its reply cannot wedge the socket for
the others (REP must alternate strictly). REQ peers send ``[id, b"", payload]``; DEALER
peers may omit the empty delimiter; the reply mirrors whichever envelope arrived. Anything
malformed gets ``{"ok": false, "error": "<one line>"}``; nothing a peer sends ends the thread.
Handlers run in this thread and must be quick (enqueue work, read state), never block.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import zmq
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from perceptd.daemon.control.requests import REQUEST_TYPES, RequestError, parse_request
from perceptd.daemon.errors import Refused
from perceptd.daemon.messages import dumps
from perceptd.daemon.sockets import SocketService, check_bind_endpoint, curve_on, open_bound_socket

log = logging.getLogger(__name__)

DEFAULT_CONTROL_ENDPOINT = "tcp://127.0.0.1:5561"
_MAX_PEERS = 4096  # token buckets kept; the least recently seen peer is forgotten first
_BATCH = 256  # requests served per poll wake-up before checking the stop flag again

Handler = Callable[[Any], Mapping[str, Any]]


class ControlConfig(BaseModel):
    """The control socket (send / status / label / reload)."""

    model_config = ConfigDict(extra="forbid")

    allow_insecure: bool = Field(
        default=False, description="permit binding a non-loopback address (no authentication)"
    )
    endpoint: str = Field(
        default=DEFAULT_CONTROL_ENDPOINT,
        description="bind URI: tcp://HOST:PORT (PORT 0 or * = any free port), ipc://PATH",
    )
    max_request_bytes: int = Field(
        default=65536, ge=256, le=1 << 24, description="larger requests get an error reply"
    )
    rate_limit_per_s: float = Field(
        default=20.0, gt=0, le=1e6, description="sustained requests per second per connected peer"
    )
    burst: int = Field(default=40, ge=1, le=1_000_000, description="requests a peer may send at once")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str, info: ValidationInfo) -> str:
        return check_bind_endpoint(v, bool(info.data.get("allow_insecure", False)) or curve_on(info))


class RequestRejected(Refused):
    """Raised by a handler for a well-formed request it cannot do; str() becomes the error.
    (Any `Refused` a handler lets through is answered the same way.)"""


class HandlerRegistry:
    """Request type -> handler, filled explicitly by the app; one handler per type."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, request_type: str, handler: Handler) -> None:
        if request_type not in REQUEST_TYPES:
            raise ValueError(f"unknown request type {request_type!r} (one of {REQUEST_TYPES})")
        if request_type in self._handlers:
            raise ValueError(f"a handler for {request_type!r} is already registered")
        self._handlers[request_type] = handler

    def get(self, request_type: str) -> Handler | None:
        return self._handlers.get(request_type)

    def types(self) -> list[str]:
        return sorted(self._handlers)


class TokenBuckets:
    """Per-peer token buckets (rate per second, burst capacity), bounded in memory."""

    def __init__(self, rate: float, burst: int, max_peers: int = _MAX_PEERS) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._max_peers = max_peers
        self._buckets: collections.OrderedDict[bytes, tuple[float, float]] = (
            collections.OrderedDict()
        )

    def allow(self, peer: bytes, now: float) -> bool:
        tokens, last = self._buckets.pop(peer, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        ok = tokens >= 1.0
        self._buckets[peer] = (tokens - 1.0 if ok else tokens, now)
        if len(self._buckets) > self._max_peers:
            self._buckets.popitem(last=False)
        return ok


@dataclass(frozen=True)
class ControlStats:
    requests: dict[str, int]  # served requests per type
    errors: dict[str, int]  # error replies per reason
    received: int  # every message, valid or not
    replies_dropped: int  # replies libzmq refused (peer gone or not reading)


class ControlServer(SocketService):
    """Serves control requests on a ROUTER socket from its own thread."""

    def __init__(
        self,
        ctx: zmq.Context,
        config: ControlConfig,
        registry: HandlerRegistry,
        *,
        poll_ms: int = 100,
        secure: Callable[[zmq.Socket], None] | None = None,
    ) -> None:
        """`secure` sets up the socket before bind (CURVE server keys)."""
        super().__init__()
        self._ctx = ctx
        self._secure = secure
        self._cfg = config
        self._registry = registry
        self._poll_ms = poll_ms
        self._buckets = TokenBuckets(config.rate_limit_per_s, config.burst)
        self._lock = threading.Lock()  # guards the counters only
        self._requests: collections.Counter[str] = collections.Counter()
        self._errors: collections.Counter[str] = collections.Counter()
        self._received = 0
        self._replies_dropped = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind (errors raise here, in the caller's thread) and start serving."""
        if self._sock is not None:
            raise RuntimeError("control server already started")
        # libzmq disconnects peers whose single frame exceeds MAXMSGSIZE, before we could read
        # it: far above max_request_bytes so ordinary oversize requests still get a reply.
        self._sock, self._endpoint = open_bound_socket(
            self._ctx, zmq.ROUTER, self._cfg.endpoint, what="control", secure=self._secure,
            options={zmq.MAXMSGSIZE: max(16 * self._cfg.max_request_bytes, 1 << 20)})
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self._thread.start()
        log.info("control started endpoint=%s handlers=%s", self._endpoint,
                 ",".join(self._registry.types()))

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._join(timeout_s)
        log.info("control stopped received=%d errors=%d", self._received,
                 sum(self._errors.values()))

    def stats(self) -> ControlStats:
        with self._lock:
            return ControlStats(dict(self._requests), dict(self._errors), self._received,
                                self._replies_dropped)

    # ------------------------------------------------------------------ serving

    def handle(self, peer: bytes, body: list[bytes]) -> dict[str, Any]:
        """The transport-free core: the frames after the envelope -> the reply object."""
        with self._lock:
            self._received += 1
        try:
            if not self._buckets.allow(peer, time.monotonic()):
                raise RequestError("rate_limited", "rate limited")
            size = sum(len(f) for f in body)
            if size > self._cfg.max_request_bytes:
                raise RequestError(
                    "too_large", f"request too large: {size} bytes > {self._cfg.max_request_bytes}"
                )
            if len(body) != 1:
                raise RequestError(
                    "empty" if not body else "multipart",
                    "empty request" if not body
                    else f"request must be one frame, got {len(body)} frames",
                )
            req = parse_request(body[0], self._cfg.max_request_bytes)
            return self._dispatch(req)
        except RequestError as exc:
            return self._fail(exc.reason, str(exc))

    def _dispatch(self, req: Any) -> dict[str, Any]:
        kind = req.type
        with self._lock:
            self._requests[kind] += 1
        handler = self._registry.get(kind)
        if handler is None:
            return self._fail("no_handler", f"{kind} requests are not served by this daemon")
        try:
            result = handler(req)
        except Refused as exc:
            return self._fail("rejected", str(exc) or f"{kind} rejected")
        except Exception as exc:
            log.exception("control handler failed type=%s", kind)
            return self._fail("handler_error", f"{kind} failed: {type(exc).__name__}: {exc}")
        if not isinstance(result, Mapping):
            log.error("control handler returned %s type=%s", type(result).__name__, kind)
            return self._fail("handler_error", f"{kind} failed: handler returned no object")
        reply = {"ok": True, **result}
        if reply["ok"] is False:
            with self._lock:
                self._errors["rejected"] += 1
        return reply

    def _fail(self, reason: str, message: str) -> dict[str, Any]:
        with self._lock:
            self._errors[reason] += 1
        return {"ok": False, "error": message}

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                if not poller.poll(self._poll_ms):
                    continue
                for _ in range(_BATCH):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._serve(sock, frames)
        except zmq.ContextTerminated:
            log.info("control context terminated")
        except BaseException as exc:  # first-error capture: the supervisor reads .error
            self._error = exc
            log.exception("control thread failed error=%r", exc)
        finally:
            sock.close(linger=0)

    def _serve(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        peer, rest = frames[0], frames[1:]
        delimited = bool(rest) and rest[0] == b""
        body = rest[1:] if delimited else rest
        try:
            reply = self.handle(peer, body)
            data = dumps(reply)
        except Exception as exc:  # e.g. a handler result that is not JSON: still answer
            log.exception("control reply failed")
            data = dumps(self._fail("handler_error", f"internal error: {type(exc).__name__}"))
        envelope = [peer, b""] if delimited else [peer]
        try:
            sock.send_multipart([*envelope, data], zmq.NOBLOCK)
        except zmq.Again:
            with self._lock:
                self._replies_dropped += 1
