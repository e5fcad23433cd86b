"""Sample logging in the real daemon: encrypted samples with raw media, SIGKILL while writing
and a restart, and a small quota that fills (samples dropped and counted, daemon up)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from perceptd.daemon.samples import crypto
from perceptd.daemon.samples.store import INDEX, SampleStore
from tests.rigs.daemon import Collector, DaemonProcess, daemon_config
from tests.rigs.ffmpeg_stream import ffmpeg_available, make_video

REPO = Path(__file__).resolve().parents[2]
SPEECH = REPO / "samples" / "audio" / "turn_on_the_kitchen_lights.wav"

pytestmark = [
    pytest.mark.skipif(not ffmpeg_available(), reason="ffmpeg is not installed"),
    # file order kept (one daemon): SIGKILL + restart with a small quota, the quota fills, then the CLI
    pytest.mark.random_order(disabled=True),
]

HAMMER = r"""
import os, sys, time, numpy as np
from perceptd.daemon.samples.record import Sample, new_sample_id
from perceptd.daemon.samples.store import SampleStore
store = SampleStore(sys.argv[1], writer=True)
rng = np.random.default_rng(int(sys.argv[2]))
i = 0
while True:
    wall = time.time_ns()
    s = Sample(id=new_sample_id(wall), created_ns=wall, t_capture_ns=0, trigger="random", event=None,
               score=None, model_version="v", encoder_fp="fp", events=("a",),
               scores=np.zeros(1, np.float32), x=rng.normal(size=(4, 384)).astype(np.float32),
               mask=np.ones(4, np.float32), modality_names=("vision", "face", "audio", "text"),
               jpeg=rng.bytes(300_000))
    store.put(s)
    i += 1
    if i == 1:
        print("writing", flush=True)
"""


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "perceptd", "samples", *args, "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60)


def _check_store(root: Path, key: bytes | None) -> int:
    """Reopen as the writer (which sweeps): every indexed sample is complete, nothing else left."""
    cipher = crypto.Cipher(key) if key else None
    with SampleStore(root, cipher=cipher, encrypt=key is not None, writer=True) as store:
        infos = store.list()
        for info in infos:
            s = store.get(info.id)  # decodes (and authenticates) the whole file
            assert s.id == info.id and s.x.shape == (4, 384)
        on_disk = {p.name[:-4] for p in (root / "objects").glob("*/*.smp")}
        assert on_disk == {i.id for i in infos}
        assert not any((root / "tmp").iterdir())
        assert store.stats()["samples"] == len(infos)
    return len(infos)


def test_sigkill_while_writing_leaves_no_partial_sample(tmp_path: Path) -> None:
    """A process that does nothing but write 300 KB samples is killed mid-stream, three times."""
    root = tmp_path / "samples"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", HAMMER, str(root), str(round_)],
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.3 + 0.2 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _check_store(root, None) >= 1


@pytest.fixture(scope="module")
def rig(tmp_path_factory, bundle_dir):
    tmp = tmp_path_factory.mktemp("samples_daemon")
    video = make_video(REPO / "samples" / "images" / "cat.jpg", tmp / "cat.mp4", seconds=2.0)
    samples = {
        "dir": str(tmp / "samples"),
        "encryption": {"enabled": True, "key_file": str(tmp / "keys" / "samples.key")},
        "raw_media": {"frames": True, "audio": True, "text": True},
        "triggers": {"random_per_hour": 36000, "min_interval_s": 0.2},
        "caps": {"per_hour": 100000, "per_trigger_per_hour": {"random": 100000}},
    }
    cfg = daemon_config(tmp, sources={
        "cameras": [{"id": "camera0", "uri": str(video), "fps": 10, "loop": True}],
        "audio_files": [{"id": "wav0", "path": str(SPEECH), "loop": True}]}, samples=samples)
    daemon = DaemonProcess(cfg)
    collector = Collector(daemon.events_endpoint)
    state = {"daemon": daemon, "collector": collector, "cfg": cfg, "tmp": tmp}
    try:
        daemon.wait_ready(90)
        yield state
    finally:
        state["daemon"].kill()
        collector.close()


def _written(daemon: DaemonProcess) -> int:
    return daemon.request({"type": "status"})["samples"]["written"]


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_encrypted_samples_with_media_and_private_files(rig) -> None:
    _wait(lambda: _written(rig["daemon"]) >= 4, 30, "no samples written")
    out = _cli(rig["cfg"], "list", "--json")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)["samples"]
    assert listed and all(s["encrypted"] for s in listed)
    with_media = [s for s in listed if "jpeg" in s["media"]]
    assert with_media, listed[:3]
    shown = json.loads(_cli(rig["cfg"], "show", with_media[0]["id"], "--json").stdout)
    assert "vision" in shown["modalities"] and "jpeg" in shown["media"]
    tmp = rig["tmp"]
    key = tmp / "keys" / "samples.key"
    root = tmp / "samples"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(root.stat().st_mode) == 0o700
    files = list((root / "objects").glob("*/*.smp"))
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    index = b"".join(p.read_bytes() for p in root.glob(INDEX + "*"))
    assert b"JFIF" not in index and b"RIFF" not in index
    raw = files[0].read_bytes()
    assert b"JFIF" not in raw and b"RIFF" not in raw  # sealed, media included
    hidden = key.with_suffix(".away")
    key.rename(hidden)  # without the key: one clear error line, no traceback
    try:
        out = _cli(rig["cfg"], "show", with_media[0]["id"])
        assert out.returncode != 0 and "key" in out.stderr and "Traceback" not in out.stderr
    finally:
        hidden.rename(key)


def test_sigkill_during_writes_then_restart_with_a_small_quota(rig) -> None:
    daemon = rig["daemon"]
    before = _written(daemon)
    _wait(lambda: _written(daemon) >= before + 3, 30, "logging stalled")
    daemon.proc.send_signal(signal.SIGKILL)  # the writer thread is busy: 10 samples/s with JPEG+WAV
    daemon.proc.wait(10)
    key = (rig["tmp"] / "keys" / "samples.key").read_bytes()
    root = rig["tmp"] / "samples"
    with SampleStore(root, cipher=crypto.Cipher(key)) as reader:  # the index opens as it is
        size, infos = reader.total_bytes, reader.list()
        for info in infos:  # every indexed sample is complete (and authenticates)
            assert reader.get(info.id).id == info.id
    indexed = {i.id for i in infos}
    assert len(indexed) >= before
    leftovers = list((root / "tmp").iterdir()) + [
        p for p in (root / "objects").glob("*/*.smp") if p.name[:-4] not in indexed]
    raw = yaml.safe_load(rig["cfg"].read_text())
    raw["samples"]["retention"] = {"max_bytes": size + 250_000, "rotate": False}
    rig["cfg"].write_text(yaml.safe_dump(raw))
    rig["collector"].close()
    restarted = DaemonProcess(rig["cfg"])
    rig["daemon"] = restarted
    rig["collector"] = Collector(restarted.events_endpoint)
    restarted.wait_ready(90)
    assert restarted.request({"type": "status"})["samples"]["enabled"]
    assert not [p for p in leftovers if p.exists()], "restart did not sweep what the kill left"
    rig["killed_leftovers"] = len(leftovers)


def test_small_quota_fills_drops_are_counted_daemon_stays_up(rig) -> None:
    daemon = rig["daemon"]
    _wait(lambda: daemon.request({"type": "status"})["samples"]["dropped"].get("quota", 0) >= 3, 60,
          "quota never reached")
    st = daemon.request({"type": "status"})
    assert st["state"] in ("running", "degraded") and st["samples"]["bytes"] <= st["samples"]["quota_bytes"]
    since = time.monotonic()
    rig["collector"].wait_for(lambda m: m["topic"] == "vision", 15, since)
    assert "event=sample_dropped reason=quota" in daemon.log(200_000)
    assert daemon.terminate(timeout=10) == 0
    stats = json.loads(_cli(rig["cfg"], "stats", "--json").stdout)
    assert stats["dropped"].get("quota", 0) >= 3  # persisted for `perceptd samples stats`


def test_cli_label_export_purge(rig) -> None:
    """The daemon is stopped; the CLI works on the store it left (decrypting with the key)."""
    cfg, tmp = rig["cfg"], rig["tmp"]
    listed = json.loads(_cli(cfg, "list", "--json", "--limit", "2").stdout)["samples"]
    sid = listed[0]["id"]
    out = _cli(cfg, "label", sid, "cat_present", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["labels"] == {"cat_present": 1}
    assert _cli(cfg, "label", sid, "not_an_event").returncode != 0
    assert "not a sample id" in _cli(cfg, "label", "../../etc/passwd", "cat_present").stderr
    assert json.loads(_cli(cfg, "list", "--labelled", "--json").stdout)["samples"][0]["id"] == sid
    out = _cli(cfg, "export", str(tmp / "export"), "--json")
    n = json.loads(out.stdout)["exported"]
    rows = [json.loads(line) for line in (tmp / "export" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == n and any(r["labels"] == {"cat_present": 1} for r in rows)
    assert any((tmp / "export").glob("*.jpg")) and any((tmp / "export").glob("*.wav"))
    assert _cli(cfg, "purge").returncode != 0  # needs --older-than or --all
    # labelled: this one, and the windows of spoken commands (the WAV says "turn on the kitchen
    # lights", and a command labels its context)
    labelled = json.loads(_cli(cfg, "list", "--labelled", "--json").stdout)["samples"]
    assert sid in {s["id"] for s in labelled}
    assert all(s["id"] == sid or s["trigger"] == "command" for s in labelled), labelled
    out = json.loads(_cli(cfg, "purge", "--all", "--unlabelled", "--json").stdout)
    assert out["remaining"] == len(labelled) and out["deleted"] == n - len(labelled)
