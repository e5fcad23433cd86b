"""The root configuration: one small model per concern, cross-concern checks as named functions."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from perceptd.daemon.console.config import ConsoleConfig
from perceptd.daemon.control.server import ControlConfig
from perceptd.daemon.events.config import EventConfig, check_unique_names
from perceptd.daemon.health.http import HttpConfig
from perceptd.daemon.pipeline.audio_stage import AudioStageConfig
from perceptd.daemon.pipeline.vision_stage import VisionStageConfig
from perceptd.daemon.publish.mqtt import MqttConfig
from perceptd.daemon.publish.zmq_pub import PublisherConfig
from perceptd.daemon.record.config import RecordConfig
from perceptd.daemon.samples.config import SamplesConfig
from perceptd.daemon.security.curve import SecurityConfig
from perceptd.daemon.snapshots.config import SnapshotConfig
from perceptd.daemon.sources.camera import CameraConfig
from perceptd.daemon.sources.microphone import MicrophoneConfig
from perceptd.daemon.sources.wavfile import WavFileConfig
from perceptd.daemon.speech.config import SpeechConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BundleConfig(_Section):
    """Where model bundles live; `current` and `previous` pointers select the active one."""

    dir: Path = Field(default=Path("bundle"), description="folder holding <version>/ bundles")
    version: str = Field(default="current", min_length=1, description="bundle version or 'current'")


class RuntimeConfig(_Section):
    """ONNX Runtime placement: one setting for every session."""

    device: Literal["auto", "cuda", "cpu"] = Field(default="auto", description="auto: CUDA when present")
    intra_op_threads: int = Field(default=1, ge=1, le=64, description="threads per session")
    tensorrt: bool = Field(default=True, description="on a GPU, prefer TensorRT where its libraries load")
    tensorrt_cache: Path = Field(
        default=Path("state/tensorrt"), description="TensorRT engine cache (a restart reuses built engines)"
    )
    gpu_resize: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="resize + BGR->RGB of camera frames on the device (bundle's vision_resize); "
        "auto: when vision runs on a GPU"
    )
    cuda_graph: bool = Field(
        default=False, description="vision encoder at a fixed batch (vision.max_batch, padded) replayed "
        "as a CUDA graph"
    )
    pinned_memory: bool = Field(
        default=True, description="page-locked host buffers for batches copied to a GPU"
    )


class FusionConfig(_Section):
    """How often events are evaluated on the shared timeline."""

    tick_ms: int = Field(default=100, ge=10, le=5000, description="fusion evaluation period")


class ShadowConfig(_Section):
    """Shadow runs of a candidate bundle beside the live one (`perceptd reload --shadow`,
    docs/replay.md)."""

    default_minutes: float = Field(
        default=10.0, gt=0, le=10080, description="shadow period when the request names none")
    shift_ms: int = Field(
        default=1000, ge=0, le=60000,
        description="a candidate's event start within this of a live start of the same event "
                    "agrees with it (evaluate's --shift-ms)")
    min_agreement: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="promotion (`retrain --promote`, `reload --promote`, the console's Promote) "
                    "of a bundle whose last shadow report, in the running daemon, has agreement "
                    "below this is refused; 0 never refuses; without a shadow report of that "
                    "bundle nothing is checked")


class SourcesConfig(_Section):
    """Capture sources; `perceptd run --camera/--audio-file/--mic` replace these."""

    cameras: list[CameraConfig] = Field(default_factory=list, description="any number of cameras")
    microphone: MicrophoneConfig | None = Field(default=None, description="live microphone (or none)")
    audio_files: list[WavFileConfig] = Field(
        default_factory=list, description="sound files replayed in real time"
    )


QueuePolicy = Literal["auto", "drop_oldest", "block", "latest"]


class QueueConfig(_Section):
    """A bounded stage queue; auto: block for replay files, else latest (frames, prepared: the
    newest frame per camera) or drop_oldest (the others)."""

    size: int = Field(default=8, ge=1, le=100_000, description="items held before the policy applies")
    policy: QueuePolicy = Field(
        default="auto", description="auto | drop_oldest | block | latest (frames and prepared only: "
        "at most the newest frame of each camera waits; an older one is dropped as superseded)")
    max_age_ms: float | None = Field(
        default=None, gt=0, le=3_600_000,
        description="frames and prepared, live only: a frame older than this (since capture) when "
        "a stage would take it is dropped and counted (reason stale); null (default): no age "
        "limit: with 'latest' a frame already waits at most one encoder batch, and on a starved "
        "CPU a late frame is still evidence where none would come; ignored where the queue "
        "blocks (replay files lose nothing)")


_FRAME_QUEUES = ("frames", "prepared")


class PipelineConfig(_Section):
    """The queues between stages (every drop is counted per queue and reason)."""

    frames: QueueConfig = Field(default_factory=lambda: QueueConfig(size=4))
    prepared: QueueConfig = Field(default_factory=lambda: QueueConfig(size=4))
    audio: QueueConfig = Field(default_factory=lambda: QueueConfig(size=64))
    commands: QueueConfig = Field(default_factory=lambda: QueueConfig(size=32, policy="drop_oldest"))
    fusion: QueueConfig = Field(default_factory=lambda: QueueConfig(size=256, policy="block"))
    publish: QueueConfig = Field(default_factory=lambda: QueueConfig(size=1024, policy="block"))

    @field_validator("audio", "commands", "fusion", "publish")
    @classmethod
    def _frame_only_options(cls, q: QueueConfig) -> QueueConfig:
        frames = " and ".join(_FRAME_QUEUES)
        if q.policy == "latest":
            raise ValueError(f"policy 'latest' is for {frames} only")
        if q.max_age_ms is not None:
            raise ValueError(f"max_age_ms: only {frames} have an age limit")
        return q


class HealthConfig(_Section):
    """Health messages on the `health` topic."""

    interval_s: float = Field(default=5.0, gt=0, le=3600, description="period of health messages")
    stall_after_s: float = Field(
        default=5.0, gt=0, le=3600, description="a stage silent this long while fed counts as stalled"
    )


class Config(_Section):
    """perceptd configuration (config.yaml)."""

    bundle: BundleConfig = Field(default_factory=BundleConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    vision: VisionStageConfig = Field(default_factory=VisionStageConfig)
    audio: AudioStageConfig = Field(default_factory=AudioStageConfig)
    speech: SpeechConfig = Field(default_factory=SpeechConfig)  # pyright: ignore[reportArgumentType] - speech/config.py: positional Field defaults
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    publish: PublisherConfig = Field(default_factory=PublisherConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    samples: SamplesConfig = Field(default_factory=SamplesConfig)
    snapshots: SnapshotConfig = Field(default_factory=SnapshotConfig)
    record: RecordConfig = Field(default_factory=RecordConfig)
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)
    events: list[EventConfig] = Field(default_factory=list, description="the event vocabulary")

    _check_events = field_validator("events")(classmethod(lambda cls, v: check_unique_names(v)))

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        check_source_ids(self.sources)
        return self

    def resolved(self, base: Path) -> Config:
        """Relative paths are relative to the config file, not to wherever the daemon started."""
        data = self.model_copy(deep=True)
        if not data.bundle.dir.is_absolute():
            data.bundle.dir = (base / data.bundle.dir).resolve()
        if not data.runtime.tensorrt_cache.is_absolute():
            data.runtime.tensorrt_cache = (base / data.runtime.tensorrt_cache).resolve()
        data.samples = data.samples.resolved(base)
        data.snapshots = data.snapshots.resolved(base)
        if not data.record.dir.is_absolute():
            data.record.dir = (base / data.record.dir).resolve()
        data.speech = data.speech.resolved(base)
        for f in data.sources.audio_files:
            if not f.path.is_absolute():
                f.path = (base / f.path).resolve()
        data.security = data.security.resolved(base)
        data.mqtt = data.mqtt.resolved(base)
        for cam in data.sources.cameras:
            if "://" not in cam.uri and not cam.uri.isdigit() and not cam.uri.startswith("/"):
                cam.uri = str((base / cam.uri).resolve())
        return data


def check_source_ids(sources: SourcesConfig) -> None:
    ids = [c.id for c in sources.cameras] + [f.id for f in sources.audio_files]
    if sources.microphone is not None:
        ids.append(sources.microphone.id)
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"duplicate source id(s) {dup}: every source needs its own id")
