"""Client side of the ZeroMQ interface, for `perceptd send`, `status` and `tail`.

Errors are ControlError with one line that names the endpoint, so the CLI can print it
and exit non-zero without a traceback.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from perceptd.daemon.messages import dumps
from perceptd.daemon.security.curve import CurveClient

log = logging.getLogger(__name__)

DEFAULT_CONTROL_ENDPOINT = "tcp://127.0.0.1:5561"
DEFAULT_EVENTS_ENDPOINT = "tcp://127.0.0.1:5560"
_STOP_POLL_MS = 100  # how often a `subscribe(stop=...)` watcher looks at its stop flag


def connect_uri(bind_uri: str) -> str:
    """The address a local client connects to for a socket bound at `bind_uri` (a wildcard
    host `*` or `0.0.0.0` becomes loopback)."""
    return bind_uri.replace("://*:", "://127.0.0.1:").replace("://0.0.0.0:", "://127.0.0.1:")


class ControlError(RuntimeError):
    """The daemon could not be reached or answered nonsense; str() is one clear line."""


class NotListening(ControlError):
    """Nothing listens at the endpoint (the daemon is not running, or not yet)."""


_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def _wait_connected(sock: zmq.Socket, endpoint: str, deadline: float,
                    curve: CurveClient | None = None, fail_if_absent: bool = True) -> None:
    """Return once the ZMTP handshake succeeded; fail fast when nothing listens (the daemon
    is not running) or when the daemon refuses our keys (CURVE on one side only, or a key
    that is not on its allowlist)."""
    if curve is not None:
        curve.apply(sock)
    if endpoint.startswith("inproc://"):
        sock.connect(endpoint)
        return
    mon = sock.get_monitor_socket(zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_DISCONNECTED
                                  | zmq.EVENT_HANDSHAKE_SUCCEEDED | _HANDSHAKE_FAILED)
    try:
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise ControlError(f"bad endpoint {endpoint}: {exc}") from None
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not mon.poll(left_ms):
                if not fail_if_absent:
                    return
                raise NotListening(f"perceptd is not reachable at {endpoint} (connect timed out)")
            event = recv_monitor_message(mon)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return
            if event & _HANDSHAKE_FAILED or event == zmq.EVENT_DISCONNECTED:
                hint = ("our key is not on its allowlist, or the server key is wrong"
                        if curve is not None else "it requires CURVE keys (--client-key/--server-key)")
                raise ControlError(f"perceptd at {endpoint} refused the connection: {hint}")
            if event == zmq.EVENT_CONNECT_RETRIED and fail_if_absent:
                raise NotListening(f"perceptd is not running: nothing listens at {endpoint}")
    finally:
        sock.disable_monitor()
        mon.close(linger=0)


def publisher_listening(endpoint: str, curve: CurveClient | None = None,
                        timeout_s: float = 1.0) -> bool:
    """Whether a daemon's events socket answers at `endpoint` (a ZMTP handshake succeeds).
    False when nothing listens; a refused CURVE handshake raises ControlError."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        _wait_connected(sock, endpoint, time.monotonic() + timeout_s, curve)
        return True
    except NotListening:
        return False
    finally:
        sock.close(linger=0)
        ctx.term()


def send_request(
    endpoint: str,
    payload: Mapping[str, Any] | str,
    timeout_s: float = 3.0,
    *,
    ctx: zmq.Context | None = None,
    curve: CurveClient | None = None,
) -> dict[str, Any]:
    """Send one control request (a dict, or a bare string = a command) and return the reply.

    The reply is returned as is, ``{"ok": false, ...}`` included; ControlError only when
    no well-formed reply came.
    """
    data = payload.encode() if isinstance(payload, str) else dumps(dict(payload))
    own = ctx is None
    ctx = zmq.Context() if ctx is None else ctx
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        deadline = time.monotonic() + timeout_s
        _wait_connected(sock, endpoint, deadline, curve)
        sock.setsockopt(zmq.SNDTIMEO, max(1, int((deadline - time.monotonic()) * 1000)))
        sock.send(data)
        sock.setsockopt(zmq.RCVTIMEO, max(1, int((deadline - time.monotonic()) * 1000)))
        try:
            raw = sock.recv()
        except zmq.Again:
            raise ControlError(
                f"no reply from {endpoint} within {timeout_s:g} s (daemon busy or hung?)"
            ) from None
    except zmq.Again:
        raise ControlError(f"could not send to {endpoint} within {timeout_s:g} s") from None
    finally:
        sock.close(linger=0)
        if own:
            ctx.term()
    try:
        reply = json.loads(raw)
    except ValueError:
        raise ControlError(f"malformed reply from {endpoint}: {raw[:80]!r}") from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ControlError(f"malformed reply from {endpoint}: {raw[:80]!r}")
    return reply


def subscribe(
    endpoint: str,
    topics: Iterable[str] = (),
    *,
    ctx: zmq.Context | None = None,
    timeout_s: float | None = None,
    curve: CurveClient | None = None,
    stop: threading.Event | None = None,
    rcvhwm: int | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (topic, message) from the events socket; topics are prefixes (none = all).

    With `timeout_s`, the iteration ends after that long without a message. Frames that
    are not [topic, JSON object] are logged and skipped.

    With `stop` instead (a watcher thread: demo view, bench and test collectors), the
    iteration ends within 0.1 s of it being set, and the socket connects without waiting
    for the handshake, so that thread never blocks past `stop` nor raises on a refused key.
    `rcvhwm` bounds what libzmq queues for a slow reader (0 = unbounded).
    """
    if stop is not None and timeout_s is not None:
        raise ValueError("subscribe: pass timeout_s or stop, not both")
    own = ctx is None
    ctx = zmq.Context() if ctx is None else ctx
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
    try:
        if stop is None:
            # a refused handshake is an error; a daemon not (yet) running is waited for
            _wait_connected(sock, endpoint, time.monotonic() + 3.0, curve, fail_if_absent=False)
            poll_ms = None if timeout_s is None else int(timeout_s * 1000)
        else:
            if curve is not None:
                curve.apply(sock)
            sock.connect(endpoint)
            poll_ms = _STOP_POLL_MS
        for t in list(topics) or [""]:
            sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        while stop is None or not stop.is_set():
            if not sock.poll(poll_ms):
                if stop is None:
                    return
                continue
            frames = sock.recv_multipart()
            try:
                msg = json.loads(frames[-1])
                if len(frames) != 2 or not isinstance(msg, dict):
                    raise ValueError("not [topic, JSON object]")
            except ValueError as exc:
                log.warning("skipped malformed message frames=%d error=%s", len(frames), exc)
                continue
            yield frames[0].decode("utf-8", "replace"), msg
    finally:
        sock.close(linger=0)
        if own:
            ctx.term()


# --------------------------------------------------------------------------- rendering


def _top(top: Any, n: int = 3) -> str:
    return ", ".join(f"{label} {prob:.2f}" for label, prob in list(top or [])[:n])


def _event(m: Mapping[str, Any]) -> str:
    parts = [f"{m['event']} {m['phase'].upper()} score={m['score']:.2f}"]
    mods = sorted(m.get("modalities", {}).items(), key=lambda kv: -kv[1].get("weight", 0.0))
    for name, mod in mods:
        top = _top(mod.get("top"))
        parts.append(f"{name} w={mod['weight']:.2f} s={mod['score']:.2f}"
                     + (f" [{top}]" if top else ""))
    if m.get("sample_id"):
        parts.append(f"sample={m['sample_id']}")
    return " | ".join(parts)


def _vision(m: Mapping[str, Any]) -> str:
    faces = len(m.get("faces") or [])
    line = f"{m['source']} #{m['frame_seq']} {_top(m['top'])}"
    return line + (f" faces={faces}" if faces else "")


def _audio(m: Mapping[str, Any]) -> str:
    return f"{m['source']} speech={m['speech_prob']:.2f} {_top(m['top'])}"


def _speech(m: Mapping[str, Any]) -> str:
    dur = (m["end_ns"] - m["start_ns"]) / 1e9
    text = f'"{m["text"]}"' if m.get("text") is not None else "(no transcript)"
    extra = [m[k] for k in ("engine",) if m.get(k)]
    if m.get("latency_ms") is not None:
        extra.append(f"{m['latency_ms']:.0f} ms")
    return f"{m['source']} {dur:.2f} s {text}" + (f" ({', '.join(extra)})" if extra else "")


def _command(m: Mapping[str, Any]) -> str:
    outcome = f"-> {m['event']}" if m.get("accepted") and m.get("event") else (
        "accepted" if m.get("accepted") else "not matched")
    return f'{m["source"]} "{m["text"]}" {outcome}'


def _health(m: Mapping[str, Any]) -> str:
    parts = [f"{m['state']} model={m.get('model_version', '?')}"]
    if "uptime_s" in m:
        parts[0] += f" up={m['uptime_s']:.0f}s"
    srcs = []
    for sid, s in (m.get("sources") or {}).items():
        detail = ", ".join(x for x in (s.get("detail"),
                                       f"{s['reconnects']} reconnects" if s.get("reconnects")
                                       else None) if x)
        srcs.append(f"{sid}={s['state']}" + (f" ({detail})" if detail else ""))
    if srcs:
        parts.append("sources: " + " ".join(srcs))
    qs = [f"{q}={v['depth']}" + (f" ({v['dropped']} dropped)" if v.get("dropped") else "")
          for q, v in (m.get("queues") or {}).items()]
    if qs:
        parts.append("queues: " + " ".join(qs))
    return " | ".join(parts)


_RENDER = {"vision": _vision, "audio": _audio, "speech": _speech, "command": _command,
           "health": _health}


def format_message(msg: Mapping[str, Any]) -> str:
    """One human line for `perceptd tail`: time, topic, the gist, capture-to-publish latency."""
    topic = str(msg.get("topic", "?"))
    wall = str(msg.get("wall_time", ""))
    clock = wall[11:23] if len(wall) >= 23 else wall
    shadow = topic.startswith("shadow.event.")
    render = _event if topic.startswith("event.") or shadow else _RENDER.get(topic)
    try:
        body = render(msg) if render else json.dumps(msg, separators=(",", ":"))[:300]
    except (KeyError, TypeError, ValueError, AttributeError):
        body = json.dumps(msg, separators=(",", ":"), default=str)[:300]
    head = f"{clock} {'event' if topic.startswith('event.') else 'shadow' if shadow else topic:<7}"
    if shadow:
        body = f"[{msg.get('candidate_version')}] {body}"
    tail = ""
    if isinstance(msg.get("t_publish_ns"), int) and isinstance(msg.get("t_capture_ns"), int):
        lat_ms = (msg["t_publish_ns"] - msg["t_capture_ns"]) / 1e6
        tail = f"  [seq {msg.get('seq')} lat {lat_ms:.1f} ms]"
    return f"{head} {body}{tail}"
