"""One logged sample and its file format (numpy .npz inside a tiny header, optionally sealed).

File layout: ``MAGIC`` (6 bytes) + flags (1 byte; bit 0: AES-GCM) + body.  The body is an
uncompressed .npz (zip with CRC per member, loaded with allow_pickle=False) holding the arrays,
raw media as uint8 arrays, and a JSON ``meta`` member.  Encrypted bodies are nonce+ciphertext,
with the sample id as associated data.  Labels are not in the file: they live in the index.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perceptd.daemon.samples.crypto import Cipher, SampleCryptoError

MAGIC = b"PDSMP1"
FLAG_ENCRYPTED = 1
FORMAT_VERSION = 1
SAMPLE_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{12}$")
_ARRAYS = ("x", "mask", "scores", "vision_features", "audio_embeddings", "vision_probs",
           "audio_probs")
_MEDIA = ("jpeg", "wav")


class SampleFormatError(Exception):
    """A sample file that is not (or no longer) a complete sample; names the file."""


def new_sample_id(wall_ns: int | None = None) -> str:
    """Sortable by time, unguessable, and safe as a file name (see `check_sample_id`)."""
    wall_ns = time.time_ns() if wall_ns is None else wall_ns
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(wall_ns // 1_000_000_000)) + "-" + secrets.token_hex(6)


def encoder_fingerprint(manifest: dict[str, Any]) -> str:
    """Identifies the encoders (every model but the fusion head) of a bundle: a fusion-only
    retrain keeps it, so samples stay valid training data until an encoder changes."""
    files = manifest.get("files", {})
    parts = sorted(
        (name, files.get(entry.get("file", ""), ""))
        for name, entry in manifest.get("models", {}).items()
        if entry.get("group", name.split("_")[0]) != "fusion"
    )
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def check_sample_id(sample_id: object) -> str:
    """Only ids this module made are accepted: no path separators, dots or other surprises."""
    if not isinstance(sample_id, str) or not SAMPLE_ID_RE.fullmatch(sample_id):
        raise ValueError(f"not a sample id: {str(sample_id)[:80]!r} (expected YYYYMMDDTHHMMSS-<12 hex>)")
    return sample_id


@dataclass
class Sample:
    """Everything logged about one fusion window (embeddings always, media only if allowed)."""

    id: str
    created_ns: int  # wall clock (time.time_ns) when logged
    t_capture_ns: int  # monotonic capture time of the newest contributing output
    trigger: str
    event: str | None  # the event that triggered it (None: random)
    score: float | None
    model_version: str
    encoder_fp: str  # fingerprint of the encoders that made x (retrain uses matching samples)
    events: tuple[str, ...]  # names of `scores`, in order
    scores: np.ndarray  # [E]
    x: np.ndarray  # [M, D] shared-space vectors (rows where mask is 0 are zeros)
    mask: np.ndarray  # [M]
    modality_names: tuple[str, ...]
    sources: dict[str, str] = field(default_factory=dict)  # modality -> source id
    t_modalities: dict[str, int] = field(default_factory=dict)  # modality -> capture ns
    tops: dict[str, list[list[Any]]] = field(default_factory=dict)  # modality -> [[label, p]]
    vision_features: np.ndarray | None = None  # [1280] encoder feature (adapters' input)
    audio_embeddings: np.ndarray | None = None  # [1024]
    vision_probs: np.ndarray | None = None  # [1000] ImageNet probabilities (class evidence)
    audio_probs: np.ndarray | None = None  # [521] AudioSet probabilities (class evidence)
    commands: dict[str, float] = field(default_factory=dict)  # matcher log-odds per command
    text: str | None = None  # command text, only when raw media allows it
    jpeg: bytes | None = None
    wav: bytes | None = None
    labels: dict[str, int] = field(default_factory=dict)  # from the index: event -> 1/0

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m, v in zip(self.modality_names, self.mask, strict=True) if v > 0)

    @property
    def combo(self) -> str:
        return "+".join(self.modalities) or "none"

    @property
    def media(self) -> str:
        return ",".join(k for k in _MEDIA if getattr(self, k))

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION, "id": self.id, "created_ns": self.created_ns,
            "t_capture_ns": self.t_capture_ns, "trigger": self.trigger, "event": self.event,
            "score": self.score, "model_version": self.model_version, "encoder_fp": self.encoder_fp,
            "events": list(self.events), "modality_names": list(self.modality_names),
            "sources": self.sources, "t_modalities": self.t_modalities, "tops": self.tops,
            "text": self.text, "commands": self.commands,
        }


def _npz_bytes(s: Sample) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    for name in _ARRAYS:
        value = getattr(s, name)
        if value is not None:
            arrays[name] = np.ascontiguousarray(value, np.float32)
    for name in _MEDIA:
        value = getattr(s, name)
        if value:
            arrays[name] = np.frombuffer(value, np.uint8)
    arrays["meta"] = np.frombuffer(json.dumps(s.meta(), allow_nan=False).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # pyright: ignore[reportArgumentType] - numpy's stub types **kwds as allow_pickle
    return buf.getvalue()


def encode(s: Sample, cipher: Cipher | None = None) -> bytes:
    body = _npz_bytes(s)
    if cipher is None:
        return MAGIC + bytes([0]) + body
    return MAGIC + bytes([FLAG_ENCRYPTED]) + cipher.seal(body, s.id.encode())


def is_encrypted(blob: bytes) -> bool:
    return len(blob) > len(MAGIC) and blob[: len(MAGIC)] == MAGIC and bool(blob[len(MAGIC)] & 1)


def plaintext(blob: bytes, sample_id: str, cipher: Cipher | None, where: str) -> bytes:
    """The .npz body of a file blob (decrypted when sealed)."""
    if len(blob) <= len(MAGIC) or blob[: len(MAGIC)] != MAGIC:
        raise SampleFormatError(f"{where}: not a perceptd sample file")
    body = blob[len(MAGIC) + 1:]
    if blob[len(MAGIC)] & FLAG_ENCRYPTED:
        if cipher is None:
            raise SampleCryptoError(f"{where}: sample is encrypted; the key is needed to read it")
        body = cipher.open(body, sample_id.encode(), where)
    return body


def decode(blob: bytes, sample_id: str, cipher: Cipher | None = None, where: str = "sample") -> Sample:
    body = plaintext(blob, sample_id, cipher, where)
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise SampleFormatError(f"{where}: damaged sample body ({exc})") from None
    try:
        meta = json.loads(arrays.pop("meta").tobytes())
    except (KeyError, ValueError) as exc:
        raise SampleFormatError(f"{where}: sample metadata unreadable ({exc})") from None
    if meta.get("id") != sample_id:
        raise SampleFormatError(f"{where}: file holds sample {meta.get('id')!r}, not {sample_id!r}")
    media = {k: arrays[k].tobytes() if k in arrays else None for k in _MEDIA}
    return Sample(
        id=sample_id, created_ns=int(meta["created_ns"]), t_capture_ns=int(meta["t_capture_ns"]),
        trigger=meta["trigger"], event=meta.get("event"), score=meta.get("score"),
        model_version=meta["model_version"], encoder_fp=meta.get("encoder_fp", ""),
        events=tuple(meta["events"]), scores=arrays["scores"], x=arrays["x"], mask=arrays["mask"],
        modality_names=tuple(meta["modality_names"]), sources=dict(meta.get("sources", {})),
        t_modalities={k: int(v) for k, v in meta.get("t_modalities", {}).items()},
        tops=dict(meta.get("tops", {})), vision_features=arrays.get("vision_features"),
        audio_embeddings=arrays.get("audio_embeddings"), text=meta.get("text"),
        vision_probs=arrays.get("vision_probs"), audio_probs=arrays.get("audio_probs"),
        commands={str(k): float(v) for k, v in meta.get("commands", {}).items()},
        **media,  # pyright: ignore[reportArgumentType] - jpeg/wav bytes only
    )
