"""Open a recording (writer.py's layout) and hand out its inputs in capture order.

Damage is expected (a power cut mid-segment, a deleted index, quota deletions): whatever is
intact is read, and every skip is described in `Recording.problems`, one line each.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perceptd.daemon.record.writer import SEALED, Sealer, media_suffix, segment_index
from perceptd.daemon.sources.base import CHUNK_SAMPLES, AudioChunk, Frame

log = logging.getLogger(__name__)


class RecordingError(Exception):
    """A folder that is not a recording at all: one clear line."""


@dataclass(frozen=True)
class RecordedCommand:
    t_capture_ns: int
    text: str
    origin: str
    source: str


def find_recording(path: Path) -> Path:
    """`path` itself when it holds meta.json; else its newest recording sub-folder."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return path
    subs = sorted(p for p in path.glob("*/meta.json")) if path.is_dir() else []
    if not subs:
        raise RecordingError(f"{path}: not a recording (no meta.json here or in a sub-folder)")
    return subs[-1].parent


class Recording:
    def __init__(self, path: Path, cipher: Sealer | None = None) -> None:
        self.path = find_recording(Path(path))
        self.cipher = cipher  # the samples' key, for a recording made with record.encrypt
        try:
            self.meta: dict[str, Any] = json.loads((self.path / "meta.json").read_text())
        except (OSError, ValueError) as exc:
            raise RecordingError(f"{self.path / 'meta.json'}: unreadable ({exc})") from None
        if not isinstance(self.meta, dict) or self.meta.get("format") != 1:
            raise RecordingError(f"{self.path / 'meta.json'}: not a format-1 recording")
        self.problems: list[str] = []
        self.skipped = {"frames": 0, "chunks": 0, "lines": 0, "segments": 0}

    # ----------------------------------------------------------------- small files

    def _jsonl(self, name: str) -> list[Any]:
        p = self.path / name
        if not p.exists():
            return []
        out, bad, locked = [], 0, 0
        for line in p.read_bytes().splitlines():
            if not line.strip():
                continue
            if not line.startswith(b"{"):  # a sealed line (record.encrypt)
                if self.cipher is None:
                    locked += 1
                    continue
                try:
                    line = self.cipher.open(base64.b64decode(line, validate=True), name.encode(),
                                            str(p))
                except binascii.Error:
                    bad += 1  # a cut line
                    continue
                except Exception:  # noqa: BLE001 - wrong key or tampered: skip, say so
                    locked += 1
                    continue
            try:
                out.append(json.loads(line))
            except ValueError:
                bad += 1
        if locked:
            self.problems.append(f"{name}: {locked} encrypted line(s) skipped (no or wrong key: "
                                 "samples.encryption.key_file)")
        if bad:
            self.skipped["lines"] += bad
            self.problems.append(f"{name}: {bad} unreadable line(s) skipped (a cut write)")
        return out

    def journal(self) -> list[dict[str, Any]]:
        return [e for e in self._jsonl("journal.jsonl") if isinstance(e, dict) and "t" in e]

    def messages(self) -> list[dict[str, Any]]:
        return [m for m in self._jsonl("messages.jsonl") if isinstance(m, dict)]

    def drops(self) -> list[dict[str, Any]]:
        return self._jsonl("drops.jsonl")

    def commands(self) -> list[RecordedCommand]:
        """Typed commands (origin control): replay inputs.  Spoken ones come from the audio."""
        out = []
        for c in self._jsonl("commands.jsonl"):
            try:
                cmd = RecordedCommand(int(c["t"]), str(c["text"]), str(c.get("origin", "control")),
                                      str(c.get("source", "control")))
            except (KeyError, TypeError, ValueError):
                self.skipped["lines"] += 1
                continue
            if cmd.origin != "speech":
                out.append(cmd)
        return out

    # ----------------------------------------------------------------- media

    def cameras(self) -> list[str]:
        d = self.path / "video"
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def audio_sources(self) -> list[str]:
        d = self.path / "audio"
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def _bytes(self, p: Path) -> bytes | None:
        """A file's content, opened with the key when sealed; None (and a problem) when not."""
        if not p.name.endswith(SEALED):
            return p.read_bytes()
        rel = str(p.relative_to(self.path))
        if self.cipher is None:
            self.problems.append(f"{rel}: encrypted and no key given; skipped")
            return None
        try:
            return self.cipher.open(p.read_bytes(), rel[: -len(SEALED)].encode(), rel)
        except Exception as exc:  # noqa: BLE001 - a wrong key or a tampered file: skip, say so
            self.problems.append(f"{rel}: {str(exc).splitlines()[0]}; skipped")
            return None

    def _index(self, idx: Path) -> list[tuple[int, int]] | None:
        data = self._bytes(idx)
        if data is None:
            return None
        entries, bad = [], 0
        for line in data.splitlines():
            try:
                d = json.loads(line)
                entries.append((int(d["seq"]), int(d["t"])))
            except (ValueError, KeyError, TypeError):
                bad += 1
        if bad:
            self.problems.append(f"{idx.relative_to(self.path)}: {bad} unreadable index line(s)")
        return entries

    def _segments(self, folder: Path, suffixes: tuple[str, ...]
                  ) -> Iterator[tuple[Path, list[tuple[int, int]]]]:
        media = sorted(p for p in folder.glob("seg-*") if media_suffix(p) in suffixes)
        idxs = sorted(p for p in folder.glob("seg-*") if media_suffix(p) == ".idx")
        for idx in idxs:
            if not any(segment_index(m) == idx for m in media):
                self.skipped["segments"] += 1
                self.problems.append(f"{idx.relative_to(self.path)}: its media segment is missing; skipped")
        for seg in media:
            idx = segment_index(seg)
            if not idx.exists():
                self.skipped["segments"] += 1
                self.problems.append(f"{seg.relative_to(self.path)}: no index (capture times); skipped")
                continue
            index = self._index(idx)
            if index is not None:
                yield seg, index

    def frames(self, camera: str) -> Iterator[Frame]:
        import cv2

        for seg, index in self._segments(self.path / "video" / camera, (".mkv",)):
            plain, tmp = seg, None
            if seg.name.endswith(SEALED):  # decoded from a private temporary copy, then removed
                data = self._bytes(seg)
                if data is None:
                    self.skipped["frames"] += len(index)
                    continue
                shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
                fd, tmp = tempfile.mkstemp(suffix=".mkv", dir=shm)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                plain = Path(tmp)
            cap = cv2.VideoCapture(str(plain), cv2.CAP_FFMPEG)
            n = 0
            try:
                while n < len(index):
                    ok, img = cap.read() if cap.isOpened() else (False, None)
                    if not ok or img is None:
                        break
                    seq, t = index[n]
                    yield Frame(camera, seq, t, img)
                    n += 1
                extra = cap.isOpened() and cap.read()[0]
            finally:
                cap.release()
                if tmp is not None:
                    os.unlink(tmp)
            if n < len(index):
                self.skipped["frames"] += len(index) - n
                self.problems.append(f"{seg.relative_to(self.path)}: {n} of {len(index)} frames "
                                     "decodable (truncated or corrupt); the rest skipped")
            elif extra:
                self.problems.append(f"{seg.relative_to(self.path)}: more frames than its index; "
                                     "the extra ones skipped")

    def chunks(self, source: str) -> Iterator[AudioChunk]:
        for seg, index in self._segments(self.path / "audio" / source, (".f32", ".flac")):
            pcm = self._read_pcm(seg)
            n = min(len(index), len(pcm) // CHUNK_SAMPLES)
            for i in range(n):
                seq, t = index[i]
                yield AudioChunk(source, seq, t, pcm[i * CHUNK_SAMPLES:(i + 1) * CHUNK_SAMPLES].copy())
            if n < len(index):
                self.skipped["chunks"] += len(index) - n
                self.problems.append(f"{seg.relative_to(self.path)}: {n} of {len(index)} chunks "
                                     "readable (truncated); the rest skipped")

    def _read_pcm(self, seg: Path) -> np.ndarray:
        raw = self._bytes(seg)
        if raw is None:
            return np.zeros(0, np.float32)
        if media_suffix(seg) == ".f32":
            return np.frombuffer(raw[: len(raw) // 4 * 4], dtype=np.float32)
        import soundfile as sf

        blocks = []
        try:
            with sf.SoundFile(io.BytesIO(raw)) as f:
                while True:
                    b = f.read(CHUNK_SAMPLES * 32, dtype="float32", always_2d=True)
                    if not len(b):
                        break
                    blocks.append(b[:, 0])
        except (RuntimeError, sf.LibsndfileError) as exc:
            self.problems.append(f"{seg.relative_to(self.path)}: audio read stopped ({exc})")
        return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)

    def inputs(self) -> Iterator[tuple[int, int, Any]]:
        """(t_capture_ns, order, item) of every frame, chunk and typed command, by time.
        `order` breaks ties the same way every time (cameras, then audio, then commands)."""
        streams: list[Iterator[tuple[int, int, Any]]] = []
        for i, cam in enumerate(self.cameras()):
            streams.append((f.t_capture_ns, i, f) for f in self.frames(cam))
        base = len(streams)
        for j, src in enumerate(self.audio_sources()):
            streams.append((c.t_capture_ns, base + j, c) for c in self.chunks(src))
        cmds = self.commands()
        streams.append((c.t_capture_ns, 1_000_000, c) for c in cmds)
        return heapq.merge(*streams, key=lambda x: (x[0], x[1]))
