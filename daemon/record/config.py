"""The `record:` section: what a live run writes for `perceptd replay` (off by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RecordConfig(BaseModel):
    """Record every input as captured (camera frames, audio chunks, commands), the fusion
    schedule and the published messages, for deterministic replay (docs/replay.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="record this run (`perceptd run --record DIR` sets it)")
    dir: Path = Field(
        default=Path("state/recordings"),
        description="each run records into a new folder <dir>/<UTC start>-<run id>/",
    )
    video: Literal["h264", "lossless"] = Field(
        default="h264",
        description="camera segments: h264 (x264 crf, ~3 ms/frame at 640x480 on one core, lossy) or "
        "lossless (x264 RGB qp 0: replay sees the very pixels the live run saw, ~7 ms/frame, ~10x bigger)",
    )
    crf: int = Field(default=18, ge=0, le=51, description="h264 quality (lower is better and bigger)")
    audio: Literal["pcm", "flac"] = Field(
        default="pcm",
        description="audio segments: pcm (raw float32, exact, 64 kB/s per source) or flac (24-bit, "
        "about half the size, not bit-exact for resampled files)",
    )
    segment_s: float = Field(
        default=60.0, ge=1, le=3600, description="a camera/audio segment rotates after this"
    )
    max_bytes: int = Field(
        default=2 * 1024**3, ge=1024**2, le=2**44,
        description="quota over all recordings in dir: the oldest segments are deleted beyond it",
    )
    max_age_hours: float | None = Field(
        default=None, gt=0, le=24 * 365, description="delete segments older than this (null: keep)"
    )
    queue_size: int = Field(
        default=64, ge=4, le=4096,
        description="items waiting for the writer; beyond it items are not recorded (counted, "
        "and replay says so): recording never slows capture",
    )
    queue_mb: int = Field(
        default=64, ge=1, le=4096,
        description="and at most this many MiB of them (64 frames of 1080p would be 400 MiB)",
    )
    encrypt: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="seal segments (once closed) and every JSON line with the samples' key "
        "(samples.encryption.key_file, AES-256-GCM); auto: when samples.encryption.enabled",
    )
    nice: int = Field(default=10, ge=0, le=19, description="niceness of the ffmpeg encoders")
