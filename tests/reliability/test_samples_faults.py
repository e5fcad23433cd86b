"""The sample store under faults, on a daemon logging ~10 samples/s (with frames): the state
disk fills up (a small tmpfs), and SIGKILL lands during sample writes."""

from __future__ import annotations

import random
import subprocess

import pytest

from tests.reliability import scenarios as sc
from tests.reliability.harness import Rig, can_mount, reps
from tests.rigs.ffmpeg_stream import ffmpeg_available

pytestmark = pytest.mark.skipif(not ffmpeg_available(), reason="ffmpeg is not installed")


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("samples"))
    state = r.tmp / "state"
    state.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(state)]
    mounted = can_mount() and subprocess.run(mount, check=False).returncode == 0
    r.state_dir, r.mounted = state, mounted  # type: ignore[attr-defined]
    try:
        r.add_udp_camera("camera0")
        r.write_config(samples=sc.samples_config(state / "samples"))
        r.start()
        yield r
    finally:
        r.close()
        if mounted:
            subprocess.run(["umount", "-l", str(state)], check=False)


def test_state_disk_full_during_sample_logging(rig) -> None:
    if not rig.mounted:
        pytest.skip("needs root with mount permission (a small tmpfs as the state disk)")
    res = sc.disk_full(rig, rig.state_dir)
    print(res.row())
    assert res.stayed_up and res.recover_s[0] < 15
    assert res.counts["canary commands"][0] == 0
    # the full disk costs the pipeline nothing beyond what the same load costs anyway
    assert res.lost_fraction("frames while full") <= res.lost_fraction("frames before (reference)") + 0.2


def test_sigkill_during_sample_writes(rig) -> None:
    res = sc.sigkill_during_sample_writes(rig, rig.state_dir / "samples", reps(1, 10), random.Random(4))
    print(res.row())
    assert res.stayed_up, res.notes
    assert res.counts["index rows without a complete sample"][0] == 0
