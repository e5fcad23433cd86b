"""The events PUB socket: one thread stamps and sends every message of the process.

Only this thread touches the socket (plus ``publish_now`` under the same lock), so ``seq``
is gapless by construction: it advances only when libzmq accepted the message. A PUB socket
never blocks on a slow subscriber; libzmq drops for that subscriber alone once its SNDHWM
pipe is full, silently, so those drops cannot be counted here. Only a refusal for the whole
socket (``zmq.Again``) is counted as ``dropped``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import zmq
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from perceptd.daemon.messages import Envelope, Message, Outbound, Payload, dumps, wall_time_iso
from perceptd.daemon.sockets import SocketService, check_bind_endpoint, curve_on, open_bound_socket

log = logging.getLogger(__name__)

DEFAULT_EVENTS_ENDPOINT = "tcp://127.0.0.1:5560"


# --------------------------------------------------------------------------- config


class PublisherConfig(BaseModel):
    """The events PUB socket."""

    model_config = ConfigDict(extra="forbid")

    allow_insecure: bool = Field(
        default=False, description="permit binding a non-loopback address (traffic is not encrypted)"
    )
    endpoint: str = Field(
        default=DEFAULT_EVENTS_ENDPOINT,
        description="bind URI: tcp://HOST:PORT (PORT 0 or * = any free port), ipc://PATH",
    )
    sndhwm: int = Field(
        default=1000, ge=1, le=1_000_000,
        description="messages queued per subscriber before libzmq drops for that subscriber",
    )
    close_linger_ms: int = Field(
        default=200, ge=0, le=10_000, description="at stop, how long queued messages may still flush"
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str, info: ValidationInfo) -> str:
        return check_bind_endpoint(v, bool(info.data.get("allow_insecure", False)) or curve_on(info))


# --------------------------------------------------------------------------- publisher


class SupportsGet(Protocol):
    """The publish queue: ``get(timeout)`` returns an item or None when nothing came.

    If it has a true ``closed`` attribute once drained (BoundedQueue), the thread ends.
    """

    def get(self, timeout: float | None = ...) -> Any: ...


@dataclass(frozen=True)
class PublisherStats:
    published: dict[str, int]  # per topic
    dropped: int  # refused by the socket as a whole (zmq.Again)
    invalid: int  # items that could not be serialised (producer bugs), never sent
    next_seq: int
    subscriptions: int  # net subscribe messages seen (XPUB mode only)


class PublisherError(RuntimeError):
    """The publisher cannot bind or has been closed."""


class EventPublisher(SocketService):
    """Consumes Outbound items from a queue in its own thread and publishes them stamped."""

    def __init__(
        self,
        ctx: zmq.Context,
        config: PublisherConfig,
        inbox: SupportsGet,
        *,
        model_version: Callable[[], str] = lambda: "unknown",
        observer: Callable[[Envelope], None] | None = None,
        tap: Callable[[Envelope, bytes], None] | None = None,
        annotate: Callable[[Payload], Payload] | None = None,
        secure: Callable[[zmq.Socket], None] | None = None,
        xpub: bool = False,
        poll_s: float = 0.1,
        drain_timeout_s: float = 1.0,
    ) -> None:
        """`model_version` is read per message (a hot swap shows at once); `observer` sees
        every sent envelope (latency metrics); `tap` also gets the exact JSON frame (bridges);
        `annotate` may add to a payload just before it is encoded (an event start's snapshot id);
        `secure` sets up the socket before bind (CURVE); `xpub` lets tests wait for subscribers."""
        super().__init__()
        self._ctx = ctx
        self._cfg = config
        self._inbox = inbox
        self._model_version = model_version
        self._observer = observer
        self._tap = tap
        self._annotate = annotate
        self._secure = secure
        self._xpub = xpub
        self._poll_s = poll_s
        self._drain_timeout_s = drain_timeout_s
        self.run_id = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._subs_cond = threading.Condition()
        self._seq = 0
        self._published: collections.Counter[str] = collections.Counter()
        self._dropped = 0
        self._invalid = 0
        self._subscriptions = 0
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind (errors raise here, in the caller's thread) and start the publishing thread."""
        if self._sock is not None or self._closed:
            raise PublisherError("publisher already started")
        options: dict[int, int] = {zmq.SNDHWM: self._cfg.sndhwm,
                                   **({zmq.XPUB_VERBOSE: 1} if self._xpub else {})}
        self._sock, self._endpoint = open_bound_socket(
            self._ctx, zmq.XPUB if self._xpub else zmq.PUB, self._cfg.endpoint, what="events",
            options=options, secure=self._secure, error=PublisherError)
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()
        log.info("publisher started endpoint=%s run_id=%s sndhwm=%d",
                 self._endpoint, self.run_id, self._cfg.sndhwm)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Drain what is queued (bounded), stop the thread, close with a short linger."""
        self._stopping.set()
        self._join(timeout_s)
        with self._lock:
            if self._sock is not None:
                self._sock.close(linger=self._cfg.close_linger_ms)
                self._sock = None
            self._closed = True
        log.info("publisher stopped published=%d dropped=%d invalid=%d",
                 sum(self._published.values()), self._dropped, self._invalid)

    # ------------------------------------------------------------------ publishing

    def publish_now(self, out: Outbound) -> Message | None:
        """Publish from the caller's thread (shutdown, final health); None if dropped."""
        env = self._send(out)
        return None if env is None else Message(env, out.payload)

    def stats(self) -> PublisherStats:
        with self._lock:
            return PublisherStats(dict(self._published), self._dropped, self._invalid,
                                  self._seq, self._subscriptions)

    def wait_for_subscriptions(self, n: int = 1, timeout_s: float = 5.0) -> bool:
        """XPUB mode: block until `n` subscriptions are live (the slow-joiner cure for tests)."""
        if not self._xpub:
            raise PublisherError("wait_for_subscriptions needs xpub=True")
        with self._subs_cond:
            return self._subs_cond.wait_for(lambda: self._subscriptions >= n, timeout_s)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                item = self._inbox.get(self._poll_s)
                if self._xpub:
                    self._read_subscriptions()
                if item is not None:
                    self._publish_item(item)
                elif getattr(self._inbox, "closed", False):
                    log.info("publisher inbox closed and drained")
                    return  # get() now returns None at once: leave instead of spinning
            self._drain()
        except zmq.ContextTerminated:
            log.info("publisher context terminated")
        except BaseException as exc:  # first-error capture: the app's supervisor reads .error
            self._error = exc
            log.exception("publisher thread failed error=%r", exc)

    def _drain(self) -> None:
        deadline = time.monotonic() + self._drain_timeout_s
        while time.monotonic() < deadline:
            item = self._inbox.get(0.0)
            if item is None:
                return
            self._publish_item(item)

    def _publish_item(self, item: Any) -> None:
        try:
            self._send(item)
        except (PublisherError, zmq.ContextTerminated):
            raise
        except Exception as exc:  # a producer bug must not end publishing for everyone
            with self._lock:
                self._invalid += 1
                n = self._invalid
            if n == 1 or n % 1000 == 0:
                log.warning("publisher dropped invalid item invalid=%d type=%s error=%r",
                            n, type(item).__name__, exc)

    def _send(self, out: Outbound) -> Envelope | None:
        payload = out.payload
        if self._annotate is not None:
            try:
                payload = self._annotate(payload)
            except Exception as exc:  # an annotation must never cost a message
                log.warning("publish annotate failed error=%r", exc)
        topic = payload.topic
        body = dumps(payload.to_wire())  # before the lock: a bad payload never consumes a seq
        t_capture = int(out.t_capture_ns)
        with self._lock:
            if self._sock is None:
                raise PublisherError("publisher is not running")
            t_publish = time.monotonic_ns()
            if t_capture > t_publish:
                log.warning("t_capture_ns in the future topic=%s ahead_ns=%d; clamped",
                            topic, t_capture - t_publish)
                t_capture = t_publish
            env = Envelope(topic, self._seq, self.run_id, t_capture, t_publish,
                           wall_time_iso(), self._current_model_version())
            head = dumps(env.to_wire())
            frames = [topic.encode(), head[:-1] + b"," + body[1:]]
            try:
                self._sock.send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.Again:
                self._dropped += 1
                return None
            self._seq += 1
            self._published[topic] += 1
        if self._observer is not None:
            try:
                self._observer(env)
            except Exception as exc:  # metrics must never cost a message
                log.warning("publish observer failed error=%r", exc)
        if self._tap is not None:
            try:
                self._tap(env, frames[1])
            except Exception as exc:  # a bridge must never cost a message either
                log.warning("publish tap failed error=%r", exc)
        return env

    def _current_model_version(self) -> str:
        try:
            return str(self._model_version())
        except Exception as exc:
            log.warning("model_version callable failed error=%r", exc)
            return "unknown"

    def _read_subscriptions(self) -> None:
        with self._lock:
            if self._sock is None:
                return
            delta = 0
            while True:
                try:
                    frame = self._sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if frame[:1] == b"\x01":
                    delta += 1
                elif frame[:1] == b"\x00":
                    delta -= 1
            if not delta:
                return
            self._subscriptions += delta
        with self._subs_cond:
            self._subs_cond.notify_all()
