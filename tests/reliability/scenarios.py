"""The fault scenarios: each injects one fault into a running Rig and returns its Result.

Plain functions, so pytest (short repetitions, with assertions) and the report command (full
repetitions, a table) run exactly the same code.  Each scenario leaves the rig as it found it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from tests.reliability.harness import (
    CHUNKS_PER_S,
    Result,
    Rig,
    clone_version,
    cpu_burners,
    now,
    read_only,
    replace_file,
    sigcont,
    sigstop,
)


def _finish(rig: Rig, res: Result, t0: float) -> Result:
    """Canary verdicts for the scenario's time span, and whether the daemon stayed up."""
    res.count("canary commands", *rig.canary_lost(t0, now()))
    res.stayed_up = res.stayed_up and rig.stayed_up()
    return res


def baseline(rig: Rig, seconds: float = 5.0) -> Result:
    """No fault: what the same rig delivers under the same load (the reference for the rest)."""
    res = Result("baseline (no fault)")
    t0 = now()
    time.sleep(seconds)
    for cid in [c["id"] for c in rig.cameras if c["id"] in rig.streams]:
        rig.count_frames(res, cid, [(t0, t0 + seconds)])
    code, _ = rig.healthz()
    res.notes.append(f"/healthz {code}")
    res.stayed_up = code == 200
    return _finish(rig, res, t0)


def camera_restarts(rig: Rig, cid: str, n: int) -> Result:
    """The sender is killed (power cut) and restarted, n times in a row."""
    res = Result("camera stream killed + restarted", repetitions=n)
    stream = rig.streams[cid]
    healthz: list[float] = []  # /healthz 503 after the cut, 200 after the restart
    t_start = now()
    t_up = t_start
    windows = []
    for _ in range(n):
        t_kill = now()
        windows.append((t_up, t_kill))
        stream.stop()
        res.detect_s.append(rig.wait_source(cid, False, t_kill, 15))
        healthz.append(rig.wait_healthz(503, t_kill, 10))
        t_restart = now()
        stream.start()
        res.recover_s.append(rig.wait_data("vision", cid, t_restart, 30))
        healthz.append(rig.wait_healthz(200, t_restart, 30))
        t_up = t_restart + res.recover_s[-1]
        time.sleep(1.0)  # a short up period before the next cut
    windows.append((t_up, now()))
    rig.count_frames(res, cid, windows)
    res.figures["healthz_503_s_max"] = round(max(healthz[0::2]), 2)
    res.figures["healthz_200_s_max"] = round(max(healthz[1::2]), 2)
    res.notes.append(f"/healthz 503 within {max(healthz[0::2]):.1f} s of each cut, 200 within "
                     f"{max(healthz[1::2]):.1f} s of each restart")
    return _finish(rig, res, t_start)


def stream_stall(rig: Rig, cid: str, n: int, stall_s: float = 3.0) -> Result:
    """The sender freezes (SIGSTOP) without closing anything, then resumes (SIGCONT)."""
    res = Result("stream stalls without closing (SIGSTOP sender)", repetitions=n)
    stream = rig.streams[cid]
    t_start = t_up = now()
    windows = []
    for _ in range(n):
        assert stream.proc is not None
        t_stop = now()
        windows.append((t_up, t_stop))
        sigstop(stream.proc)
        try:
            res.detect_s.append(rig.wait_source(cid, False, t_stop, 15))
            time.sleep(max(0.0, t_stop + stall_s - now()))
        finally:
            sigcont(stream.proc)
        t_cont = now()
        res.recover_s.append(rig.wait_data("vision", cid, t_cont, 30))
        t_up = t_cont + res.recover_s[-1] + 1.0  # the sender's catch-up burst is rate limited
        time.sleep(2.0)
    windows.append((t_up, now()))
    rig.count_frames(res, cid, windows)
    return _finish(rig, res, t_start)


def corrupt_packets(rig: Rig, cid: str, seconds: float, rate: float = 0.05) -> Result:
    """A share of the stream's UDP packets has random bytes flipped for `seconds`."""
    res = Result(f"corrupt packets ({rate:.0%} of UDP packets damaged)")
    relay = rig.relays[cid]
    t0 = now()
    c0 = relay.corrupted
    relay.rate = rate
    time.sleep(seconds)
    relay.rate = 0.0
    t1 = now()
    during = rig.frames(cid, t0, t1)
    res.notes.append(f"{relay.corrupted - c0} packets damaged; {during} frames still decoded "
                     f"during the fault (of {int(seconds * 10)})")
    assert rig.collector is not None
    went_down = rig.collector.snapshot(
        lambda m: m["topic"] == "health" and m["_t_recv"] >= t0
        and m.get("sources", {}).get(cid, {}).get("state") not in (None, "up"))
    if went_down:
        res.detect_s.append(went_down[0]["_t_recv"] - t0)
    res.recover_s.append(rig.wait_data("vision", cid, t1, 30))
    t_up = t1 + res.recover_s[-1] + 1.0  # the decoder resyncs at the next keyframe (1 s GOP)
    time.sleep(3.0)
    rig.count_frames(res, cid, [(t_up, now())])
    errors = rig.status()["stages"].get("vision", {}).get("errors", 0)
    res.notes.append(f"vision stage errors {errors}")
    return _finish(rig, res, t0)


def mic_vanishes(rig: Rig, n: int, gone_s: float = 1.0) -> Result:
    """PulseAudio is killed (the microphone vanishes) and started again, n times."""
    assert rig.mic is not None
    res = Result("microphone vanishes (PulseAudio killed) and returns", repetitions=n)
    healthz: list[float] = []
    t_start = now()
    for _ in range(n):
        t_kill = now()
        rig.mic.kill()
        res.detect_s.append(rig.wait_source("mic0", False, t_kill, 15))
        healthz.append(rig.wait_healthz(503, t_kill, 10))
        time.sleep(gone_s)
        t_back = now()
        rig.mic.start()
        res.recover_s.append(rig.wait_data("audio", "mic0", t_back, 30))
        healthz.append(rig.wait_healthz(200, t_back, 30))
        time.sleep(0.5)
        c0, t0 = rig.status()["sources"]["mic0"]["captured"], now()
        time.sleep(2.0)
        c1, t1 = rig.status()["sources"]["mic0"]["captured"], now()
        expected = int((t1 - t0) * CHUNKS_PER_S)
        res.count("audio chunks", expected - (c1 - c0), expected)
    res.notes.append(f"/healthz 503 within {max(healthz[0::2]):.1f} s, 200 within "
                     f"{max(healthz[1::2]):.1f} s of PulseAudio's return")
    return _finish(rig, res, t_start)


def _audio_counters(rig: Rig) -> tuple[int, int, int, float]:
    st = rig.status()
    mic = st["sources"]["mic0"]
    return mic["captured"], int(mic.get("overflows", 0)), st["queues"]["audio"]["dropped"], now()


def audio_overflow(rig: Rig, load_s: float, freeze_s: float = 2.0) -> Result:
    """CPU starved by 3x as many busy processes as cores for `load_s`; then the daemon itself
    frozen (SIGSTOP) for `freeze_s`, which overruns every audio buffer between it and the mic."""
    assert rig.daemon is not None
    res = Result(f"audio buffer overflow (CPU load {load_s:.0f} s, daemon frozen {freeze_s:.0f} s)")
    t_start = now()
    c0, o0, d0, t0 = _audio_counters(rig)
    with cpu_burners(3 * (os.cpu_count() or 2)):
        time.sleep(load_s)
    c1, o1, d1, t1 = _audio_counters(rig)
    expected = int((t1 - t0) * CHUNKS_PER_S)
    res.count("audio chunks under load", expected - (c1 - c0) + (d1 - d0), expected)
    sigstop(rig.daemon.proc)
    try:
        time.sleep(freeze_s)
    finally:
        sigcont(rig.daemon.proc)
    t_cont = now()
    res.recover_s.append(rig.wait_data("audio", "mic0", t_cont, 30))
    time.sleep(1.0)
    c2, o2, d2, t2 = _audio_counters(rig)
    expected = int((t2 - t1) * CHUNKS_PER_S)
    res.count("audio chunks across freeze", expected - (c2 - c1) + (d2 - d1), expected)
    res.notes.append(f"overflow flags {o2 - o0}, audio queue drops {d2 - d0}")
    return _finish(rig, res, t_start)


def slow_subscriber(rig: Rig, seconds: float) -> Result:
    """A subscriber that never reads (tiny HWM and socket buffer): the daemon must not block,
    the other subscriber must miss nothing; the slow one sees its drops as seq gaps."""
    assert rig.daemon is not None and rig.collector is not None
    res = Result("subscriber that never reads (PUB high-water mark)")
    ctx = zmq.Context()
    slow = ctx.socket(zmq.SUB)
    slow.setsockopt(zmq.RCVHWM, 10)
    slow.setsockopt(zmq.RCVBUF, 4096)
    slow.setsockopt(zmq.LINGER, 0)
    slow.setsockopt(zmq.SUBSCRIBE, b"")
    slow.connect(rig.daemon.events_endpoint)
    t0 = now()
    latencies = []
    try:
        while now() - t0 < seconds:
            t = now()
            rig.status()
            latencies.append(now() - t)
            time.sleep(0.5)
        t1 = now()
        got: list[dict[str, Any]] = []
        while slow.poll(500):  # poll, not NOBLOCK: lets libzmq refill the pipe from the socket
            m = json.loads(slow.recv_multipart()[1])
            if m["t_publish_ns"] >= t1 * 1e9:
                break  # published after the window: the backlog is drained
            got.append(m)
    finally:
        slow.close(0)
        ctx.term()
    a_ns, b_ns = int(t0 * 1e9), int(t1 * 1e9)
    published = {m["seq"] for m in rig.collector.snapshot(
        lambda m: m["run_id"] == rig.run_id and a_ns <= m["t_publish_ns"] < b_ns)}
    received = {m["seq"] for m in got if m["run_id"] == rig.run_id} & published
    res.figures["slow_subscriber_drops"] = len(published) - len(received)
    res.notes.append(f"slow subscriber received {len(received)} of {len(published)} published, "
                     f"{len(published) - len(received)} dropped by libzmq at its HWM (it sees them "
                     f"as missing seq); control p99 "
                     f"{sorted(latencies)[int(0.99 * (len(latencies) - 1))] * 1e3:.0f} ms")
    res.count("messages at the other subscriber", rig.seq_gaps(), len(published))
    res.recover_s.append(max(latencies))
    return _finish(rig, res, t0)


def bundle_readonly(rig: Rig) -> Result:
    """The bundle folder turns read-only: serving and reloading go on; pointer writes (promote,
    rollback) fail with a clear error instead of corrupting anything."""
    from perceptd.daemon.bundle import set_pointer

    assert rig.daemon is not None
    res = Result("bundle directory turns read-only")
    t0 = now()
    with read_only(rig.bundle_root) as how:
        reply = reload(rig)
        assert reply["ok"], reply
        try:
            set_pointer(rig.bundle_root, "previous", rig.bundle_version)
            res.notes.append("pointer write SUCCEEDED on a read-only folder")
            res.stayed_up = False
        except OSError as exc:
            res.notes.append(f"{how}: reload ok; promote refused ({exc.strerror})")
        time.sleep(2.0)
    assert reload(rig)["ok"]
    for cid in [c["id"] for c in rig.cameras if c["id"] in rig.streams][:1]:
        rig.count_frames(res, cid, [(t0 + 0.5, now())])
    return _finish(rig, res, t0)


GARBAGE = {
    "binary": bytes(random.Random(7).randrange(256) for _ in range(4096)),
    "broken yaml": b"bundle: [unclosed\n  - : : :\n\t\x00",
    "wrong types": b"runtime: {device: quantum, intra_op_threads: -3}\nevents: 7\n",
    "unknown section": b"bogus_section: {a: 1}\n",
}  # an EMPTY file is not here: it is a valid config (every default), by design


def config_garbage(rig: Rig, kinds: list[str]) -> Result:
    """The config file is replaced by garbage and SIGHUP sent: the daemon keeps its running
    config, logs one line and publishes the refusal on the health topic."""
    assert rig.daemon is not None and rig.collector is not None and rig.config_path is not None
    res = Result("config replaced by garbage + SIGHUP", repetitions=len(kinds))
    good = rig.config_path.read_bytes()
    t_start = now()
    try:
        for kind in kinds:
            rig.config_path.write_bytes(GARBAGE[kind])
            before = _last_health_errors(rig)
            t = now()
            rig.daemon.proc.send_signal(signal.SIGHUP)
            m = rig.collector.wait_for(
                lambda m, before=before: m["topic"] == "health" and m.get("errors", []) != before
                and "config" in m["errors"][-1] and "refused" in m["errors"][-1], 10, t)
            res.detect_s.append(m["_t_recv"] - t)
            time.sleep(0.5)
    finally:
        rig.config_path.write_bytes(good)
    t = now()
    rig.daemon.proc.send_signal(signal.SIGHUP)
    deadline = t + 10
    while "event=config_reloaded" not in rig.daemon.log(100_000) and now() < deadline:
        time.sleep(0.1)
    res.recover_s.append(now() - t)
    lines = [ln for ln in rig.daemon.log(1_000_000).splitlines() if "event=config_refused" in ln]
    res.notes.append(f"{len(lines)} one-line refusals logged; good config re-applied on SIGHUP")
    return _finish(rig, res, t_start)


def _last_health_errors(rig: Rig) -> list[str]:
    assert rig.collector is not None
    health = rig.collector.snapshot(lambda m: m["topic"] == "health")
    return health[-1].get("errors", []) if health else []


def _flip_bytes(path: Path, n: int = 64, seed: int = 3) -> None:
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    for _ in range(n):
        data[rng.randrange(len(data))] ^= 0xFF
    replace_file(path, bytes(data))  # a new inode: never write through to a shared file


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    replace_file(path, data[: len(data) // 3])


def reload(rig: Rig, timeout: float = 30.0) -> dict[str, Any]:
    """A `reload` request, retried while an earlier swap is still loading."""
    assert rig.daemon is not None
    deadline = now() + timeout
    while True:
        reply = rig.daemon.request({"type": "reload"})
        if reply["ok"] or "in progress" not in reply.get("error", "") or now() > deadline:
            return reply
        time.sleep(0.2)


def corrupt_model(rig: Rig) -> Result:
    """A model file corrupted on disk before a reload: refused (sha256), or, when the manifest
    was rewritten to match, refused at load; either way the old model keeps serving.  Then a
    good new bundle hot-swaps with no seq gap."""
    from perceptd.daemon.bundle import set_pointer

    assert rig.daemon is not None and rig.collector is not None
    res = Result("model file corrupted before a reload", repetitions=2)
    root, base = rig.bundle_root, rig.bundle_version
    t_start = now()
    serving = rig.status()["model_version"]
    tag = f"{int(time.time() * 1000) % 10**8}"
    bad_sha = clone_version(root, base, f"bad-sha-{tag}", lambda d: _flip_bytes(d / "fusion.onnx"))
    bad_load = clone_version(root, base, f"bad-load-{tag}", lambda d: _truncate(d / "fusion.onnx"),
                             rehash=True)
    good = clone_version(root, base, f"good-{tag}")
    try:
        set_pointer(root, "current", bad_sha.name)
        t = now()
        reply = reload(rig)
        res.detect_s.append(now() - t)
        assert not reply["ok"] and "sha256" in reply["error"], reply
        res.notes.append("flipped bytes: reload refused (sha256 mismatch)")
        set_pointer(root, "current", bad_load.name)
        t = now()
        reply = reload(rig)
        assert reply["ok"], reply  # verifies; the load fails in the background
        rig.collector.wait_for(lambda m: m["topic"] == "health" and any(
            bad_load.name in e for e in m.get("errors", [])), 60, t)
        res.detect_s.append(now() - t)
        res.notes.append("truncated + re-hashed: refused at load")
        assert rig.status()["model_version"] == serving
        set_pointer(root, "current", good.name)
        t = now()
        assert reload(rig)["ok"]
        deadline = t + 60
        while rig.status()["model_version"] != good.name and now() < deadline:
            time.sleep(0.2)
        res.recover_s.append(now() - t)
        res.notes.append(f"good bundle hot-swapped in {now() - t:.1f} s")
    finally:
        set_pointer(root, "current", base)
    assert reload(rig)["ok"]
    res.count("seq gaps across the swaps", rig.seq_gaps(), 0)
    return _finish(rig, res, t_start)


# --------------------------------------------------------------------------- restarts


def missing_device(rig: Rig, late_cam: str, late_path: Path, dev_cam: str) -> Result:
    """Camera paths that do not exist at start: the daemon comes up degraded and fuses the rest;
    a file that appears later is picked up (a V4L2 node cannot appear here: no v4l2loopback)."""
    from tests.rigs.ffmpeg_stream import make_video

    assert rig.collector is not None
    res = Result("device path that does not exist at start")
    t0 = now()
    st = rig.status()
    for cid in (late_cam, dev_cam):
        assert st["sources"][cid]["state"] != "up", st["sources"][cid]
    if st["state"] != "degraded":
        res.stayed_up = False
    res.notes.append(f"started {st['state']}; {dev_cam} (/dev/video*) {st['sources'][dev_cam]['state']}")
    code, body = rig.healthz()
    named = all(any(cid in p for p in body.get("problems", [])) for cid in (late_cam, dev_cam))
    res.notes.append(f"/healthz {code} naming both sources: {named} (problems: {body.get('problems')})")
    if code != 503 or not named:
        res.stayed_up = False
    tmp = late_path.with_name("making.mp4")
    make_video(Path(__file__).resolve().parents[2] / "samples" / "images" / "coffee.jpg", tmp,
               seconds=2.0, fps=10, size=(320, 240))
    t = now()
    os.replace(tmp, late_path)  # the path appears at once, complete
    res.recover_s.append(rig.wait_data("vision", late_cam, t, 30))
    return _finish(rig, res, t0)


def _first_seq(rig: Rig, run_id: str, timeout: float = 10.0) -> int:
    """The lowest seq a subscriber saw of a run (0 unless the slow joiner missed the first)."""
    assert rig.collector is not None
    rig.collector.wait_for(lambda m: m["run_id"] == run_id, timeout)
    return min(x["seq"] for x in rig.collector.snapshot(lambda x: x["run_id"] == run_id))


def _restart_after_kill(rig: Rig, res: Result, expect_version: str | None = None,
                        before_start: Callable[[], None] | None = None) -> None:
    """SIGKILL the daemon, start it again, check run_id, seq and the active bundle."""
    from perceptd.daemon.bundle import resolve_bundle, verify_bundle

    assert rig.daemon is not None and rig.canary is not None
    old_run = rig.run_id
    rig.canary.stop()  # a command in flight at SIGKILL is lost by design: not a canary's job
    time.sleep(0.3)
    rig.daemon.kill()
    if before_start is not None:
        before_start()
    t = now()
    st = rig.start()
    res.recover_s.append(now() - t)
    pub = st.get("published", {})
    published = sum(pub.values()) if isinstance(pub, dict) else int(pub)
    ok = (st["run_id"] != old_run and st["next_seq"] == published
          and _first_seq(rig, st["run_id"]) <= 5)
    active = verify_bundle(resolve_bundle(rig.bundle_root, "current")).version
    ok = ok and st["model_version"] == active and (expect_version is None or active == expect_version)
    if not ok:
        res.stayed_up = False
        res.notes.append(f"restart check failed: run {old_run}->{st['run_id']} next_seq "
                         f"{st['next_seq']} published {published} model {st['model_version']}/{active}")


def sigkill_restarts(rig: Rig, n: int, rng: random.Random) -> Result:
    """SIGKILL at a random moment, then restart: a new run_id, seq from 0, a valid bundle."""
    res = Result("SIGKILL at random points, restart", repetitions=n, restart=True)
    t0 = now()
    for _ in range(n):
        time.sleep(rng.uniform(0.2, 3.0))
        _restart_after_kill(rig, res)
    res.notes.append("recover = restart to ready (model load included)")
    return _finish(rig, res, t0)


def sigkill_during_swap(rig: Rig, n: int, rng: random.Random) -> Result:
    """SIGKILL while a hot swap loads the new bundle; after restart the active bundle is
    exactly the one `current` points at, and it verifies."""
    from perceptd.daemon.bundle import pointer_target, set_pointer

    assert rig.daemon is not None
    res = Result("SIGKILL during a hot swap, restart", repetitions=n, restart=True)
    t0 = now()
    root, base = rig.bundle_root, rig.bundle_version
    alt = f"alt-{int(time.time() * 1000) % 10**8}"
    clone_version(root, base, alt)
    try:
        for i in range(n):
            target = alt if i % 2 == 0 else base
            set_pointer(root, "current", target)
            assert reload(rig)["ok"]
            time.sleep(rng.uniform(0.0, 1.5))
            _restart_after_kill(rig, res, expect_version=pointer_target(root, "current"))
    finally:
        set_pointer(root, "current", base)
    res.notes.append("recover = restart to ready")
    return _finish(rig, res, t0)


PROMOTE_LOOP = """
import sys
from pathlib import Path
from perceptd.daemon.bundle import promote
root, a, b = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
print("go", flush=True)
while True:
    promote(root, a)
    promote(root, b)
"""


def sigkill_during_promote(root: Path, a: str, b: str, n: int, rng: random.Random) -> Result:
    """SIGKILL a process that promotes bundles in a loop: `current` and `previous` always
    point at complete, verifying bundles (symlink + rename is atomic)."""
    from perceptd.daemon.bundle import resolve_bundle, verify_bundle

    res = Result("SIGKILL during bundle promote (pointer swap)", repetitions=n, restart=True)
    bad = 0
    for _ in range(n):
        proc = subprocess.Popen([sys.executable, "-c", PROMOTE_LOOP, str(root), a, b],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(rng.uniform(0.05, 1.0))
        proc.kill()
        proc.wait(5)
        proc.stdout.close()
        for pointer in ("current", "previous"):
            try:
                verify_bundle(resolve_bundle(root, pointer))
            except Exception:  # noqa: BLE001 - counted
                bad += 1
    res.count("pointers left unusable", bad, 2 * n)
    res.stayed_up = bad == 0
    res.notes.append("no daemon involved: the promote path itself")
    return res


# --------------------------------------------------------------------------- sample store


def samples_config(root: Path) -> dict[str, Any]:
    """Log as fast as the logger allows (random trigger ~10/s, no caps, frames as JPEG), with
    no disk reserve so a full disk shows up as ENOSPC, not as the reserve check."""
    caps = dict.fromkeys(("low_confidence", "disagreement", "label", "command", "random"), 1_000_000)
    return {"enabled": True, "dir": str(root),
            "triggers": {"random_per_hour": 36000, "min_interval_s": 0},
            "caps": {"per_hour": 1_000_000, "per_trigger_per_hour": caps},
            "retention": {"min_free_mb": 0, "max_bytes": 0},
            "raw_media": {"frames": True}}


def _samples(rig: Rig) -> dict[str, Any]:
    return rig.status()["samples"]


def _wait_written(rig: Rig, more_than: int, timeout: float) -> float:
    t = now()
    while now() - t < timeout:
        if _samples(rig)["written"] > more_than:
            return now() - t
        time.sleep(0.1)
    raise TimeoutError(f"no sample written within {timeout} s: {_samples(rig)}")


def disk_full(rig: Rig, state_dir: Path, hold_s: float = 4.0) -> Result:
    """The state disk (a small tmpfs) fills up during sample logging: samples are dropped and
    counted, everything else goes on; once space is back, logging resumes by itself."""
    res = Result("state disk full during sample logging")
    t0 = now()
    _wait_written(rig, 0, 20)
    cid = next(iter(rig.streams))
    t_ref = now()
    time.sleep(hold_s)
    rig.count_frames(res, cid, [(t_ref, now())])  # the same load with the disk fine
    res.counts["frames before (reference)"] = res.counts.pop("frames")
    free = os.statvfs(state_dir)
    filler = state_dir / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:  # leave ~16 KiB: the next samples (and the index WAL) hit ENOSPC
        for margin_kib in (16, 256, 1024, 4096):  # the daemon writes meanwhile: retry smaller
            try:
                os.posix_fallocate(fd, 0, max(1, free.f_bavail * free.f_frsize - margin_kib * 1024))
                break
            except OSError:
                continue
    finally:
        os.close(fd)
    t_full = now()
    before = _samples(rig)
    deadline = t_full + 20
    while now() < deadline:
        st = _samples(rig)
        dropped = sum(st["dropped"].values()) - sum(before["dropped"].values())
        if dropped > 0:
            break
        time.sleep(0.2)
    res.detect_s.append(now() - t_full)
    time.sleep(hold_s)
    during = _samples(rig)
    res.notes.append("dropped while full: " + ", ".join(
        f"{k} {v - before['dropped'].get(k, 0)}" for k, v in during["dropped"].items()
        if v - before["dropped"].get(k, 0)))
    filler.unlink()
    t_free = now()
    res.recover_s.append(_wait_written(rig, during["written"], 30))
    res.notes.append(f"{_samples(rig)['written']} samples written in all")
    rig.count_frames(res, cid, [(t_full + 1.0, t_free)])
    res.counts["frames while full"] = res.counts.pop("frames")
    return _finish(rig, res, t0)


def check_store(root: Path) -> tuple[int, int, set[Path]]:
    """(index rows, rows whose file is missing or does not decode, leftover files: .part files
    and sample files without an index row)."""
    from perceptd.daemon.samples.store import SUFFIX, SampleStore

    with SampleStore(root, writer=False, create=False) as store:
        infos = store.list()
        broken = 0
        for info in infos:
            try:
                store.get(info.id)
            except Exception:  # noqa: BLE001 - counted: an index row must point at a whole sample
                broken += 1
        ids = {i.id for i in infos}
    left = set((root / "tmp").glob("*"))
    left |= {p for p in (root / "objects").glob(f"*/*{SUFFIX}") if p.name[: -len(SUFFIX)] not in ids}
    return len(infos), broken, left


def sigkill_during_sample_writes(rig: Rig, root: Path, n: int, rng: random.Random) -> Result:
    """SIGKILL while samples are written ~10/s: every index row still points at a complete,
    decodable sample; what the kill left (.part, unindexed files) is swept at the next start."""
    res = Result("SIGKILL during sample writes, restart", repetitions=n, restart=True)
    t0 = now()
    broken = rows_total = left = 0
    for _ in range(n):
        _wait_written(rig, 0, 20)
        time.sleep(rng.uniform(0.1, 2.0))
        seen: dict[str, tuple[int, int, set[Path]]] = {}  # the store as the kill left it
        _restart_after_kill(rig, res, before_start=lambda seen=seen: seen.update(c=check_store(root)))
        rows, bad, leftovers = seen["c"]
        rows_total += rows
        broken += bad
        left += len(leftovers)
        # the restarted writer sweeps at open; it is writing again, so only what the kill left
        # is checked (a file renamed in just before its index row is the normal write order)
        still = [p for p in leftovers if p.exists()]
        _, bad_after, _ = check_store(root)
        if still or bad_after or not rig.status()["samples"]["enabled"]:
            res.stayed_up = False
            res.notes.append(f"after restart: {len(still)} leftovers not swept, {bad_after} broken rows")
    res.count("index rows without a complete sample", broken, rows_total)
    res.notes.append(f"{left} partial/unindexed files left by the kills, all swept at restart")
    return _finish(rig, res, t0)
