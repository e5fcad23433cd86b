"""The snapshot store: when an event starts, the frames each camera showed, kept on disk.

Why at the publisher: the event message must carry the snapshot's id, and the publisher is the
last step before the message is encoded.  `annotate()` only takes references to the cameras'
newest frames (each source replaces, never mutates, its `last_image`), names the snapshot and
queues it; a writer thread scales, encodes, seals (with the samples' key when samples are
encrypted) and writes it, then applies retention (count, bytes, age).  A full queue or a full
disk drops the snapshot and counts it: publishing never waits for the disk.

Layout: `<dir>/<id>/meta.json` plus one `cam<i>.jpg` per camera (the camera id is in the meta,
never in a path), written under `<id>.tmp` and renamed, so a reader sees whole snapshots only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import re
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from perceptd.daemon.messages import EventMessage
from perceptd.daemon.snapshots.config import SnapshotConfig

log = logging.getLogger(__name__)

SNAPSHOT_ID = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{12}$")


class Sealer(Protocol):
    """Encryption at rest (the samples' Cipher): `aad` binds a file to its snapshot and camera."""

    def seal(self, plaintext: bytes, aad: bytes) -> bytes: ...
    def open(self, blob: bytes, aad: bytes, where: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class _Pending:
    sid: str
    event: str
    t_capture_ns: int
    wall_time: str
    frames: Mapping[str, np.ndarray]


@dataclass(slots=True)
class SnapshotStats:
    taken: int = 0  # ids handed out
    written: int = 0
    dropped_queue_full: int = 0
    dropped_write_error: int = 0
    evicted: int = 0
    kept: int = 0
    kept_bytes: int = 0


def new_id(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(6)


class SnapshotStore:
    """Bounded on-disk store of event-start frames; `annotate` is the publisher's hook."""

    def __init__(self, cfg: SnapshotConfig, frames: Callable[[], Mapping[str, np.ndarray]],
                 sealer: Sealer | None = None, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self._frames = frames
        self._sealer = sealer
        self._clock = clock
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=cfg.queue)
        self._index: OrderedDict[str, int] = OrderedDict()  # id -> bytes, oldest first
        self._bytes = 0  # sum of the index's sizes
        self._lock = threading.Lock()
        self._stats = SnapshotStats()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.cfg.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._scan()
        self._evict()
        self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)
        self._thread.start()
        log.info("event=snapshots_started dir=%s kept=%d kept_bytes=%d", self.cfg.dir,
                 len(self._index), self._bytes)

    def close(self, timeout_s: float = 2.0) -> None:
        """Write what is queued (bounded by `timeout_s`), then stop."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=max(0.05, timeout_s))
        except queue.Full:
            pass
        self._thread.join(timeout_s)
        self._thread = None

    # ------------------------------------------------------------------ the publisher's hook

    def annotate(self, payload: Any) -> Any:
        """An event start gains a snapshot id when a camera has a frame and the queue has room."""
        if not isinstance(payload, EventMessage) or payload.phase != "start" or payload.snapshot:
            return payload
        frames = {k: v for k, v in self._frames().items() if v is not None}
        if not frames or self._thread is None:
            return payload
        now = self._clock()
        sid = new_id(now)
        wall = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        try:
            self._queue.put_nowait(_Pending(sid, payload.event, time.monotonic_ns(), wall, frames))
        except queue.Full:
            with self._lock:
                self._stats.dropped_queue_full += 1
            return payload
        with self._lock:
            self._stats.taken += 1
        return dataclasses.replace(payload, snapshot=sid)

    # ------------------------------------------------------------------ readers (the console)

    def meta(self, sid: str) -> dict[str, Any] | None:
        """The snapshot's meta (event, times, cameras), or None: unknown, evicted or not yet written."""
        if not SNAPSHOT_ID.fullmatch(sid):
            return None
        with self._lock:
            if sid not in self._index:
                return None
        try:
            return json.loads((self.cfg.dir / sid / "meta.json").read_text())
        except (OSError, ValueError):
            return None

    def image(self, sid: str, camera: str) -> bytes | None:
        """One camera's JPEG of a snapshot (decrypted), or None."""
        meta = self.meta(sid)
        name = (meta or {}).get("cameras", {}).get(camera)
        if not isinstance(name, str) or not re.fullmatch(r"cam[0-9]+\.jpg", name):
            return None
        try:
            blob = (self.cfg.dir / sid / name).read_bytes()
        except OSError:
            return None
        if meta and meta.get("sealed"):
            if self._sealer is None:
                return None
            blob = self._sealer.open(blob, f"{sid}/{camera}".encode(), f"snapshot {sid}")
        return blob

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._stats.kept = len(self._index)
            self._stats.kept_bytes = self._bytes
            out = dataclasses.asdict(self._stats)
        return {**out, "queued": self._queue.qsize(), "enabled": True}

    # ------------------------------------------------------------------ the writer

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                size = self._write(item)
            except OSError as exc:  # a full or read-only disk: drop this one, keep serving
                with self._lock:
                    self._stats.dropped_write_error += 1
                    n = self._stats.dropped_write_error
                if n == 1 or n % 100 == 0:
                    log.warning("event=snapshot_dropped reason=write_error dropped=%d error=%r", n, str(exc))
                shutil.rmtree(self.cfg.dir / f"{item.sid}.tmp", ignore_errors=True)
                continue
            except Exception:  # noqa: BLE001 - a bad frame must not end the writer
                log.exception("event=snapshot_dropped reason=encode sid=%s", item.sid)
                with self._lock:
                    self._stats.dropped_write_error += 1
                continue
            with self._lock:
                self._index[item.sid] = size
                self._bytes += size
                self._stats.written += 1
            self._evict()

    def _write(self, item: _Pending) -> int:
        import cv2  # the daemon's vision path already carries OpenCV

        tmp = self.cfg.dir / f"{item.sid}.tmp"
        tmp.mkdir(mode=0o700)
        cameras: dict[str, str] = {}
        size = 0
        for i, (camera, image) in enumerate(sorted(item.frames.items())):
            h, w = image.shape[:2]
            if w > self.cfg.width:
                image = cv2.resize(image, (self.cfg.width, max(1, round(h * self.cfg.width / w))),
                                   interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
            if not ok:
                continue
            blob = buf.tobytes()
            if self._sealer is not None:
                blob = self._sealer.seal(blob, f"{item.sid}/{camera}".encode())
            name = f"cam{i}.jpg"
            (tmp / name).write_bytes(blob)
            cameras[camera] = name
            size += len(blob)
        meta = {"id": item.sid, "event": item.event, "wall_time": item.wall_time,
                "t_capture_ns": item.t_capture_ns, "cameras": cameras, "sealed": self._sealer is not None}
        body = json.dumps(meta).encode()
        (tmp / "meta.json").write_bytes(body)
        os.replace(tmp, self.cfg.dir / item.sid)
        return size + len(body)

    # ------------------------------------------------------------------ retention

    def _scan(self) -> None:
        """Rebuild the index from disk, oldest first (by when each was written: ids name the
        second only); half-written `.tmp` folders go."""
        found: list[tuple[int, str, int]] = []
        for p in self.cfg.dir.iterdir():
            if p.name.endswith(".tmp"):
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_dir() and SNAPSHOT_ID.fullmatch(p.name) and (p / "meta.json").exists():
                size = sum(f.stat().st_size for f in p.iterdir() if f.is_file())
                found.append(((p / "meta.json").stat().st_mtime_ns, p.name, size))
        with self._lock:
            self._index = OrderedDict((sid, size) for _t, sid, size in sorted(found))
            self._bytes = sum(self._index.values())

    def _evict(self) -> None:
        cutoff = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock() - self.cfg.max_age_days * 86400))
        gone: list[str] = []
        with self._lock:
            while self._index:
                oldest, _ = next(iter(self._index.items()))
                if (len(self._index) <= self.cfg.max_count and self._bytes <= self.cfg.max_bytes
                        and oldest[:15] >= cutoff):
                    break
                self._bytes -= self._index.popitem(last=False)[1]
                gone.append(oldest)
            self._stats.evicted += len(gone)
        for sid in gone:
            shutil.rmtree(self.cfg.dir / sid, ignore_errors=True)


def build_store(cfg: SnapshotConfig, encryption_enabled: bool, key_file: Path,
                frames: Callable[[], Mapping[str, np.ndarray]]) -> SnapshotStore | None:
    """The store the config asks for (None when off), sealed with the samples' key when
    samples are encrypted: a snapshot is raw media as much as a sample's frame is."""
    if not cfg.enabled:
        return None
    sealer: Sealer | None = None
    if encryption_enabled:
        from perceptd.daemon.samples import crypto

        sealer = crypto.Cipher(crypto.load_key(key_file, create=True))
    return SnapshotStore(cfg, frames, sealer)
