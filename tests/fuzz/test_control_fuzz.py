"""The control socket under hypothesis: JSON structure, raw bytes, mutations, multipart frames.
Every input gets a reply that follows the contract (a JSON object with a boolean `ok`, errors as
one line), nothing hangs, nothing crashes.  CI runs a few thousand inputs per target;
`python -m tests.fuzz.run` runs 100,000+ and records the figures in docs/fuzzing.md."""

from __future__ import annotations

import json
import time

import pytest
import zmq

from tests.fuzz import fuzzers
from tests.fuzz.control import SocketClient, check_reply, in_process_server
from tests.fuzz.live import fuzz_daemon
from tests.fuzz.strategies import TRAVERSAL
from tests.reliability.harness import reps


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    daemon = fuzz_daemon(tmp_path_factory.mktemp("fuzz"))
    client = SocketClient(daemon.control_endpoint)
    try:
        yield daemon, client
    finally:
        client.close()
        daemon.kill()


def test_in_process_every_input_answered() -> None:
    n = reps(4000, 100_000)
    counter = fuzzers.Counter()
    fuzzers.control_in_process(n, counter)
    assert counter.n >= n


def test_socket_every_input_answered(live) -> None:
    daemon, client = live
    n = reps(2000, 100_000)
    counter = fuzzers.Counter()
    fuzzers.control_socket(client, n, counter)
    assert client.answered == client.sent >= n
    assert daemon.proc.poll() is None
    assert daemon.request({"type": "status"})["ok"]
    assert "Traceback" not in daemon.log(1_000_000)


def test_oversized_frame_is_dropped_not_fatal(live) -> None:
    """Above libzmq's MAXMSGSIZE (16x max_request_bytes) the peer is disconnected before the
    daemon reads anything: no reply to that peer, everyone else unaffected."""
    daemon, _ = live
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.control_endpoint)
    sock.send_multipart([b"", b"x" * (2 << 20)])
    assert not sock.poll(1000)
    sock.close(0)
    ctx.term()
    assert daemon.request({"type": "status"})["ok"]


def test_spamming_reload_does_not_stall_the_control_thread(live) -> None:
    """`reload` hashes the bundle (~0.2 s) only when the pointer moved: a client repeating it
    cannot keep the control thread busy and delay everyone else."""
    daemon, client = live
    t = time.monotonic()
    for _ in range(200):
        assert client.send([b'{"type": "reload"}'])["ok"]
    assert time.monotonic() - t < 5.0
    t = time.monotonic()
    assert daemon.request({"type": "status"})["ok"]
    assert time.monotonic() - t < 1.0


def test_label_requests_cannot_reach_outside_the_sample_store(live) -> None:
    """Sample ids are validated before any path is built: traversal attempts get an error
    reply and no file appears or changes outside the state folder."""
    daemon, client = live
    tmp = daemon.config.parent

    def files() -> dict[str, int]:
        return {str(p): p.stat().st_mtime_ns for p in tmp.rglob("*")
                if p.is_file() and "state" not in p.relative_to(tmp).parts and p.name != "daemon.log"}

    before = files()
    for sid in TRAVERSAL + ["now/../../x", "20260101T000000-0123456789ab"]:
        reply = client.send([json.dumps({"type": "label", "sample": sid, "event": "lights_on"}).encode()])
        assert reply["ok"] is False, (sid, reply)
    assert files() == before


def test_rate_limit_answers_instead_of_queueing() -> None:
    server = in_process_server(rate_limit_per_s=5, burst=10)
    replies = [server.handle(b"peer", [b'{"type": "status"}']) for _ in range(50)]
    for r in replies:
        check_reply(json.dumps(r).encode())
    limited = [r for r in replies if not r["ok"] and "rate limited" in r["error"]]
    assert len(limited) >= 35  # burst 10, then ~5/s
    assert server.handle(b"another-peer", [b'{"type": "status"}'])["ok"]
