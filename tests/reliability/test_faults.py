"""Fault injection on one running daemon: two UDP cameras (one behind a byte-flipping relay)
and a PulseAudio microphone, with a canary command every 0.5 s throughout.  Tests run in file
order; each scenario restores what it broke.  Short repetitions here; PERCEPTD_FULL=1 or
`python -m tests.reliability.report` for the issue's counts."""

from __future__ import annotations

import pytest

from tests.reliability import scenarios as sc
from tests.reliability.harness import CHUNKS_PER_S, Result, Rig, can_mount, reps
from tests.rigs.ffmpeg_stream import ffmpeg_available
from tests.rigs.pulse import pulse_unavailable_reason

pytestmark = [
    pytest.mark.skipif(not ffmpeg_available(), reason="ffmpeg is not installed"),
    # file order kept (one daemon): the last test checks the whole run for sequence gaps
    pytest.mark.random_order(disabled=True),
]

MAX_RECOVER_S = 15.0
MAX_FRAME_LOSS = 0.35  # while the source is up; the 2-core CI box runs everything at once


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    reason = pulse_unavailable_reason()
    if reason:
        pytest.skip(reason)
    r = Rig(tmp_path_factory.mktemp("faults"))
    try:
        r.add_udp_camera("camera0")
        r.add_udp_camera("camera1", relay=True)
        r.add_mic()
        # ipc: its small socket buffers let a non-reading subscriber hit the HWM in seconds
        r.write_config(publish={"sndhwm": 100, "endpoint": f"ipc://{r.tmp}/events.sock"})
        r.start()
        r.wait_data("vision", "camera0", sc.now(), 30)
        r.wait_data("vision", "camera1", sc.now(), 30)
        r.wait_data("audio", "mic0", sc.now(), 30)
        yield r
    finally:
        r.close()


def check(res: Result, frame_loss: float = MAX_FRAME_LOSS) -> None:
    print(res.row())
    assert res.stayed_up, res.notes
    assert all(t < MAX_RECOVER_S for t in res.recover_s), res.recover_s
    assert res.counts.get("canary commands", (0, 0))[0] == 0, res.counts
    assert res.lost_fraction("frames") <= frame_loss, res.counts


def test_baseline(rig) -> None:
    check(sc.baseline(rig, 4.0))


def test_camera_killed_and_restarted(rig) -> None:
    res = sc.camera_restarts(rig, "camera0", reps(3, 20))
    check(res)
    assert len(res.detect_s) == res.repetitions


def test_stream_stalls_without_closing(rig) -> None:
    res = sc.stream_stall(rig, "camera0", reps(1, 5))
    check(res)
    assert max(res.detect_s) < 5.0  # read_timeout_s is 1 s


def test_corrupt_packets(rig) -> None:
    check(sc.corrupt_packets(rig, "camera1", 4.0))


def test_microphone_vanishes_and_returns(rig) -> None:
    res = sc.mic_vanishes(rig, reps(1, 5))
    check(res)
    assert res.lost_fraction("audio chunks") <= 0.1, res.counts


def test_audio_overflow_under_cpu_load(rig) -> None:
    freeze_s = 2.0
    res = sc.audio_overflow(rig, load_s=4.0, freeze_s=freeze_s)
    check(res)  # its frame-loss bound reads nothing here: this scenario counts audio
    lost, expected = res.counts["audio chunks under load"]
    assert expected > 0 and lost <= 0.2 * expected, res.counts  # CPU load alone: 0/313 in docs/
    lost, expected = res.counts["audio chunks across freeze"]
    # a frozen process loses at most the frozen span (plus slack for counters read mid-burst)
    assert expected > 0 and lost <= (freeze_s + 2.0) * CHUNKS_PER_S, res.counts


def test_subscriber_that_never_reads(rig) -> None:
    res = sc.slow_subscriber(rig, reps(15.0, 30.0))
    check(res)
    assert res.counts["messages at the other subscriber"][0] == 0
    assert max(res.recover_s) < 2.0  # control answered quickly throughout


@pytest.mark.skipif(not can_mount(), reason="needs root with mount permission (read-only bind mount)")
def test_bundle_directory_read_only(rig) -> None:
    check(sc.bundle_readonly(rig))


def test_garbage_config_and_sighup(rig) -> None:
    kinds = list(sc.GARBAGE) if reps(0, 1) else ["binary", "wrong types"]
    res = sc.config_garbage(rig, kinds)
    check(res)
    assert len(res.detect_s) == len(kinds)


def test_corrupt_model_file_before_reload(rig) -> None:
    res = sc.corrupt_model(rig)
    check(res)
    assert res.counts["seq gaps across the swaps"][0] == 0


def test_one_run_no_seq_gap(rig) -> None:
    assert rig.stayed_up()
    assert rig.seq_gaps() == 0
