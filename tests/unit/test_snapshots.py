"""The snapshot store: event starts gain an id, frames land on disk (sealed where samples are),
retention bounds count, bytes and age, and no failure costs the message."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from perceptd.daemon.messages import Envelope, EventMessage, Message, ModalityScore, wall_time_iso
from perceptd.daemon.publish import MessageValidator, load_schema
from perceptd.daemon.samples.crypto import Cipher, load_key
from perceptd.daemon.snapshots.config import SnapshotConfig
from perceptd.daemon.snapshots.store import SNAPSHOT_ID, SnapshotStore

REPO = Path(__file__).resolve().parents[2]
CAT = REPO / "samples" / "images" / "cat.jpg"


def _event(phase: str = "start", name: str = "cat_present") -> EventMessage:
    return EventMessage(name, phase, 0.9, {"vision": ModalityScore(1.0, 0.9, (("tabby cat", 0.8),))})


def _wait(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def photo() -> np.ndarray:
    img = cv2.imread(str(CAT))
    assert img is not None and img.shape[1] >= 320
    return img


def _store(tmp_path: Path, frames, **cfg) -> SnapshotStore:
    store = SnapshotStore(SnapshotConfig(enabled=True, dir=tmp_path / "snaps", **cfg), lambda: frames)
    store.start()
    return store


def test_a_start_gains_an_id_and_its_frames_are_kept(tmp_path: Path, photo: np.ndarray) -> None:
    store = _store(tmp_path, {"front": photo, "back": photo[:, ::-1].copy()}, width=320)
    try:
        out = store.annotate(_event())
        assert out.snapshot and SNAPSHOT_ID.fullmatch(out.snapshot)
        assert store.annotate(_event("update")).snapshot is None  # starts only
        assert store.annotate(_event("end")).snapshot is None
        _wait(lambda: store.meta(out.snapshot) is not None)
        meta = store.meta(out.snapshot)
        assert meta["event"] == "cat_present" and sorted(meta["cameras"]) == ["back", "front"]
        jpeg = store.image(out.snapshot, "front")
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape[1] == 320  # scaled to the configured width
        # the photo is what was kept: the decoded snapshot matches the scaled original closely
        ref = cv2.resize(photo, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA)
        assert float(np.abs(img.astype(int) - ref.astype(int)).mean()) < 8
        assert store.image(out.snapshot, "nope") is None
        assert store.stats()["written"] == 1 and store.stats()["taken"] == 1
    finally:
        store.close()


def test_no_camera_frame_no_snapshot(tmp_path: Path) -> None:
    store = _store(tmp_path, {})
    try:
        assert store.annotate(_event()).snapshot is None and store.stats()["taken"] == 0
    finally:
        store.close()


@pytest.mark.parametrize("bad", ["../etc", "20261206T010203-xyz", "20261206T010203-0123456789ab/..", ""])
def test_ids_are_checked_before_any_path_is_built(tmp_path: Path, photo: np.ndarray, bad: str) -> None:
    store = _store(tmp_path, {"front": photo})
    try:
        assert store.meta(bad) is None and store.image(bad, "front") is None
    finally:
        store.close()


def test_retention_by_count_and_bytes_and_after_a_restart(tmp_path: Path, photo: np.ndarray) -> None:
    store = _store(tmp_path, {"front": photo}, max_count=3, width=128)
    ids = []
    try:
        for _ in range(5):
            ids.append(store.annotate(_event()).snapshot)
            _wait(lambda: store.stats()["written"] == len(ids))
        assert [store.meta(i) is not None for i in ids] == [False, False, True, True, True]
        assert store.stats()["evicted"] == 2
        assert sorted(p.name for p in (tmp_path / "snaps").iterdir()) == sorted(ids[2:])
    finally:
        store.close()
    size = sum(f.stat().st_size for f in (tmp_path / "snaps" / ids[-1]).iterdir())
    tight = SnapshotConfig(enabled=True, dir=tmp_path / "snaps", max_bytes=max(1024, size + 10))
    again = SnapshotStore(tight, lambda: {})
    again.start()  # a restart rebuilds the index from disk and applies the (tighter) limits
    try:
        assert again.stats()["kept"] == 1 and again.meta(ids[-1]) is not None
    finally:
        again.close()


def test_old_snapshots_go_by_age(tmp_path: Path, photo: np.ndarray) -> None:
    now = [time.time() - 3 * 86400]
    cfg = SnapshotConfig(enabled=True, dir=tmp_path / "snaps", max_age_days=1)
    store = SnapshotStore(cfg, lambda: {"front": photo}, clock=lambda: now[0])
    store.start()
    try:
        old = store.annotate(_event()).snapshot
        _wait(lambda: store.stats()["written"] == 1)
        assert store.meta(old) is not None
        now[0] = time.time()  # three days later: the next write's retention pass removes it
        new = store.annotate(_event()).snapshot
        _wait(lambda: store.stats()["written"] == 2)
        assert store.meta(new) is not None and store.meta(old) is None
        assert not (tmp_path / "snaps" / old).exists() and store.stats()["evicted"] == 1
    finally:
        store.close()


def test_a_failed_write_is_counted_and_the_message_still_goes(tmp_path: Path, photo: np.ndarray) -> None:
    store = _store(tmp_path, {"front": photo})
    try:
        shutil.rmtree(tmp_path / "snaps")  # the disk under the store is gone: writes fail
        (tmp_path / "snaps").write_text("not a folder")
        out = store.annotate(_event())
        assert out.snapshot is not None and out.event == "cat_present"
        _wait(lambda: store.stats()["dropped_write_error"] == 1)
        assert store.meta(out.snapshot) is None and store.stats()["written"] == 0
    finally:
        store.close()


def test_a_full_queue_drops_the_snapshot_not_the_event(tmp_path: Path, photo: np.ndarray) -> None:
    store = SnapshotStore(SnapshotConfig(enabled=True, dir=tmp_path / "snaps", queue=1), lambda: {"f": photo})
    store.start()
    store._queue.put(None)  # the writer stops; the queue stays full with what follows
    _wait(lambda: store._thread is not None and not store._thread.is_alive())
    try:
        assert store.annotate(_event()).snapshot is not None  # fills the one slot
        assert store.annotate(_event()).snapshot is None  # no room: no id, the event is unchanged
        assert store.stats()["dropped_queue_full"] == 1
    finally:
        store._thread = None


def test_sealed_with_the_samples_key(tmp_path: Path, photo: np.ndarray) -> None:
    key = tmp_path / "key"
    cipher = Cipher(load_key(key, create=True))
    cfg = SnapshotConfig(enabled=True, dir=tmp_path / "snaps")
    store = SnapshotStore(cfg, lambda: {"front": photo}, cipher)
    store.start()
    try:
        sid = store.annotate(_event()).snapshot
        _wait(lambda: store.meta(sid) is not None)
        on_disk = (tmp_path / "snaps" / sid / "cam0.jpg").read_bytes()
        assert not on_disk.startswith(b"\xff\xd8")  # not a JPEG at rest
        assert store.image(sid, "front").startswith(b"\xff\xd8")  # but one for the console
        assert json.loads((tmp_path / "snaps" / sid / "meta.json").read_text())["sealed"] is True
    finally:
        store.close()


def test_the_wire_carries_snapshot_only_when_kept_and_the_schema_accepts_it() -> None:
    v = MessageValidator(load_schema())

    def wire(ev: EventMessage) -> dict:
        env = Envelope(ev.topic, 0, uuid.uuid4().hex, 1_000, 2_000, wall_time_iso(), "20250101-1")
        frames = Message(env, ev).to_wire()
        assert Message.from_wire(frames) == Message(env, ev)  # round trip, field included
        return json.loads(frames[1])

    plain = wire(_event())
    assert "snapshot" not in plain and v.errors(plain) == []  # off: the wire is as it was
    kept = wire(dataclasses.replace(_event(), snapshot="20261206T010203-0123456789ab"))
    assert kept["snapshot"] == "20261206T010203-0123456789ab" and v.errors(kept) == []
    assert v.errors({**kept, "snapshot": "../../etc/passwd"}) != []
