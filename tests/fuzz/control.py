"""Shared pieces of the control-socket fuzzers: the reply contract, a server to drive in-process,
and a client that sends raw frames to a live daemon and tells a hang from a reply."""

from __future__ import annotations

import collections
import json
from typing import Any

import zmq

from perceptd.daemon.control.server import ControlConfig, ControlServer, HandlerRegistry, RequestRejected

REPLY_TIMEOUT_S = 5.0  # no reply within this is a hang


class ContractViolation(AssertionError):
    """A reply that breaks the control contract (or none at all)."""


def check_reply(data: bytes) -> dict[str, Any]:
    """Every reply is a JSON object with a boolean `ok`; errors are one non-empty line."""
    try:
        reply = json.loads(data)
    except ValueError as exc:
        raise ContractViolation(f"reply is not JSON: {data[:200]!r}") from exc
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ContractViolation(f"reply without a boolean ok: {data[:200]!r}")
    if not reply["ok"]:
        err = reply.get("error")
        if not isinstance(err, str) or not err.strip() or "\n" in err or len(err) > 2000:
            raise ContractViolation(f"error is not one clear line: {err!r}")
    return reply


def outcome(reply: dict[str, Any]) -> str:
    """A reply's kind for the tally: ok, or the error's leading words (before any value)."""
    if reply["ok"]:
        return "ok"
    head = reply["error"].split(":")[0].split("(")[0]
    return " ".join(head.split()[:5])


def stand_in_registry() -> HandlerRegistry:
    """Handlers shaped like the daemon's (queue a command, report status, refuse the rest):
    the in-process fuzzers exercise the transport-free core, not the daemon."""
    reg = HandlerRegistry()
    reg.register("command", lambda req: {"queued": True, "text_len": len(req.text)})
    reg.register("status", lambda req: {"state": "running"})

    def refuse(req: Any) -> dict[str, Any]:
        raise RequestRejected(f"{req.type} refused in this test")

    reg.register("reload", refuse)
    reg.register("label", refuse)
    return reg


def in_process_server(**cfg: Any) -> ControlServer:
    """A ControlServer never started: `handle()` is called directly (no socket, no thread)."""
    base = {"rate_limit_per_s": 1e6, "burst": 1_000_000}
    return ControlServer(zmq.Context.instance(), ControlConfig(**{**base, **cfg}), stand_in_registry())


def handle_bytes(server: ControlServer, frames: list[bytes], peer: bytes = b"fuzz") -> dict[str, Any]:
    """What the server would put on the wire for these frames, checked against the contract."""
    from perceptd.daemon.messages import dumps

    return check_reply(dumps(server.handle(peer, frames)))


class SocketClient:
    """A DEALER on a live daemon's control endpoint; `send` returns the checked reply."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.sent = 0
        self.answered = 0
        self.outcomes: collections.Counter[str] = collections.Counter()  # reply kinds seen

    def send(self, frames: list[bytes], delimited: bool = True) -> dict[str, Any]:
        out = ([b""] if delimited else []) + list(frames)
        if not out:
            out = [b""]
        self.sock.send_multipart(out)
        self.sent += 1
        if not self.poller.poll(REPLY_TIMEOUT_S * 1000):
            raise ContractViolation(f"no reply within {REPLY_TIMEOUT_S} s (hang) to {out[:3]!r:.200}")
        reply = check_reply(self.sock.recv_multipart()[-1])
        self.answered += 1
        self.outcomes[outcome(reply)] += 1
        return reply

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()
