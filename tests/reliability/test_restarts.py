"""Start-up with missing devices, SIGKILL at random moments (plain, and during a hot swap) and
during a bundle promote.  One daemon config, restarted by the scenarios; tests run in order."""

from __future__ import annotations

import random

import pytest

from tests.reliability import scenarios as sc
from tests.reliability.harness import Rig, make_fake_bundles, reps
from tests.rigs.ffmpeg_stream import ffmpeg_available

pytestmark = [
    pytest.mark.skipif(not ffmpeg_available(), reason="ffmpeg is not installed"),
    # file order kept (one daemon): the first test needs the just-started daemon; later ones restart it
    pytest.mark.random_order(disabled=True),
]


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("restarts"))
    r.late_path = r.tmp / "late.mp4"  # type: ignore[attr-defined]
    try:
        r.add_udp_camera("camera0")
        r.camera_cfg("late", str(r.late_path), loop=True)  # type: ignore[attr-defined]
        r.camera_cfg("dev", "/dev/video57")
        r.write_config()
        r.start()
        yield r
    finally:
        r.close()


def test_device_paths_missing_at_start(rig) -> None:
    res = sc.missing_device(rig, "late", rig.late_path, "dev")
    print(res.row())
    assert res.stayed_up and res.recover_s and res.recover_s[0] < 15
    assert res.counts["canary commands"][0] == 0


def test_sigkill_at_random_points(rig) -> None:
    res = sc.sigkill_restarts(rig, reps(1, 10), random.Random(1))
    print(res.row())
    assert res.stayed_up, res.notes  # here: every restart checked out
    assert res.counts["canary commands"][0] == 0


def test_sigkill_during_hot_swap(rig) -> None:
    res = sc.sigkill_during_swap(rig, reps(1, 6), random.Random(2))
    print(res.row())
    assert res.stayed_up, res.notes


def test_sigkill_during_promote(tmp_path) -> None:
    root, a, b = make_fake_bundles(tmp_path)
    res = sc.sigkill_during_promote(root, a, b, reps(10, 50), random.Random(3))
    print(res.row())
    assert res.counts["pointers left unusable"][0] == 0
