"""The recorder: everything a live run captured, written beside the pipeline, never in its way.

Sources hand it every item they offer downstream (``tap``), fusion hands it each evaluation's
time and the outputs it applied (``on_journal``: the schedule replay follows to reproduce the
live events), the publisher every message it sent (``on_published``).  Those calls only
append to an in-memory queue; one writer thread encodes and writes.  When the writer falls
behind by ``queue_size`` media items, further frames/chunks are not recorded (counted, and
listed in ``drops.jsonl`` so replay knows what the recording lacks): capture never waits.

Layout of one recording (docs/replay.md)::

    meta.json                       run id, start times, config, bundle version; stats at close
    video/<camera>/seg-000000.mkv   frames (ffmpeg: H.264, or lossless x264 RGB)
    video/<camera>/seg-000000.idx   one JSON line per frame: {"seq", "t"} (capture monotonic ns)
    audio/<source>/seg-000000.f32   float32 16 kHz mono (or .flac), 512-sample chunks
    audio/<source>/seg-000000.idx   one JSON line per chunk: {"seq", "t"}
    commands.jsonl                  {"t", "text", "origin", "source"} as fusion received them
    journal.jsonl                   fusion evaluations: {"t", "in": [[modality, source, t], ...]}
    messages.jsonl                  every published message, as sent
    drops.jsonl                     items the recorder could not keep
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np

from perceptd.daemon.record.config import RecordConfig
from perceptd.daemon.sources.base import SAMPLE_RATE, AudioChunk, Frame

if TYPE_CHECKING:  # fusion hands its outputs in; this package never imports fusion
    from perceptd.daemon.fusion.timeline import ModalityOutput

log = logging.getLogger(__name__)

FORMAT = 1
SEGMENT_SUFFIXES = (".mkv", ".f32", ".flac")
KEYFRAME_INTERVAL = 30  # frames: a cut segment loses at most this many before the cut
SEALED = ".enc"  # a file sealed with the samples' key (AES-256-GCM, aad = its plain relative path)


class Sealer(Protocol):
    """What the recorder and reader need of samples.crypto.Cipher (passed in, not imported)."""

    def seal(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def open(self, blob: bytes, aad: bytes, where: str) -> bytes: ...


def seal_file(path: Path, root: Path, cipher: Sealer) -> Path:
    """Replace `path` by `path.enc` (atomic); the aad binds it to its place in the recording."""
    out = path.with_name(path.name + SEALED)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(cipher.seal(path.read_bytes(), str(path.relative_to(root)).encode()))
    os.replace(tmp, out)
    path.unlink()
    return out


def segment_index(media: Path) -> Path:
    """seg-000003.mkv(.enc) -> seg-000003.idx(.enc)"""
    stem = media.name.split(".", 1)[0]
    return media.with_name(stem + ".idx" + (SEALED if media.name.endswith(SEALED) else ""))


def media_suffix(p: Path) -> str:
    """'.mkv' for seg-000003.mkv and seg-000003.mkv.enc"""
    name = p.name[: -len(SEALED)] if p.name.endswith(SEALED) else p.name
    return Path(name).suffix


def _nbytes(item: Any) -> int:
    data = getattr(item, "image", None)
    if data is None:
        data = getattr(item, "pcm", None)
    return int(getattr(data, "nbytes", 0))


def _line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def output_key(out: ModalityOutput) -> list[Any]:
    """How the journal names one fusion input: modality, source and capture time."""
    return [out.modality, out.source, int(out.t_capture_ns)]


class _Segmented:
    """A stream written as rotating segments, each with a JSON-lines index."""

    def __init__(self, folder: Path, suffix: str, segment_ns: int) -> None:
        self.folder = folder
        self.suffix = suffix
        self.segment_ns = segment_ns
        self.n = -1
        self.t0 = 0
        self.index: IO[bytes] | None = None
        self.items = 0
        self.on_closed: Callable[[list[Path]], None] | None = None  # sealing, when encrypting

    @property
    def path(self) -> Path:
        return self.folder / f"seg-{self.n:06d}{self.suffix}"

    def due(self, t_ns: int) -> bool:
        return self.index is None or t_ns - self.t0 >= self.segment_ns

    def open_index(self, t_ns: int) -> None:
        self.n += 1
        self.t0 = t_ns
        self.folder.mkdir(parents=True, exist_ok=True)
        self.index = (self.folder / f"seg-{self.n:06d}.idx").open("wb")

    def note(self, seq: int, t_ns: int) -> None:
        assert self.index is not None
        self.index.write(_line({"seq": seq, "t": t_ns}))
        self.items += 1

    def flush(self) -> None:
        if self.index is not None:
            self.index.flush()

    def close_index(self) -> None:
        if self.index is not None:
            self.index.close()
            self.index = None
            if self.on_closed is not None:
                self.on_closed([self.path, self.folder / f"seg-{self.n:06d}.idx"])


class VideoWriter(_Segmented):
    """One camera: raw BGR frames piped to an ffmpeg encoder per segment."""

    def __init__(self, folder: Path, cfg: RecordConfig) -> None:
        super().__init__(folder, ".mkv", int(cfg.segment_s * 1e9))
        self.cfg = cfg
        self.proc: subprocess.Popen[bytes] | None = None
        self.size: tuple[int, int] | None = None
        self.cpu_s = 0.0  # encoder CPU of the closed segments

    def _codec(self) -> list[str]:
        if self.cfg.video == "lossless":
            return ["-c:v", "libx264rgb", "-preset", "ultrafast", "-qp", "0"]
        return ["-c:v", "libx264", "-preset", "ultrafast", "-crf", str(self.cfg.crf),
                "-pix_fmt", "yuv420p"]

    def write(self, f: Frame) -> None:
        img = f.image
        size = (int(img.shape[1]), int(img.shape[0]))
        if self.due(f.t_capture_ns) or size != self.size:
            self.close()
            self.open_index(f.t_capture_ns)
            self.size = size
            cmd = ["nice", "-n", str(self.cfg.nice), "ffmpeg", "-hide_banner", "-loglevel", "error",
                   "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{size[0]}x{size[1]}",
                   "-r", "15", "-i", "-", *self._codec(), "-g", str(KEYFRAME_INTERVAL), "-threads", "1",
                   "-f", "matroska",
                   str(self.path)]
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(np.ascontiguousarray(img, dtype=np.uint8).tobytes())
        self.note(f.seq, f.t_capture_ns)

    def close(self) -> None:
        if self.proc is not None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                # wait4: the encoder's own CPU time (the recording's cost, measured)
                _, status, usage = os.wait4(self.proc.pid, 0)
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.cpu_s += usage.ru_utime + usage.ru_stime
            except (OSError, ChildProcessError):
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
        self.close_index()


class AudioWriter(_Segmented):
    """One audio source: its chunks as raw float32 (exact) or 24-bit FLAC segments."""

    def __init__(self, folder: Path, cfg: RecordConfig) -> None:
        super().__init__(folder, ".f32" if cfg.audio == "pcm" else ".flac", int(cfg.segment_s * 1e9))
        self.cfg = cfg
        self.raw: IO[bytes] | None = None
        self.flac: Any = None

    def write(self, c: AudioChunk) -> None:
        if self.due(c.t_capture_ns):
            self.close()
            self.open_index(c.t_capture_ns)
            if self.cfg.audio == "pcm":
                self.raw = self.path.open("wb")
            else:
                import soundfile as sf

                self.flac = sf.SoundFile(str(self.path), "w", samplerate=SAMPLE_RATE, channels=1,
                                         subtype="PCM_24", format="FLAC")
        pcm = np.asarray(c.pcm, dtype=np.float32)
        if self.raw is not None:
            self.raw.write(pcm.tobytes())
        elif self.flac is not None:
            self.flac.write(pcm)
        self.note(c.seq, c.t_capture_ns)

    def flush(self) -> None:
        if self.raw is not None:
            self.raw.flush()
        super().flush()

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()
            self.raw = None
        if self.flac is not None:
            self.flac.close()
            self.flac = None
        self.close_index()


@dataclass
class RecorderStats:
    frames: int = 0
    chunks: int = 0
    journal: int = 0
    commands: int = 0
    messages: int = 0
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    write_errors: int = 0
    deleted_segments: int = 0
    writer_cpu_s: float = 0.0  # the writer thread's CPU (taps, audio/index/JSON writes, pipe)
    encoder_cpu_s: float = 0.0  # the ffmpeg encoders' CPU (wait4)


def enforce_quota(root: Path, max_bytes: int, max_age_s: float | None, keep: set[Path]) -> int:
    """Delete the oldest media segments under `root` (all recordings) beyond the quota or age;
    the segments being written (`keep`) stay.  Returns how many were deleted."""
    segs = []
    total = 0
    for p in root.rglob("seg-*"):
        try:
            st = p.stat()
        except OSError:
            continue
        total += st.st_size
        if media_suffix(p) in SEGMENT_SUFFIXES and p not in keep:
            segs.append((st.st_mtime, st.st_size, p))
    segs.sort()
    now = time.time()
    deleted = 0
    for mtime, _size, p in segs:
        old = max_age_s is not None and now - mtime > max_age_s
        if total <= max_bytes and not old:
            continue
        for q in (p, segment_index(p)):
            try:
                total -= q.stat().st_size
                q.unlink()
            except OSError:
                pass
        deleted += 1
        log.info("event=recording_segment_deleted path=%s reason=%s", p, "age" if old else "quota")
    return deleted


class Recorder:
    """Writes one run's recording; every public call is cheap and never blocks the caller."""

    def __init__(self, cfg: RecordConfig, meta: dict[str, Any], folder: Path | None = None,
                 cipher: Sealer | None = None) -> None:
        self.cfg = cfg
        self.cipher = cipher  # segments sealed when closed, JSON lines as written
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.run = str(meta.get("run_id") or uuid.uuid4().hex)
        self.folder = Path(folder) if folder else cfg.dir / f"{stamp}-{self.run[:8]}"
        self.meta = {"format": FORMAT, "run_id": self.run,
                     "started_wall": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                     "started_wall_ns": time.time_ns(), "started_mono_ns": time.monotonic_ns(),
                     **meta, "record": cfg.model_dump(mode="json"), "encrypted": cipher is not None}
        self.stats = RecorderStats()
        self._items: collections.deque[tuple[str, Any]] = collections.deque()
        self._media = 0  # media items queued (bounded by cfg.queue_size and cfg.queue_mb)
        self._media_bytes = 0
        self._encoder = shutil.which("ffmpeg") is not None
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._video: dict[str, VideoWriter] = {}
        self._audio: dict[str, AudioWriter] = {}
        self._files: dict[str, IO[bytes]] = {}
        self._last_quota = 0.0
        self._last_flush = 0.0

    # ----------------------------------------------------------------- producer side

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self._encoder:
            log.error("event=recording_no_encoder detail='ffmpeg not found: camera frames are not "
                      "recorded (counted as drops); audio, commands and messages are'")
        write_json_atomic(self.folder / "meta.json", self.meta)
        for name in ("journal", "commands", "messages", "drops"):
            self._files[name] = (self.folder / f"{name}.jsonl").open("ab")
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()
        log.info("event=recording folder=%s video=%s audio=%s", self.folder, self.cfg.video,
                 self.cfg.audio)

    def tap(self, item: Any) -> None:
        """A source's item (Frame or AudioChunk), before it is offered to the pipeline."""
        kind = "frame" if isinstance(item, Frame) else "chunk" if isinstance(item, AudioChunk) else None
        if kind is None:
            return
        with self._cond:
            if self._closing:
                return
            size = _nbytes(item)
            reason = ("no_encoder" if kind == "frame" and not self._encoder else
                      "behind" if (self._media >= self.cfg.queue_size
                                   or self._media_bytes + size > self.cfg.queue_mb * 1024**2) else "")
            if reason:
                self.stats.dropped[kind] += 1
                self._items.append(("drop", (kind, item.source_id, item.seq, item.t_capture_ns, reason)))
            else:
                self._media += 1
                self._media_bytes += size
                self._items.append((kind, item))
            self._cond.notify()

    def on_journal(self, now: int, applied: list[ModalityOutput], closing: bool) -> None:
        """Fusion's hook: one evaluation (its time and the outputs applied since the last)."""
        entry: dict[str, Any] = {"t": int(now), "in": [output_key(o) for o in applied]}
        if closing:
            entry["close"] = True
        cmds = [{"t": int(o.t_capture_ns), "text": str(o.extra.get("text", "")),
                 "origin": str(o.extra.get("origin", "control")), "source": o.source}
                for o in applied if o.modality == "text"]
        self._put_small("journal", entry)
        for c in cmds:
            self._put_small("command", c)

    def on_published(self, _envelope: Any, body: bytes) -> None:
        """The publisher's tap: the exact JSON of every message sent."""
        self._put_small("message", body)

    def _put_small(self, kind: str, obj: Any) -> None:
        with self._cond:
            if not self._closing:
                self._items.append((kind, obj))
                self._cond.notify()

    def close(self, summary: dict[str, Any] | None = None, timeout_s: float = 30.0) -> None:
        """Write what is queued, finish every segment, and store the run's stats in meta.json."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
        for w in [*self._video.values(), *self._audio.values()]:
            w.close()
        for f in self._files.values():
            f.close()
        self.stats.encoder_cpu_s = round(sum(w.cpu_s for w in self._video.values()), 3)
        self.meta["stopped_mono_ns"] = time.monotonic_ns()
        self.meta["stats"] = {**{k: v for k, v in vars(self.stats).items() if k != "dropped"},
                              "dropped": dict(self.stats.dropped)}
        if summary:
            self.meta["live"] = summary
        write_json_atomic(self.folder / "meta.json", self.meta)
        log.info("event=recording_closed folder=%s frames=%d chunks=%d dropped=%s", self.folder,
                 self.stats.frames, self.stats.chunks, dict(self.stats.dropped))

    def status(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "frames": self.stats.frames, "chunks": self.stats.chunks,
                "messages": self.stats.messages, "dropped": dict(self.stats.dropped),
                "queued": len(self._items), "write_errors": self.stats.write_errors}

    # ----------------------------------------------------------------- writer thread

    def _run(self) -> None:
        t_cpu = time.thread_time()
        while True:
            with self._cond:
                if not self._items and not self._closing:
                    self._cond.wait(1.0)
                if not self._items:
                    if self._closing:
                        break
                    kind = None
                else:
                    kind, obj = self._items.popleft()
                    if kind in ("frame", "chunk"):
                        self._media -= 1
                        self._media_bytes -= _nbytes(obj)
            if kind is None:  # idle for a second: what is written reaches the disk
                self._flush()
                continue
            try:
                self._write(kind, obj)
            except Exception as exc:  # noqa: BLE001 - a full disk must not end the daemon
                self.stats.write_errors += 1
                if self.stats.write_errors in (1, 100, 10_000):
                    log.error("event=recording_write_failed kind=%s error=%r", kind, exc)
            now = time.monotonic()
            if now - self._last_flush > 1.0:  # a crash (SIGKILL, power) loses ~1 s at most
                self._last_flush = now
                self._flush()
            if now - self._last_quota > 10.0:
                self._last_quota = now
                self._quota()
        self._quota()
        self.stats.writer_cpu_s = time.thread_time() - t_cpu

    def _write(self, kind: str, obj: Any) -> None:
        if kind == "frame":
            w = self._video.get(obj.source_id)
            if w is None:
                w = self._video[obj.source_id] = VideoWriter(self.folder / "video" / obj.source_id, self.cfg)
                w.on_closed = self._seal if self.cipher else None
            w.write(obj)
            self.stats.frames += 1
        elif kind == "chunk":
            a = self._audio.get(obj.source_id)
            if a is None:
                a = self._audio[obj.source_id] = AudioWriter(self.folder / "audio" / obj.source_id, self.cfg)
                a.on_closed = self._seal if self.cipher else None
            a.write(obj)
            self.stats.chunks += 1
        elif kind == "journal":
            self._files["journal"].write(self._sealed("journal", _line(obj)))
            self.stats.journal += 1
        elif kind == "command":
            self._files["commands"].write(self._sealed("commands", _line(obj)))
            self.stats.commands += 1
        elif kind == "message":
            self._files["messages"].write(self._sealed("messages", bytes(obj).rstrip(b"\n") + b"\n"))
            self.stats.messages += 1
        elif kind == "drop":
            k, source, seq, t, reason = obj
            self._files["drops"].write(self._sealed("drops", _line(
                {"kind": k, "source": source, "seq": seq, "t": t, "reason": reason})))

    def _sealed(self, name: str, line: bytes) -> bytes:
        """A JSON line as is, or sealed (base64, one per line: a cut file loses one line)."""
        if self.cipher is None:
            return line
        return base64.b64encode(self.cipher.seal(line.rstrip(b"\n"), f"{name}.jsonl".encode())) + b"\n"

    def _seal(self, paths: list[Path]) -> None:
        assert self.cipher is not None
        for p in paths:
            if p.exists():
                seal_file(p, self.folder, self.cipher)

    def _flush(self) -> None:
        for f in self._files.values():
            try:
                f.flush()
            except (OSError, ValueError):
                pass
        for w in [*self._video.values(), *self._audio.values()]:
            try:
                w.flush()
            except (OSError, ValueError):
                pass

    def _quota(self) -> None:
        keep = {w.path for w in [*self._video.values(), *self._audio.values()] if w.n >= 0}
        age = None if self.cfg.max_age_hours is None else self.cfg.max_age_hours * 3600
        try:
            self.stats.deleted_segments += enforce_quota(self.cfg.dir if self.folder.is_relative_to(
                self.cfg.dir) else self.folder, self.cfg.max_bytes, age, keep)
        except OSError as exc:
            log.warning("event=recording_quota_failed error=%r", exc)


def open_recorder(cfg: RecordConfig, config: dict[str, Any], bundle_version: str,
                  cipher: Sealer | None = None) -> Recorder | None:
    """The composition root's one call: a Recorder when `record.enabled`, else None."""
    if not cfg.enabled:
        return None
    return Recorder(cfg, {"config": config, "bundle_version": bundle_version}, cipher=cipher)


def chain_taps(*taps: Callable[[Any, bytes], None] | None) -> Callable[[Any, bytes], None] | None:
    """One publisher tap calling each given one in turn (the bridges, the recorder)."""
    live = [t for t in taps if t is not None]
    if len(live) <= 1:
        return live[0] if live else None

    def tap(envelope: Any, body: bytes) -> None:
        for t in live:
            t(envelope, body)

    return tap
