"""The root configuration: one small model per concern, cross-concern checks as named functions."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from perceptd.daemon.config.events import EventConfig, check_unique_names


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BundleConfig(_Section):
    """Where model bundles live; `current` and `previous` pointers select the active one."""

    dir: Path = Field(Path("bundle"), description="folder holding <version>/ bundles")
    version: str = Field("current", min_length=1, description="bundle version or 'current'")


class RuntimeConfig(_Section):
    """ONNX Runtime placement: one setting for every session."""

    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="auto: CUDA when present")
    intra_op_threads: int = Field(1, ge=1, le=64, description="threads per session")


class FusionConfig(_Section):
    """How often events are evaluated on the shared timeline."""

    tick_ms: int = Field(100, ge=10, le=5000, description="fusion evaluation period")


class Config(_Section):
    """perceptd configuration (config.yaml)."""

    bundle: BundleConfig = Field(default_factory=BundleConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    events: list[EventConfig] = Field(default_factory=list, description="the event vocabulary")

    _check_events = field_validator("events")(classmethod(lambda cls, v: check_unique_names(v)))

    def resolved(self, base: Path) -> Config:
        """Relative paths are relative to the config file, not to wherever the daemon started."""
        data = self.model_copy(deep=True)
        if not data.bundle.dir.is_absolute():
            data.bundle.dir = (base / data.bundle.dir).resolve()
        return data
