"""The recorder and the recording reader without a daemon: segments rotate, the index pairs
each frame/chunk with its capture time, lossless frames come back bit for bit, the quota
deletes the oldest segments, a recorder that falls behind drops (counted, listed), and damage
is skipped and described."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from perceptd.daemon.record.config import RecordConfig
from perceptd.daemon.record.reader import Recording
from perceptd.daemon.record.writer import Recorder, enforce_quota
from perceptd.daemon.sources.base import CHUNK_SAMPLES, AudioChunk, Frame

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
NS = 1_000_000_000
T0 = 5 * NS


def _frames(n: int, fps: float = 10.0) -> list[Frame]:
    rng = np.random.default_rng(0)
    return [Frame("cam", i, T0 + int(i * NS / fps), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
            for i in range(n)]


def _chunks(n: int) -> list[AudioChunk]:
    rng = np.random.default_rng(1)
    return [AudioChunk("mic", i, T0 + (i + 1) * 32_000_000,
                       rng.standard_normal(CHUNK_SAMPLES).astype(np.float32) * 0.1) for i in range(n)]


def _record(tmp: Path, frames: list[Frame], chunks: list[AudioChunk], **cfg) -> Recorder:
    rec = Recorder(RecordConfig(enabled=True, dir=tmp, **cfg), {"bundle_version": "v"}, tmp / "r")
    rec.start()
    items = sorted([*frames, *chunks], key=lambda x: x.t_capture_ns)
    for i, item in enumerate(items):
        rec.tap(item)
        if i % 8 == 0:  # the writer keeps up, as it does at camera rates
            while rec.status()["queued"]:
                time.sleep(0.001)
    rec.close()
    return rec


def test_segments_rotate_and_lossless_frames_and_pcm_come_back_exactly(tmp_path: Path) -> None:
    frames, chunks = _frames(25), _chunks(80)  # 2.5 s of video, 2.56 s of audio
    rec = _record(tmp_path, frames, chunks, segment_s=1, video="lossless")
    assert len(list((rec.folder / "video" / "cam").glob("seg-*.mkv"))) == 3
    assert len(list((rec.folder / "audio" / "mic").glob("seg-*.f32"))) == 3
    r = Recording(rec.folder)
    got = list(r.frames("cam"))
    assert [(f.seq, f.t_capture_ns) for f in got] == [(f.seq, f.t_capture_ns) for f in frames]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, frames, strict=True))
    pcm = list(r.chunks("mic"))
    assert [(c.seq, c.t_capture_ns) for c in pcm] == [(c.seq, c.t_capture_ns) for c in chunks]
    assert all(np.array_equal(a.pcm, b.pcm) for a, b in zip(pcm, chunks, strict=True))
    times = [t for t, _, _ in r.inputs()]
    assert times == sorted(times) and len(times) == 105 and r.problems == []
    meta = json.loads((rec.folder / "meta.json").read_text())
    assert meta["stats"]["frames"] == 25 and meta["stats"]["chunks"] == 80


def test_h264_and_flac_keep_every_frame_and_chunk_with_its_time(tmp_path: Path) -> None:
    frames, chunks = _frames(12), _chunks(20)
    rec = _record(tmp_path, frames, chunks, video="h264", audio="flac")
    r = Recording(rec.folder)
    got = list(r.frames("cam"))
    assert [f.t_capture_ns for f in got] == [f.t_capture_ns for f in frames]
    assert got[0].image.shape == (48, 64, 3)
    pcm = list(r.chunks("mic"))
    assert len(pcm) == 20 and np.abs(pcm[3].pcm - chunks[3].pcm).max() < 1e-6  # 24-bit


def test_a_recorder_that_falls_behind_drops_and_says_so(tmp_path: Path) -> None:
    rec = Recorder(RecordConfig(enabled=True, dir=tmp_path, queue_size=4), {}, tmp_path / "r")
    for f in _frames(10):  # the writer has not started: the queue fills
        rec.tap(f)
    rec.start()
    rec.close()
    assert rec.stats.frames == 4 and rec.stats.dropped == {"frame": 6}
    drops = [json.loads(line) for line in (rec.folder / "drops.jsonl").read_text().splitlines()]
    assert [d["seq"] for d in drops] == list(range(4, 10))


def test_quota_deletes_the_oldest_segments_but_not_the_open_ones(tmp_path: Path) -> None:
    segs = []
    for i in range(5):
        p = tmp_path / "run" / "video" / "cam" / f"seg-{i:06d}.mkv"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 1000)
        p.with_suffix(".idx").write_bytes(b"")
        segs.append(p)
        os.utime(p, (1000 + i, 1000 + i))
    assert enforce_quota(tmp_path, 2500, None, keep={segs[0]}) == 3
    assert [p.exists() for p in segs] == [True, False, False, False, True]


def test_damage_is_skipped_and_described(tmp_path: Path) -> None:
    rec = _record(tmp_path, _frames(40), _chunks(10), segment_s=2, video="lossless")
    f = rec.folder
    (f / "video" / "cam" / "seg-000001.idx").unlink()
    (f / "audio" / "mic" / "seg-000000.f32").unlink()
    (f / "journal.jsonl").write_text('{"t": 1, "in": []}\n{"t": 2, "in": [[')
    r = Recording(f)
    frames = list(r.frames("cam"))
    assert len(frames) == 20 and list(r.chunks("mic")) == []
    assert len(r.journal()) == 1
    text = "\n".join(r.problems)
    assert "seg-000001.mkv: no index" in text and "seg-000000.idx: its media segment is missing" in text
    assert "journal.jsonl: 1 unreadable" in text


def test_an_encrypted_recording_keeps_nothing_plain_and_opens_with_the_key(tmp_path: Path) -> None:
    from perceptd.daemon.samples import crypto

    if not crypto.available():
        pytest.skip("cryptography is not installed")
    cipher = crypto.Cipher(crypto.load_key(tmp_path / "keys" / "samples.key", create=True))
    frames, chunks = _frames(15), _chunks(40)
    rec = Recorder(RecordConfig(enabled=True, dir=tmp_path, segment_s=1, video="lossless"), {},
                   tmp_path / "r", cipher=cipher)
    rec.start()
    for i, item in enumerate(sorted([*frames, *chunks], key=lambda x: x.t_capture_ns)):
        rec.tap(item)
        if i % 8 == 0:
            while rec.status()["queued"]:
                time.sleep(0.001)
    rec.on_journal(T0, [], True)
    rec.close()
    files = [p for p in rec.folder.rglob("seg-*") if p.is_file()]
    assert files and all(p.name.endswith(".enc") for p in files), files
    assert not (rec.folder / "journal.jsonl").read_bytes().startswith(b"{")
    opened = Recording(rec.folder, cipher=cipher)
    got = list(opened.frames("cam"))
    assert len(got) == 15 and all(np.array_equal(a.image, b.image) for a, b in zip(got, frames, strict=True))
    assert [c.t_capture_ns for c in opened.chunks("mic")] == [c.t_capture_ns for c in chunks]
    assert opened.journal() == [{"t": T0, "in": [], "close": True}] and opened.problems == []
    locked = Recording(rec.folder)
    assert list(locked.frames("cam")) == [] and locked.journal() == []
    assert any("encrypted" in p for p in locked.problems), locked.problems
