"""The sample store: a SQLite index (WAL) plus one file per sample, crash-safe.

Write order: sample file to ``tmp/<id>.part`` -> fsync -> rename into ``objects/<day>/<id>.smp``
-> fsync the folder -> index row committed.  So an index row always points at a complete file;
a crash (even SIGKILL or power loss) can only leave a ``.part`` or an unindexed file behind, and
the writer sweeps both when it next opens the store.  Deletes go the other way (row first).

Limits never raise into the daemon: a sample that does not fit (quota, disk reserve, ENOSPC,
EDQUOT, an I/O or index error) is dropped, counted per reason and reported by `put`.
Folders are 0700 and files 0600; sample ids are checked against a strict pattern before any
path is built from them, and paths are never read back from the index.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perceptd.daemon.samples.crypto import Cipher
from perceptd.daemon.samples.record import Sample, check_sample_id, decode, encode

log = logging.getLogger(__name__)

INDEX = "index.sqlite"
LOCK = ".writer.lock"
SUFFIX = ".smp"
NONE_LABEL = "none"  # "this sample shows none of the events" (a negative for all of them)
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples(
  id TEXT PRIMARY KEY,
  created_ns INTEGER NOT NULL,
  trigger TEXT NOT NULL,
  event TEXT,
  score REAL,
  model_version TEXT NOT NULL,
  encoder_fp TEXT NOT NULL,
  sources TEXT NOT NULL,
  modalities TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  encrypted INTEGER NOT NULL,
  media TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_created ON samples(created_ns);
CREATE TABLE IF NOT EXISTS labels(
  sample_id TEXT NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
  event TEXT NOT NULL,
  value INTEGER NOT NULL,
  source TEXT NOT NULL,
  created_ns INTEGER NOT NULL,
  PRIMARY KEY(sample_id, event)
);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class StoreError(Exception):
    """The store cannot be opened or used; the message names the folder or file."""


class StoreBusy(StoreError):
    """Another process already writes to this store."""


class SampleNotFound(StoreError):
    pass


@dataclass(frozen=True)
class Limits:
    """Quota and retention as the store applies them (from RetentionConfig)."""

    max_bytes: int = 0  # 0: no quota
    rotate: bool = True  # at the quota, evict the oldest evictable samples
    keep_labelled: bool = True  # labelled samples are not evictable
    min_free_bytes: int = 0  # disk reserve
    max_age_s: float = 0.0  # 0: keep forever


@dataclass(frozen=True)
class SampleInfo:
    """One index row plus its labels (no content: that is in the file)."""

    id: str
    created_ns: int
    trigger: str
    event: str | None
    score: float | None
    model_version: str
    encoder_fp: str
    sources: dict[str, str]
    modalities: str
    bytes: int
    encrypted: bool
    media: str
    labels: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_ns // 1_000_000_000))
        return d


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


class SampleStore:
    """Index + files under `root`.  `writer=True` is the daemon: it holds an exclusive lock,
    sweeps what a crash left, and enforces limits; readers (the CLI) may label and purge."""

    def __init__(self, root: Path, *, cipher: Cipher | None = None, encrypt: bool = False,
                 limits: Limits | None = None, writer: bool = False, create: bool = True) -> None:
        if encrypt and cipher is None:
            raise StoreError(f"{root}: encryption asked for but no key given")
        self.root = Path(root)
        self.cipher = cipher  # reads sealed samples (old ones too, after encryption is turned off)
        self.encrypt = encrypt  # seals new samples
        self.limits = limits or Limits()
        self.writer = writer
        self.dropped: Counter[str] = Counter()
        self.written = 0
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        if not self.root.is_dir():
            if not create:
                raise StoreError(f"{self.root}: no sample store here (nothing logged yet?)")
            _private_dir(self.root)
        if writer:
            self._take_writer_lock()
            for sub in ("tmp", "objects"):
                _private_dir(self.root / sub)
        self._db = self._connect()
        self._total = self._sum_bytes()
        if writer:
            self.sweep()

    # ------------------------------------------------------------------ open / close

    def _take_writer_lock(self) -> None:
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreBusy(f"{self.root}: another perceptd process is logging samples here") from None
        self._lock_fd = fd

    def _connect(self) -> sqlite3.Connection:
        path = self.root / INDEX
        if not path.exists():
            if not self.writer and not os.access(self.root, os.W_OK):
                raise StoreError(f"{path}: missing and the folder is not writable")
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite copies this mode
        try:
            db = sqlite3.connect(path, timeout=10.0, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: safe against crashes; files fsync'd
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left in free pages
            db.executescript(_SCHEMA)
            if self.writer:
                bad = db.execute("PRAGMA quick_check").fetchone()[0]
                if bad != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {bad}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: sample index unusable ({exc})") from None
        return db

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ paths

    def path_of(self, sample_id: str) -> Path:
        sid = check_sample_id(sample_id)
        return self.root / "objects" / sid[:8] / f"{sid}{SUFFIX}"

    def _tmp_of(self, sample_id: str) -> Path:
        return self.root / "tmp" / f"{check_sample_id(sample_id)}.part"

    # ------------------------------------------------------------------ crash recovery

    def sweep(self) -> dict[str, int]:
        """Remove what an interrupted write or delete left: .part files, unindexed files,
        and index rows whose file is gone.  Only the writer calls this (it holds the lock)."""
        out = {"partial": 0, "orphan_files": 0, "orphan_rows": 0}
        for p in (self.root / "tmp").glob("*"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                out["partial"] += 1
        with self._lock:
            indexed = {r[0] for r in self._db.execute("SELECT id FROM samples")}
        on_disk: set[str] = set()
        for p in (self.root / "objects").glob(f"*/*{SUFFIX}"):
            sid = p.name[: -len(SUFFIX)]
            if sid in indexed:
                on_disk.add(sid)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                out["orphan_files"] += 1
        missing = indexed - on_disk
        if missing:
            with self._lock, self._tx():
                self._db.executemany("DELETE FROM samples WHERE id=?", [(m,) for m in missing])
            out["orphan_rows"] = len(missing)
            self._total = self._sum_bytes()
        if any(out.values()):
            log.warning("event=samples_recovered %s", " ".join(f"{k}={v}" for k, v in out.items()))
        return out

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _drop(self, reason: str, sample_id: str, detail: str = "") -> str:
        self.dropped[reason] += 1
        level = logging.WARNING if self.dropped[reason] in (1, 10, 100) or \
            self.dropped[reason] % 1000 == 0 else logging.DEBUG
        log.log(level, "event=sample_dropped reason=%s sample=%s count=%d %s", reason, sample_id,
                self.dropped[reason], detail)
        return reason

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _make_room(self, size: int) -> bool:
        """Quota check; with rotation, evict the oldest evictable samples first."""
        lim = self.limits
        if not lim.max_bytes:
            return True
        if size > lim.max_bytes:
            return False
        while self._total + size > lim.max_bytes:
            if not lim.rotate:
                return False
            victims = self._evictable(limit=32)
            if not victims:
                return False
            need = self._total + size - lim.max_bytes
            chosen, freed = [], 0
            for sid, nbytes in victims:
                chosen.append(sid)
                freed += nbytes
                if freed >= need:
                    break
            self.delete(chosen)
        return True

    def put(self, sample: Sample, blob: bytes | None = None) -> str | None:
        """Persist one sample; None when stored, else the drop reason (never raises OSError)."""
        sid = check_sample_id(sample.id)
        try:
            blob = blob if blob is not None else encode(sample, self.cipher if self.encrypt else None)
        except (ValueError, TypeError) as exc:
            return self._drop("encode_error", sid, str(exc))
        with self._lock:
            try:
                if not self._make_room(len(blob)):
                    return self._drop("quota", sid, f"bytes={self._total} quota={self.limits.max_bytes}")
                if self.limits.min_free_bytes and self.free_bytes() - len(blob) < self.limits.min_free_bytes:
                    return self._drop("disk_full", sid, f"reserve={self.limits.min_free_bytes}")
            except sqlite3.Error as exc:
                return self._drop("index_error", sid, str(exc))
            final = self.path_of(sid)
            try:
                self._write_file(sid, blob, final)
            except OSError as exc:
                reason = "disk_full" if exc.errno in _DISK_FULL else "io_error"
                return self._drop(reason, sid, f"error={exc.strerror}")
            try:
                self._insert(sample, len(blob))
            except sqlite3.Error as exc:
                with contextlib.suppress(OSError):
                    final.unlink()
                return self._drop("index_error", sid, str(exc))
            self._total += len(blob)
            self.written += 1
        return None

    def _write_file(self, sid: str, blob: bytes, final: Path) -> None:
        tmp = self._tmp_of(sid)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            if not final.parent.is_dir():
                _private_dir(final.parent)
                _fsync_dir(final.parent.parent)
            os.rename(tmp, final)
            _fsync_dir(final.parent)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def _insert(self, s: Sample, nbytes: int) -> None:
        row = (s.id, s.created_ns, s.trigger, s.event, s.score, s.model_version, s.encoder_fp,
               json.dumps(s.sources, sort_keys=True), s.combo, nbytes,
               int(self.encrypt), s.media)
        with self._tx():
            self._db.execute("INSERT INTO samples VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row)
            for event, value in s.labels.items():
                self._db.execute("INSERT OR REPLACE INTO labels VALUES (?,?,?,?,?)",
                                 (s.id, event, int(value), s.trigger, s.created_ns))

    # ------------------------------------------------------------------ labels

    def label(self, sample_id: str, event: str, value: int = 1, source: str = "cli") -> None:
        """Attach (or replace) a label; `none` says the sample shows none of the events."""
        sid = check_sample_id(sample_id)
        with self._lock:
            if not self._db.execute("SELECT 1 FROM samples WHERE id=?", (sid,)).fetchone():
                raise SampleNotFound(f"no sample {sid}")
            with self._tx():
                if event == NONE_LABEL:
                    self._db.execute("DELETE FROM labels WHERE sample_id=?", (sid,))
                else:
                    self._db.execute("DELETE FROM labels WHERE sample_id=? AND event=?",
                                     (sid, NONE_LABEL))
                self._db.execute("INSERT OR REPLACE INTO labels VALUES (?,?,?,?,?)",
                                 (sid, event, int(value), source, time.time_ns()))

    def unlabel(self, sample_id: str, event: str | None = None) -> int:
        sid = check_sample_id(sample_id)
        with self._lock, self._tx():
            if event is None:
                cur = self._db.execute("DELETE FROM labels WHERE sample_id=?", (sid,))
            else:
                cur = self._db.execute("DELETE FROM labels WHERE sample_id=? AND event=?", (sid, event))
            return cur.rowcount

    def labels_of(self, ids: Iterable[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for sid, event, value in self._db.execute("SELECT sample_id, event, value FROM labels"):
                out.setdefault(sid, {})[event] = value
        wanted = set(ids)
        return {k: v for k, v in out.items() if k in wanted}

    def label_sources(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        with self._lock:
            for sid, src in self._db.execute("SELECT sample_id, source FROM labels"):
                out.setdefault(sid, set()).add(src)
        return out

    # ------------------------------------------------------------------ reading

    def _info(self, row: tuple, labels: dict[str, int]) -> SampleInfo:
        (sid, created, trig, event, score, mv, fp, sources, mods, nbytes, enc, media) = row
        return SampleInfo(sid, created, trig, event, score, mv, fp, json.loads(sources), mods, nbytes,
                          bool(enc), media, labels)

    def list(self, *, labelled: bool | None = None, trigger: str | None = None,
             limit: int | None = None, newest_first: bool = False) -> list[SampleInfo]:
        q = "SELECT * FROM samples"
        cond, args = [], []
        if labelled is not None:
            cond.append(("" if labelled else "NOT ") + "EXISTS (SELECT 1 FROM labels l WHERE l.sample_id=id)")
        if trigger is not None:
            cond.append("trigger=?")
            args.append(trigger)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        q += " ORDER BY created_ns " + ("DESC" if newest_first else "ASC") + ", id"
        if limit is not None:
            q += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            rows = self._db.execute(q, args).fetchall()
        labels = self.labels_of(r[0] for r in rows)
        return [self._info(r, labels.get(r[0], {})) for r in rows]

    def info(self, sample_id: str) -> SampleInfo:
        sid = check_sample_id(sample_id)
        with self._lock:
            row = self._db.execute("SELECT * FROM samples WHERE id=?", (sid,)).fetchone()
        if row is None:
            raise SampleNotFound(f"no sample {sid}")
        return self._info(row, self.labels_of([sid]).get(sid, {}))

    def exists(self, sample_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM samples WHERE id=?",
                                    (check_sample_id(sample_id),)).fetchone() is not None

    def read_blob(self, sample_id: str) -> bytes:
        path = self.path_of(sample_id)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise SampleNotFound(f"{path}: sample file missing") from None

    def get(self, sample_id: str) -> Sample:
        """The full sample (decrypted), with its labels from the index."""
        info = self.info(sample_id)
        s = decode(self.read_blob(sample_id), info.id, self.cipher, str(self.path_of(info.id)))
        s.labels = dict(info.labels)
        return s

    # ------------------------------------------------------------------ deleting

    def _evictable(self, limit: int, older_than_ns: int | None = None) -> list[tuple[str, int]]:
        q = "SELECT id, bytes FROM samples"
        cond, args = [], []
        if self.limits.keep_labelled:
            cond.append("NOT EXISTS (SELECT 1 FROM labels l WHERE l.sample_id=id)")
        if older_than_ns is not None:
            cond.append("created_ns < ?")
            args.append(older_than_ns)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        q += " ORDER BY created_ns, id LIMIT ?"
        args.append(limit)
        return self._db.execute(q, args).fetchall()

    def delete(self, ids: Iterable[str]) -> int:
        """Rows first (committed), then files: a crash in between leaves only orphan files."""
        ids = [check_sample_id(i) for i in ids]
        if not ids:
            return 0
        with self._lock:
            with self._tx():
                for sid in ids:
                    self._db.execute("DELETE FROM samples WHERE id=?", (sid,))
            for sid in ids:
                with contextlib.suppress(FileNotFoundError):
                    self.path_of(sid).unlink()
            self._total = self._sum_bytes()
        return len(ids)

    def purge(self, *, older_than_s: float | None = None, unlabelled_only: bool = False) -> int:
        """Explicit deletion (the CLI): labelled samples too unless `unlabelled_only`."""
        q = "SELECT id FROM samples"
        cond, args = [], []
        if older_than_s is not None:
            cond.append("created_ns < ?")
            args.append(time.time_ns() - int(older_than_s * 1e9))
        if unlabelled_only:
            cond.append("NOT EXISTS (SELECT 1 FROM labels l WHERE l.sample_id=id)")
        if cond:
            q += " WHERE " + " AND ".join(cond)
        with self._lock:
            ids = [r[0] for r in self._db.execute(q, args)]
        n = 0
        for i in range(0, len(ids), 500):
            n += self.delete(ids[i: i + 500])
        if n:
            self._forget_wal()
        return n

    def _forget_wal(self) -> None:
        """The WAL still holds the purged rows' old pages until a checkpoint resets it: copy it
        into the (zeroing) main file and truncate it, so `purge` leaves no metadata behind."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                log.warning("event=samples_purge_wal_busy detail='WAL kept until the next checkpoint'")

    def enforce_retention(self, now_ns: int | None = None) -> int:
        """Age limit, then the quota (oldest evictable first).  Returns samples deleted."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        deleted = 0
        with self._lock:
            self._total = self._sum_bytes()  # the CLI may have purged meanwhile
            if self.limits.max_age_s > 0:
                cutoff = now_ns - int(self.limits.max_age_s * 1e9)
                while victims := self._evictable(500, older_than_ns=cutoff):
                    deleted += self.delete([v[0] for v in victims])
            if self.limits.max_bytes and self.limits.rotate:
                while self._total > self.limits.max_bytes and (victims := self._evictable(64)):
                    deleted += self.delete([v[0] for v in victims[:8]])
        if deleted:
            log.info("event=samples_retention deleted=%d bytes=%d", deleted, self._total)
        return deleted

    # ------------------------------------------------------------------ stats & export

    def _sum_bytes(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(SUM(bytes),0) FROM samples").fetchone()[0])

    @property
    def total_bytes(self) -> int:
        return self._total

    def add_counters(self, deltas: dict[str, int]) -> None:
        """Persist drop counters (best effort: a full disk may refuse this too)."""
        if not deltas:
            return
        with self._lock, self._tx():
            for name, value in deltas.items():
                self._db.execute(
                    "INSERT INTO counters VALUES (?,?) ON CONFLICT(name) DO UPDATE SET value=value+?",
                    (name, int(value), int(value)))

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT name, value FROM counters").fetchall())

    def stats(self) -> dict[str, Any]:
        with self._lock:
            db = self._db
            n, nbytes, first, last = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(bytes),0), MIN(created_ns), MAX(created_ns) FROM samples"
            ).fetchone()
            by_trigger = dict(db.execute("SELECT trigger, COUNT(*) FROM samples GROUP BY trigger"))
            by_combo = dict(db.execute("SELECT modalities, COUNT(*) FROM samples GROUP BY modalities"))
            by_label = dict(db.execute(
                "SELECT event, COUNT(*) FROM labels WHERE value=1 GROUP BY event"))
            labelled = db.execute("SELECT COUNT(DISTINCT sample_id) FROM labels").fetchone()[0]
            encrypted = db.execute("SELECT COUNT(*) FROM samples WHERE encrypted=1").fetchone()[0]
            with_media = db.execute("SELECT COUNT(*) FROM samples WHERE media != ''").fetchone()[0]
        return {
            "dir": str(self.root), "samples": n, "bytes": nbytes, "labelled": labelled,
            "encrypted": encrypted, "with_media": with_media, "by_trigger": by_trigger,
            "by_modalities": by_combo, "labels": by_label, "oldest_ns": first, "newest_ns": last,
            "quota_bytes": self.limits.max_bytes, "dropped": self.counters(),
        }

    def export(self, out: Path, ids: Iterable[str] | None = None) -> int:
        """Decrypted copy for training elsewhere: <id>.npz (+ .jpg/.wav) and samples.jsonl."""
        import numpy as np

        out = Path(out)
        _private_dir(out)
        infos = self.list() if ids is None else [self.info(i) for i in ids]
        n = 0
        with (out / "samples.jsonl").open("w", encoding="utf-8") as index:
            for info in infos:
                s = self.get(info.id)
                arrays = {"x": s.x, "mask": s.mask, "scores": s.scores}
                if s.vision_features is not None:
                    arrays["vision_features"] = s.vision_features
                if s.audio_embeddings is not None:
                    arrays["audio_embeddings"] = s.audio_embeddings
                for name in ("vision_probs", "audio_probs"):
                    if getattr(s, name) is not None:
                        arrays[name] = getattr(s, name)
                np.savez(out / f"{s.id}.npz", **arrays)  # pyright: ignore[reportArgumentType] - numpy stub
                media = {}
                for kind, ext in (("jpeg", "jpg"), ("wav", "wav")):
                    data = getattr(s, kind)
                    if data:
                        (out / f"{s.id}.{ext}").write_bytes(data)
                        media[kind] = f"{s.id}.{ext}"
                index.write(json.dumps({**info.to_json(), **s.meta(), "labels": s.labels,
                                        "files": {"arrays": f"{s.id}.npz", **media}}) + "\n")
                n += 1
        return n

