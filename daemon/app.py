"""The composition root: build queues, stages, sources and sockets; start them in order, stop
them in reverse, draining every queue so no event is lost and every open event gets its end.

Data flows one way: sources -> queues -> preprocess -> vision | audio | text -> fusion ->
publish.  The parts start downstream first (a consumer runs before its producer), so stopping
in reverse stops a producer, then closes and drains the queue of the part it fed.  What the
daemon says about itself lives in health/status.py, the control handlers in control/handlers.py,
the bundle and its hot swap in inference/swap.py.  Nothing here is global: a test can run two
daemons in one process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import zmq

from perceptd.daemon.bundle import Bundle
from perceptd.daemon.config import Config
from perceptd.daemon.config.root import QueueConfig
from perceptd.daemon.console.host import DaemonAdapter
from perceptd.daemon.control.handlers import ControlHandlers
from perceptd.daemon.control.server import ControlServer, HandlerRegistry
from perceptd.daemon.fusion.fused import PublishSink
from perceptd.daemon.health import status as status_report
from perceptd.daemon.health.lifecycle import Lifecycle, State
from perceptd.daemon.health.sdnotify import Notifier
from perceptd.daemon.health.status import ErrorBoard
from perceptd.daemon.inference.models import ModelSet, load_models
from perceptd.daemon.inference.session import SessionOptions
from perceptd.daemon.inference.swap import BundleSwapper
from perceptd.daemon.inference.vision import VisionRuntime
from perceptd.daemon.messages import Outbound
from perceptd.daemon.ops import Operations
from perceptd.daemon.pipeline.audio_stage import AudioStage
from perceptd.daemon.pipeline.fusion_stage import FusionStage
from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.pipeline.text_stage import TextStage
from perceptd.daemon.pipeline.vision_stage import PreprocessStage, VisionStage
from perceptd.daemon.pipeline.worker import Worker
from perceptd.daemon.publish.zmq_pub import EventPublisher
from perceptd.daemon.record.writer import Recorder, chain_taps, open_recorder
from perceptd.daemon.replay import recording_cipher
from perceptd.daemon.samples.logger import SampleLogger
from perceptd.daemon.samples.tap import SampleTap
from perceptd.daemon.shadow import CandidateHead, Shadow, load_candidate_head
from perceptd.daemon.snapshots.store import SnapshotStore
from perceptd.daemon.snapshots.store import build_store as build_snapshot_store
from perceptd.daemon.sources.base import Frame, Source, SourceState
from perceptd.daemon.sources.camera import CameraSource, uri_kind
from perceptd.daemon.sources.registry import build_sources
from perceptd.daemon.speech.stage import SpeechSetup, SpeechStage, build_speech

log = logging.getLogger(__name__)

SOURCES_SETTLE_S = 10.0  # longest READY=1 waits for sources to open or fail

# config sections a SIGHUP applies without a restart (everything else is listed as needing one)
LIVE_SECTIONS = ("bundle",)


def _queue(name: str, qc: QueueConfig, replay: bool) -> BoundedQueue[Any]:
    policy = qc.policy if qc.policy != "auto" else ("block" if replay else "drop_oldest")
    return BoundedQueue(name, qc.size, policy)


def _frame_queue(name: str, qc: QueueConfig, replay: bool, frame: Callable[[Any], Frame]
                 ) -> BoundedQueue[Any]:
    """A camera frame queue: live, the newest frame per camera (auto) and an age limit from
    capture; a replay file blocks and loses nothing (no age limit)."""
    policy = qc.policy if qc.policy != "auto" else ("block" if replay else "latest")
    age = qc.max_age_ms / 1000 if qc.max_age_ms is not None and policy != "block" else None
    return BoundedQueue(name, qc.size, policy, key=lambda it: frame(it).source_id, max_age_s=age,
                        stamp=lambda it: frame(it).t_capture_ns / 1e9)


@dataclass(frozen=True)
class Part:
    """One thing the daemon starts; `stop` gets the monotonic deadline of the whole stop."""

    name: str
    start: Callable[[], None]
    stop: Callable[[float], None]


def _left(deadline: float, reserve_s: float, floor_s: float = 0.1) -> float:
    """Time a part may take to stop, keeping `reserve_s` for the parts after it."""
    return max(floor_s, deadline - time.monotonic() - reserve_s)


class _Stage(Protocol):
    name: str
    inbox: BoundedQueue[Any]

    def start(self) -> None: ...
    def join(self, timeout: float | None = None) -> bool: ...


def _stage(stage: _Stage, reserve_s: float, after: Callable[[], None] | None = None) -> Part:
    """A stage stops when its inbox is closed and drained (its producers have stopped);
    `after` runs once it has (fusion: the shadow's open events end)."""
    def stop(deadline: float) -> None:
        stage.inbox.close()
        stage.join(_left(deadline, reserve_s))
        if after is not None:
            after()
    return Part(stage.name, stage.start, stop)


class Daemon:
    """One perceptd process worth of parts, owned and ordered explicitly."""

    # built by start() (the typed view health/metrics/ops read: health/view.py PipelineView)
    q_frames: BoundedQueue[Any]
    q_prepared: BoundedQueue[Any]
    q_audio: BoundedQueue[Any]
    q_commands: BoundedQueue[Any]
    q_fusion: BoundedQueue[Any]
    q_publish: BoundedQueue[Any]
    queues: list[BoundedQueue[Any]]
    preprocess: PreprocessStage
    vision: VisionStage
    audio: AudioStage
    text: TextStage
    speech: SpeechStage | None  # None: speech off (status says why)
    speech_setup: SpeechSetup
    samples: SampleLogger
    fusion: FusionStage
    stages: list[Worker[Any]]
    publisher: EventPublisher
    control: ControlServer
    recorder: Recorder | None = None  # `record:` / --record (docs/replay.md)
    snapshots: SnapshotStore | None = None  # `snapshots:` (docs/console.md)
    shadow: Shadow | None = None  # a candidate's fusion head beside the live one (docs/replay.md)

    def __init__(self, cfg: Config, *, ctx: zmq.Context | None = None, xpub: bool = False,
                 notify: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx or zmq.Context.instance()
        self.xpub = xpub
        self.notify = notify or (lambda _msg: None)
        self.lifecycle = Lifecycle()
        rt = cfg.runtime
        self.opts = SessionOptions(rt.device, rt.intra_op_threads, tensorrt=rt.tensorrt,
                                   trt_cache_dir=str(rt.tensorrt_cache))
        self.vision_runtime = VisionRuntime(rt.gpu_resize, rt.cuda_graph, rt.pinned_memory,
                                            cfg.vision.max_batch)
        self._source_states: dict[str, tuple[str, str]] = {}
        self._stop = threading.Event()
        self._health_due = threading.Event()  # wakes the health thread: something changed
        self._started: list[Part] = []
        self.sources: list[Source] = []
        self.started_ns = 0
        # open problems shown in health and status (a refused bundle or config)
        self.problems = ErrorBoard(on_change=self._health_due.set)
        self.bundles = BundleSwapper(lambda: self.cfg.bundle, self._load_models, self.problems,
                                     self._health_due.set,
                                     lower_priority=self.opts.intra_op_threads == 1)
        self.ops = Operations(self, console_view=lambda: DaemonAdapter(self))  # watchdog,
        # /healthz + /metrics, the web console, CURVE, the MQTT bridge
        self.config_path: Path | None = None  # the file `perceptd run -c` read (console Retrain)

    # ------------------------------------------------------------------ build

    def _build_queues(self) -> None:
        p = self.cfg.pipeline
        s = self.cfg.sources
        frames_replay = bool(s.cameras) and all(uri_kind(c.uri) == "file" for c in s.cameras)
        audio_replay = s.microphone is None and bool(s.audio_files)
        self.q_frames = _frame_queue("frames", p.frames, frames_replay, lambda f: f)
        self.q_prepared = _frame_queue("prepared", p.prepared, frames_replay, lambda p: p.frame)
        self.q_audio = _queue("audio", p.audio, audio_replay)
        self.q_commands = _queue("commands", p.commands, False)
        self.q_fusion = _queue("fusion", p.fusion, True)
        self.q_publish = _queue("publish", p.publish, True)
        self.queues = [self.q_frames, self.q_prepared, self.q_audio, self.q_commands,
                       self.q_fusion, self.q_publish]

    def _build_stages(self) -> None:
        cur = self.current_models
        prompts = [list(e.prompts) for e in self.cfg.events]
        self.preprocess = PreprocessStage(self.q_frames, self.q_prepared, cur, self.cfg.vision)
        self.vision = VisionStage(self.q_prepared, self.q_fusion, self.q_publish, cur, self.cfg.vision)
        self.speech_setup = build_speech(self.cfg.speech, self.cfg.events, self.q_commands,
                                         self.q_publish, cur)
        self.speech = self.speech_setup.stage
        self.audio = AudioStage(self.q_audio, self.q_fusion, self.q_publish, cur, self.cfg.audio,
                                on_segment=self.speech.offer if self.speech else None,
                                speculate_ms=self.cfg.speech.early_ms if self.speech else 0)
        self.text = TextStage(self.q_commands, self.q_fusion, cur, prompts)
        self.samples = SampleLogger(self.cfg.samples, self.cfg.events, cur)
        logging_on = self.samples.start()  # its writer runs from here (the wiring depends on it)
        raw = self.cfg.samples.raw_media
        self.vision.keep_frames = logging_on and raw.frames
        self.audio.keep_pcm = logging_on and raw.audio
        self.shadow = Shadow(lambda: self.cfg.bundle, cur, self._load_candidate_head, self.cfg.events,
                             self.q_publish, self.cfg.shadow, live_active=self._live_active)
        self.fusion = FusionStage(self.q_fusion, self.q_publish, cur, self.cfg.events,
                                  self.cfg.fusion.tick_ms,
                                  # fusion -> sample tap -> publish queue (one way)
                                  sink=SampleTap(self.samples, PublishSink(self.q_publish))
                                  if logging_on else None,
                                  on_evaluate=self.samples.on_evaluate if logging_on else None,
                                  on_journal=self.recorder.on_journal if self.recorder else None,
                                  on_fused=self.shadow.on_fused)
        self.stages = [self.preprocess, self.vision, self.audio, self.text]
        if self.speech is not None:
            self.stages.insert(3, self.speech)
            self.queues.append(self.speech.inbox)

    def _build_sources(self) -> None:
        self.sources = build_sources(self.cfg.sources, {"frames": self.q_frames, "audio": self.q_audio},
                                     self._on_source_state)
        if self.recorder is not None:  # every item as captured, before the queue
            for src in self.sources:
                src.tap = self.recorder.tap

    def _camera_frames(self) -> dict[str, Any]:
        """Each camera's newest frame (a reference; cameras replace it, never change it)."""
        return {s.source_id: s.last_image for s in self.sources
                if isinstance(s, CameraSource) and s.last_image is not None}

    def _build_sockets(self) -> None:
        enc = self.cfg.samples.encryption
        self.snapshots = build_snapshot_store(self.cfg.snapshots, enc.enabled, enc.key_file,
                                              self._camera_frames)
        self.publisher = EventPublisher(self.ctx, self.cfg.publish, self.q_publish,
                                        model_version=lambda: self.current_models().version,
                                        tap=chain_taps(self.ops.on_published, self.recorder
                                                       and self.recorder.on_published),
                                        annotate=self.snapshots.annotate if self.snapshots else None,
                                        secure=self.ops.secure,
                                        xpub=self.xpub)
        handlers = ControlHandlers(commands=self.text, labels=self.samples, reloader=self.bundles,
                                   status=self.status, shadow=self.shadow)
        self.control = ControlServer(self.ctx, self.cfg.control, handlers.register(HandlerRegistry()),
                                     secure=self.ops.secure)

    def _parts(self) -> list[Part]:
        """What start() starts, in order: consumers before producers."""
        speech = self.speech
        rec = self.recorder  # first started, last stopped: it sees every input and message
        parts: list[Part] = [] if rec is None else [Part("recorder", rec.start, lambda _d: rec.close(
            {"audio_dropped": sum(self.q_audio.stats().dropped_total.values()),
             "frames_dropped": sum(self.q_frames.stats().dropped_total.values())}))]
        snaps = self.snapshots  # before the publisher asks it, flushed after the publisher stops
        if snaps is not None:
            parts.append(Part("snapshots", snaps.start, lambda d: snaps.close(_left(d, 0.0, 0.2))))
        parts += [
            Part("consumers", self.ops.start_consumers, lambda _d: self.ops.stop()),
            Part("publisher", self.publisher.start, self._stop_publishing),
            Part("samples", lambda: None,  # started while building (see _build_stages)
                 lambda d: self.samples.close(timeout_s=max(0.2, min(2.0, _left(d, 0.5, 0.0))))),
            _stage(self.fusion, 0.5, after=self.shadow.close if self.shadow else None),
            _stage(self.text, 1.0),
        ]
        if speech is not None:  # audio's last segment -> transcript -> command, then it stops
            parts.append(_stage(speech, 1.5))
        parts += [
            _stage(self.audio, 2.0 if speech is not None else 1.0),
            _stage(self.vision, 1.0),
            _stage(self.preprocess, 1.0),
            *(Part(src.source_id, src.start, _source_stop(src)) for src in self.sources),
            Part("control", self.control.start, lambda _d: self.control.stop(timeout_s=1.0)),
            Part("health", self._start_health_loop, lambda _d: self._stop_health_loop()),
        ]
        return parts

    # ------------------------------------------------------------------ lifecycle

    def current_models(self) -> ModelSet:
        return self.bundles.current()

    def _load_models(self, bundle: Bundle) -> ModelSet:
        return load_models(bundle, self.cfg.events, self.opts, self.cfg.vision.faces,
                           self.vision_runtime)

    def _load_candidate_head(self, bundle: Bundle, serving: ModelSet) -> CandidateHead:
        return load_candidate_head(bundle, serving, self.cfg.events, self.opts)

    def _live_active(self) -> list[str]:
        """The live events open now (the shadow reads it on the fusion thread)."""
        return [name for name, dec in self.fusion.decoders.items() if dec.active]

    def load(self) -> None:
        """Verify and load the configured bundle (the slow part of a start; see BundleSwapper)."""
        self.bundles.load()

    def start(self) -> None:
        self.lifecycle.to(State.STARTING)
        self.started_ns = time.monotonic_ns()
        self._start(Part("http", self.ops.start_http, lambda _d: None))  # 503 "starting" till READY
        if self.bundles.ref is None:
            self.load()
        self._start(Part("security", self.ops.start_security, lambda _d: None))  # before any bind
        self.recorder = open_recorder(self.cfg.record, self.cfg.model_dump(mode="json"),
                                      self.current_models().version,
                                      cipher=recording_cipher(self.cfg, create=True))
        self._build_queues()
        self._build_stages()
        self._build_sockets()
        self._build_sources()
        for part in self._parts():
            self._start(part)
        self.lifecycle.to(State.RUNNING)
        self._update_degraded()  # a source that failed while STARTING reported no transition since
        self._publish_health()
        log.info("event=started model_version=%s sources=%d events=%d events_endpoint=%s "
                 "control_endpoint=%s", self.current_models().version, len(self.sources),
                 len(self.cfg.events), self.publisher.endpoint, self.control.endpoint)
        self._await_sources(SOURCES_SETTLE_S)
        self._start(Part("watchdog", self.ops.start, lambda _d: self.ops.stop_watchdog()))
        self.notify(f"READY=1\nSTATUS={self.ops.status_line()}")

    def _start(self, part: Part) -> None:
        part.start()
        self._started.append(part)

    def _await_sources(self, timeout_s: float) -> None:
        """READY=1 means every source is open or declared degraded: wait (bounded) for each
        one's first verdict (a state change, a failed open, or its thread ending)."""
        deadline = time.monotonic() + timeout_s

        def settled(src: Source) -> bool:
            st = src.stats
            return (src.source_id in self._source_states or st.open_failures > 0
                    or bool(st.last_error) or not src.running)

        while time.monotonic() < deadline and not all(settled(s) for s in self.sources):
            time.sleep(0.05)
        for src in self.sources:
            if not settled(src):
                log.warning("event=source_not_settled source=%s waited_s=%.1f", src.source_id, timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop what started, in reverse: sources first, then each stage drains its queue,
        open events end, samples and the last health message are flushed, sockets close."""
        if self.lifecycle.state in (State.STOPPING, State.STOPPED):
            return
        deadline = time.monotonic() + timeout_s
        self.lifecycle.to(State.STOPPING)
        self.notify("STOPPING=1")
        while self._started:
            self._started.pop().stop(deadline)
        log.info("event=stopped")

    def _stop_publishing(self, deadline: float) -> None:
        """The publisher stops last: the final `health` (stopped) is its last message."""
        self.lifecycle.to(State.STOPPED)
        self._publish_health()
        self.q_publish.close()
        self.publisher.stop(timeout_s=max(0.2, deadline - time.monotonic()))

    def wait(self, timeout: float | None = None) -> bool:
        return self._stop.wait(timeout)

    def request_stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ reloads (SIGHUP, control)

    def reload_bundle(self) -> dict[str, Any]:
        """Swap to the configured bundle if it changed (verified now, loaded in the background);
        a bundle that does not verify raises `inference.swap.ReloadRefused`."""
        return self.bundles.reload()

    def reconfigure(self, new: Config) -> dict[str, list[str]]:
        """Adopt a re-read config: sections that can change live are applied (the bundle selection;
        `reload_bundle` then swaps the bundle); the rest need a restart and are listed."""
        changed = [name for name in type(new).model_fields
                   if getattr(new, name) != getattr(self.cfg, name)]
        applied = [n for n in changed if n in LIVE_SECTIONS]
        self.cfg = self.cfg.model_copy(update={n: getattr(new, n) for n in applied})
        return {"applied": applied, "restart_needed": [n for n in changed if n not in applied]}

    # ------------------------------------------------------------------ health

    def report_error(self, message: str, key: str = "other") -> None:
        """Keep a refusal (bad config, bad bundle) for health and status, stamped with its UTC
        time, and publish it now; `clear_error(key)` drops it once the condition is gone."""
        self.problems.report(message, key)

    def clear_error(self, key: str) -> None:
        self.problems.clear(key)

    @property
    def errors(self) -> list[str]:
        return self.problems.messages()

    def watchdog_interval_s(self) -> float | None:
        return self.notify.watchdog_interval_s() if isinstance(self.notify, Notifier) else None

    def _on_source_state(self, source_id: str, state: SourceState, detail: str) -> None:
        """A source's thread reports a transition: recorded here, published by the health
        thread (a capture thread never waits on the publish queue)."""
        self._source_states[source_id] = (str(state), detail)
        log.info("event=source_state source=%s state=%s detail=%s", source_id, state, detail)
        self._health_due.set()

    def _update_degraded(self) -> None:
        bad = any(s != SourceState.UP for s, _ in self._source_states.values())
        if self.lifecycle.state is State.RUNNING and bad:
            self.lifecycle.to(State.DEGRADED)
        elif self.lifecycle.state is State.DEGRADED and not bad:
            self.lifecycle.to(State.RUNNING)

    def _publish_health(self) -> None:
        out = Outbound(status_report.health_message(self), time.monotonic_ns())
        if self.q_publish.closed:
            self.publisher.publish_now(out)
        else:
            self.q_publish.put(out, timeout=0.5)

    def _start_health_loop(self) -> None:
        threading.Thread(target=self._health_loop, name="health", daemon=True).start()

    def _stop_health_loop(self) -> None:
        self._stop.set()
        self._health_due.set()

    def _health_loop(self) -> None:
        """Every `health.interval_s`, and at once when something changed (a source's state, an
        error reported or cleared, a swap): lifecycle degraded/running, then `health`."""
        interval = self.cfg.health.interval_s
        next_tick = time.monotonic() + interval
        while True:
            self._health_due.wait(max(0.0, next_tick - time.monotonic()))
            if self._stop.is_set():
                return
            if self._health_due.is_set():
                self._health_due.clear()
                self._update_degraded()
                self._publish_health()
            if time.monotonic() >= next_tick:
                next_tick += interval
                if next_tick <= time.monotonic():  # behind (a stalled host): no burst
                    next_tick = time.monotonic() + interval
                self._publish_health()
                self.notify(f"STATUS={self.ops.status_line()}")

    def summary(self) -> str:
        return status_report.summary(self)

    def status(self) -> dict[str, Any]:
        shadow = self.shadow.report() if self.shadow is not None else None
        return {**status_report.status(self, self.ops), "shadow": shadow}


def _source_stop(src: Source) -> Callable[[float], None]:
    def stop(deadline: float) -> None:
        src.stop(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
    return stop
