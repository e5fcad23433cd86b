"""What health, metrics and the operator side read from a running daemon: a typed view.

`daemon.app.Daemon` satisfies it; readers (ops.py, health/report.py, health/metrics.py,
health/status.py, the console's DaemonAdapter in console/host.py) take this Protocol instead of
the whole daemon.  Everything here is built before the lifecycle leaves STARTING; readers that
run earlier (the /healthz route while the bundle loads) read only `lifecycle`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    import zmq

    from perceptd.daemon.config import Config
    from perceptd.daemon.control.server import ControlServer
    from perceptd.daemon.health.lifecycle import Lifecycle
    from perceptd.daemon.health.report import HealthReport
    from perceptd.daemon.health.stats import HistogramSet, Rates
    from perceptd.daemon.health.watchdog import Watchdog
    from perceptd.daemon.inference.models import ModelSet
    from perceptd.daemon.inference.swap import BundleSwapper
    from perceptd.daemon.pipeline.audio_stage import AudioStage
    from perceptd.daemon.pipeline.fusion_stage import FusionStage
    from perceptd.daemon.pipeline.queues import BoundedQueue
    from perceptd.daemon.pipeline.vision_stage import VisionStage
    from perceptd.daemon.pipeline.worker import Worker
    from perceptd.daemon.publish.mqtt import MqttBridge
    from perceptd.daemon.publish.zmq_pub import EventPublisher
    from perceptd.daemon.samples.logger import SampleLogger
    from perceptd.daemon.security.curve import CurveServer
    from perceptd.daemon.snapshots.store import SnapshotStore
    from perceptd.daemon.sources.base import Source
    from perceptd.daemon.speech.stage import SpeechSetup


class PipelineView(Protocol):
    """The parts of a started daemon that operations read (never write)."""

    cfg: Config
    config_path: Path | None  # the file `perceptd run -c` read (None: the demo's generated config)
    ctx: zmq.Context
    notify: Callable[[str], None]
    lifecycle: Lifecycle
    started_ns: int  # monotonic time start() began (stage heartbeats count from it)
    sources: list[Source]
    stages: list[Worker[Any]]  # the worker stages, fusion apart
    vision: VisionStage
    audio: AudioStage  # its `levels`: the console's meters
    fusion: FusionStage
    queues: list[BoundedQueue[Any]]
    publisher: EventPublisher
    control: ControlServer
    samples: SampleLogger
    snapshots: SnapshotStore | None  # None: snapshots off
    speech_setup: SpeechSetup
    bundles: BundleSwapper  # swaps, the last swap and the reload state

    @property
    def errors(self) -> list[str]: ...  # open refusals, "<UTC time> <what>"

    @property
    def ops(self) -> OperationsView: ...  # the operator side: readiness, rate meters, latency

    def current_models(self) -> ModelSet: ...

    def status(self) -> dict[str, Any]: ...  # the `status` reply (health/status.py)

    def watchdog_interval_s(self) -> float | None: ...  # systemd's WatchdogSec / 2, or None


class OperationsView(Protocol):
    """What /metrics and the console read from the operator side (ops.Operations)."""

    ready: bool  # start() ran: /healthz, /metrics and the console answer
    rates: Rates
    latency: HistogramSet
    watchdog: Watchdog | None
    curve: CurveServer | None
    mqtt: MqttBridge | None
    last_scrape_s: float

    def health(self) -> HealthReport: ...
