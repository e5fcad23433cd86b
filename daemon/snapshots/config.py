"""The `snapshots:` config section: off by default, like `samples.raw_media` (raw frames are
private data; an event carries a snapshot id only where this section allows keeping them)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class SnapshotConfig(BaseModel):
    """The frames current at each event start, JPEG, in a store bounded by count, bytes and age."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="keep a snapshot per event start (raw frames: "
                          "off by default); the event message then carries its `snapshot` id")
    dir: Path = Field(default=Path("state/snapshots"), description="one folder per snapshot (created 0700)")
    max_count: int = Field(default=500, ge=1, le=1_000_000, description="snapshots kept, oldest go first")
    max_bytes: int = Field(default=200 * 1024 * 1024, ge=1024, le=1 << 40,
                           description="bytes kept over all snapshots, oldest go first")
    max_age_days: float = Field(default=7.0, gt=0, le=3650, description="older snapshots are deleted")
    width: int = Field(default=640, ge=64, le=4096, description="frames wider than this are scaled down")
    jpeg_quality: int = Field(default=80, ge=10, le=100, description="JPEG quality")
    queue: int = Field(default=8, ge=1, le=256, description="snapshots waiting to be written; more are "
                       "dropped and counted (the publisher never waits for the disk)")

    def resolved(self, base: Path) -> SnapshotConfig:
        if self.dir.is_absolute():
            return self
        return self.model_copy(update={"dir": (base / self.dir).resolve()})
