"""The composition root: build queues, stages, sources and sockets; start in order, stop in
reverse, draining every queue so no event is lost and every open event gets its end.

Data flows one way: sources -> queues -> preprocess -> vision | audio | text -> fusion ->
publish.  Nothing here is global: a test can run two daemons in one process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from perceptd.daemon.bundle import BundleError, resolve_bundle, verify_bundle
from perceptd.daemon.config import Config
from perceptd.daemon.config.root import QueueConfig
from perceptd.daemon.control.server import ControlServer, HandlerRegistry, RequestRejected
from perceptd.daemon.health.lifecycle import Lifecycle, State
from perceptd.daemon.inference.models import ModelRef, ModelSet, load_models
from perceptd.daemon.inference.session import SessionOptions
from perceptd.daemon.messages import HealthMessage, Outbound, QueueHealth, SourceHealth
from perceptd.daemon.pipeline.audio_stage import AudioStage
from perceptd.daemon.pipeline.fusion_stage import FusionStage
from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.pipeline.text_stage import TextCommand, TextStage
from perceptd.daemon.pipeline.vision_stage import PreprocessStage, VisionStage
from perceptd.daemon.publish.zmq_pub import EventPublisher
from perceptd.daemon.sources.base import Source, SourceState
from perceptd.daemon.sources.camera import CameraSource, uri_kind
from perceptd.daemon.sources.microphone import MicrophoneSource
from perceptd.daemon.sources.wavfile import WavFileSource

log = logging.getLogger(__name__)


def _queue(name: str, qc: QueueConfig, replay: bool) -> BoundedQueue:
    policy = qc.policy if qc.policy != "auto" else ("block" if replay else "drop_oldest")
    return BoundedQueue(name, qc.size, policy)


def _queue_status(q: BoundedQueue) -> dict[str, Any]:
    st = q.stats()
    return {"depth": st.depth, "maxsize": st.maxsize, "policy": st.policy,
            "dropped": sum(st.dropped_total.values()), "dropped_by_reason": dict(st.dropped_total),
            "put": st.put_total}


class Daemon:
    """One perceptd process worth of workers, owned and ordered explicitly."""

    def __init__(self, cfg: Config, *, ctx: zmq.Context | None = None, xpub: bool = False,
                 notify: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx or zmq.Context.instance()
        self.xpub = xpub
        self.notify = notify or (lambda _msg: None)
        self.lifecycle = Lifecycle()
        self.opts = SessionOptions(cfg.runtime.device, cfg.runtime.intra_op_threads)
        self._source_states: dict[str, tuple[str, str]] = {}
        self._stop = threading.Event()
        self._swap_lock = threading.Lock()
        self.models: ModelRef | None = None
        self.sources: list[Source] = []
        self.swaps = 0

    # ------------------------------------------------------------------ build

    def _build_queues(self) -> None:
        p = self.cfg.pipeline
        s = self.cfg.sources
        frames_replay = bool(s.cameras) and all(uri_kind(c.uri) == "file" for c in s.cameras)
        audio_replay = s.microphone is None and bool(s.audio_files)
        self.q_frames = _queue("frames", p.frames, frames_replay)
        self.q_prepared = _queue("prepared", p.prepared, frames_replay)
        self.q_audio = _queue("audio", p.audio, audio_replay)
        self.q_commands = _queue("commands", p.commands, False)
        self.q_fusion = _queue("fusion", p.fusion, True)
        self.q_publish = _queue("publish", p.publish, True)
        self.queues = [self.q_frames, self.q_prepared, self.q_audio, self.q_commands,
                       self.q_fusion, self.q_publish]

    def _build_sources(self) -> None:
        s = self.cfg.sources
        cb = self._on_source_state
        self.sources = [CameraSource(c, self.q_frames, cb) for c in s.cameras]
        if s.microphone is not None:
            self.sources.append(MicrophoneSource(s.microphone, self.q_audio, cb))
        self.sources += [WavFileSource(f, self.q_audio, cb) for f in s.audio_files]

    def _build_stages(self) -> None:
        cur = self.current_models
        prompts = [list(e.prompts) for e in self.cfg.events]
        self.preprocess = PreprocessStage(self.q_frames, self.q_prepared, cur, self.cfg.vision)
        self.vision = VisionStage(self.q_prepared, self.q_fusion, self.q_publish, cur, self.cfg.vision)
        self.audio = AudioStage(self.q_audio, self.q_fusion, self.q_publish, cur, self.cfg.audio)
        self.text = TextStage(self.q_commands, self.q_fusion, cur, prompts)
        self.fusion = FusionStage(self.q_fusion, self.q_publish, cur, self.cfg.events,
                                  self.cfg.fusion.tick_ms)
        self.stages = [self.preprocess, self.vision, self.audio, self.text]

    def _build_sockets(self) -> None:
        self.publisher = EventPublisher(self.ctx, self.cfg.publish, self.q_publish,
                                        model_version=lambda: self.current_models().version,
                                        xpub=self.xpub)
        reg = HandlerRegistry()
        reg.register("command", self._handle_command)
        reg.register("status", lambda _req: {"ok": True, **self.status()})
        reg.register("reload", self._handle_reload)
        reg.register("label", self._handle_label)
        self.control = ControlServer(self.ctx, self.cfg.control, reg)

    # ------------------------------------------------------------------ lifecycle

    def current_models(self) -> ModelSet:
        assert self.models is not None
        return self.models.current()

    def load(self) -> None:
        """Verify and load the configured bundle (the slow part of a start)."""
        b = self.cfg.bundle
        bundle = verify_bundle(resolve_bundle(b.dir, b.version))
        self.models = ModelRef(load_models(bundle, self.cfg.events, self.opts, self.cfg.vision.faces))

    def start(self) -> None:
        self.lifecycle.to(State.STARTING)
        if self.models is None:
            self.load()
        self._build_queues()
        self._build_stages()
        self._build_sockets()
        self.publisher.start()
        self.fusion.start()
        for st in self.stages:
            st.start()
        self._build_sources()
        for src in self.sources:
            src.start()
        self.control.start()
        self._health = threading.Thread(target=self._health_loop, name="health", daemon=True)
        self._health.start()
        self.lifecycle.to(State.RUNNING)
        self._publish_health()
        log.info("event=started model_version=%s sources=%d events=%d events_endpoint=%s "
                 "control_endpoint=%s", self.current_models().version, len(self.sources),
                 len(self.cfg.events), self.publisher.endpoint, self.control.endpoint)
        self.notify("READY=1")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sources, drain every queue stage by stage, end open events, flush, close."""
        if self.lifecycle.state in (State.STOPPING, State.STOPPED):
            return
        deadline = time.monotonic() + timeout_s
        self.lifecycle.to(State.STOPPING)
        self.notify("STOPPING=1")
        self._stop.set()
        self.control.stop(timeout_s=1.0)
        for src in self.sources:
            src.stop(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        for q in (self.q_frames, self.q_audio, self.q_commands):
            q.close()
        for st in self.stages:
            st.join(max(0.1, deadline - time.monotonic() - 1.0))
        self.q_prepared.close()
        self.vision.join(max(0.1, deadline - time.monotonic() - 1.0))
        self.q_fusion.close()
        self.fusion.join(max(0.1, deadline - time.monotonic() - 0.5))
        self.lifecycle.to(State.STOPPED)
        self._publish_health()
        self.q_publish.close()
        self.publisher.stop(timeout_s=max(0.2, deadline - time.monotonic()))
        log.info("event=stopped")

    def wait(self, timeout: float | None = None) -> bool:
        return self._stop.wait(timeout)

    def request_stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ health

    def _on_source_state(self, source_id: str, state: SourceState, detail: str) -> None:
        self._source_states[source_id] = (str(state), detail)
        log.info("event=source_state source=%s state=%s detail=%s", source_id, state, detail)
        self._update_degraded()
        if self.lifecycle.state not in (State.STOPPING, State.STOPPED):
            self._publish_health()

    def _update_degraded(self) -> None:
        bad = any(s != SourceState.UP for s, _ in self._source_states.values())
        if self.lifecycle.state is State.RUNNING and bad:
            self.lifecycle.to(State.DEGRADED)
        elif self.lifecycle.state is State.DEGRADED and not bad:
            self.lifecycle.to(State.RUNNING)

    def _health_message(self) -> HealthMessage:
        sources = {}
        for src in self.sources:
            st = src.stats
            sources[src.source_id] = SourceHealth(str(st.state), st.last_error or None, st.reconnects)
        queues = {q.name: QueueHealth(q.depth, sum(q.stats().dropped_total.values())) for q in self.queues}
        return HealthMessage(state=str(self.lifecycle.state), sources=sources, queues=queues,
                             uptime_s=self.lifecycle.uptime_s())

    def _publish_health(self) -> None:
        out = Outbound(self._health_message(), time.monotonic_ns())
        if self.q_publish.closed:
            self.publisher.publish_now(out)
        else:
            self.q_publish.put(out, timeout=0.5)

    def _health_loop(self) -> None:
        while not self._stop.wait(self.cfg.health.interval_s):
            self._publish_health()
            self.notify(f"STATUS={self.summary()}")

    def summary(self) -> str:
        fps = self.vision.items / max(1e-9, self.lifecycle.uptime_s())
        return (f"{self.lifecycle.state}; model {self.current_models().version}; "
                f"{len(self.sources)} sources; vision {fps:.1f} fps")

    def status(self) -> dict[str, Any]:
        m = self.current_models()
        pub = self.publisher.stats()
        return {
            "state": str(self.lifecycle.state),
            "uptime_s": round(self.lifecycle.uptime_s(), 3),
            "run_id": self.publisher.run_id,
            "model_version": m.version,
            "providers": m.providers(),
            "events_endpoint": self.publisher.endpoint,
            "control_endpoint": self.control.endpoint,
            "sources": {s.source_id: {"state": str(s.stats.state), "reconnects": s.stats.reconnects,
                                      "captured": s.stats.captured, "last_error": s.stats.last_error}
                        for s in self.sources},
            "queues": {q.name: _queue_status(q) for q in self.queues},
            "stages": {st.name: st.stats() for st in [*self.stages]},
            "fusion": vars(self.fusion.stats).copy(),
            "published": pub.published,
            "next_seq": pub.next_seq,
            "swaps": self.swaps,
        }

    # ------------------------------------------------------------------ control handlers

    def _handle_command(self, req: Any) -> dict[str, Any]:
        t = time.monotonic_ns()
        self.q_commands.put(TextCommand(req.text, "control", t), timeout=0)
        return {"ok": True, "queued": True, "t_capture_ns": t}

    def _handle_label(self, req: Any) -> dict[str, Any]:
        raise RequestRejected("sample logging is not enabled in this build")

    def _handle_reload(self, req: Any) -> dict[str, Any]:
        """Verify now (a bad bundle is refused in the reply); load and swap in the background."""
        b = self.cfg.bundle
        try:
            bundle = verify_bundle(resolve_bundle(b.dir, b.version))
        except BundleError as exc:
            self._publish_health()
            raise RequestRejected(f"bundle refused: {exc}") from None
        if bundle.version == self.current_models().version:
            return {"ok": True, "model_version": bundle.version, "swapped": False}
        threading.Thread(target=self._swap, args=(bundle,), name="swap", daemon=True).start()
        return {"ok": True, "model_version": bundle.version, "swapping": True}

    def _swap(self, bundle) -> None:
        with self._swap_lock:
            try:
                new = load_models(bundle, self.cfg.events, self.opts, self.cfg.vision.faces)
            except Exception as exc:  # noqa: BLE001 - the old models keep serving
                log.error("event=swap_refused version=%s error=%s", bundle.version, exc)
                return
            old = self.models.swap(new)
            self.swaps += 1
            log.info("event=swapped from=%s to=%s", old.version, new.version)
            self._publish_health()
