"""The composition root: build queues, stages, sources and sockets; start in order, stop in
reverse, draining every queue so no event is lost and every open event gets its end.

Data flows one way: sources -> queues -> preprocess -> vision | audio | text -> fusion ->
publish.  Nothing here is global: a test can run two daemons in one process.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zmq

from perceptd.daemon.bundle import BundleError, resolve_bundle, verify_bundle
from perceptd.daemon.config import Config
from perceptd.daemon.config.root import QueueConfig
from perceptd.daemon.control.server import ControlServer, HandlerRegistry, RequestRejected
from perceptd.daemon.health.lifecycle import Lifecycle, State
from perceptd.daemon.inference.models import ModelRef, ModelSet, load_models
from perceptd.daemon.inference.session import SessionOptions
from perceptd.daemon.inference.vision import VisionRuntime
from perceptd.daemon.messages import HealthMessage, Outbound, QueueHealth, SourceHealth
from perceptd.daemon.ops import Operations
from perceptd.daemon.pipeline.audio_stage import AudioStage
from perceptd.daemon.pipeline.fusion_stage import FusionStage
from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.pipeline.text_stage import TextCommand, TextStage
from perceptd.daemon.pipeline.vision_stage import PreprocessStage, VisionStage
from perceptd.daemon.publish.zmq_pub import EventPublisher
from perceptd.daemon.samples.logger import LabelError, SampleLogger
from perceptd.daemon.sources.base import Source, SourceState
from perceptd.daemon.sources.camera import CameraSource, uri_kind
from perceptd.daemon.sources.microphone import MicrophoneSource
from perceptd.daemon.sources.wavfile import WavFileSource
from perceptd.daemon.speech.stage import build_speech

log = logging.getLogger(__name__)

SOURCES_SETTLE_S = 10.0  # longest READY=1 waits for sources to open or fail

# config sections a SIGHUP applies without a restart (everything else is listed as needing one)
LIVE_SECTIONS = ("bundle",)


def _queue(name: str, qc: QueueConfig, replay: bool) -> BoundedQueue:
    policy = qc.policy if qc.policy != "auto" else ("block" if replay else "drop_oldest")
    return BoundedQueue(name, qc.size, policy)


def release_memory() -> None:
    """After a swap, hand the heap the old ModelSet used back to the OS (glibc keeps freed
    arenas otherwise), so memory returns to one bundle instead of creeping up.  The ModelSet
    itself has no reference cycles: it is freed when the last batch using it ends, without a
    gc.collect() that would hold the interpreter (and every stage) for tens of ms."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # ctypes releases the GIL: stages keep running
    except (OSError, AttributeError):  # not glibc
        pass


def _lower_thread_priority(nice: int = 10) -> None:
    """Linux: nice this thread only (its native id), so a background load cannot starve stages."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (OSError, AttributeError):
        pass


def _queue_status(q: BoundedQueue) -> dict[str, Any]:
    st = q.stats()
    return {"depth": st.depth, "maxsize": st.maxsize, "policy": st.policy,
            "dropped": sum(st.dropped_total.values()), "dropped_by_reason": dict(st.dropped_total),
            "put": st.put_total}


def _source_status(src: Source) -> dict[str, Any]:
    st = src.stats
    waiting = (None if st.first_capture_ns or not st.started_ns
               else round((time.monotonic_ns() - st.started_ns) / 1e9, 3))
    return {"kind": src.kind, "state": str(st.state), "reconnects": st.reconnects,
            "captured": st.captured, "last_error": st.last_error or None,
            "last_error_at": st.last_error_at or None, "overflows": st.overflows,
            "first_capture_after_s": st.first_capture_after_s, "waiting_first_s": waiting}


class Daemon:
    """One perceptd process worth of workers, owned and ordered explicitly."""

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
        self._swap_lock = threading.Lock()
        self.models: ModelRef | None = None
        self.sources: list[Source] = []
        self.swaps = 0
        self.last_swap: dict[str, Any] | None = None
        self.started_ns = 0
        self.ops = Operations(self)  # watchdog, /healthz + /metrics, CURVE, MQTT bridge
        # open problems shown in health and status, keyed by condition: each carries the time it
        # was (last) reported and goes when its condition clears (a good swap, a good config)
        self._errors: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.swap_state: dict[str, Any] | None = None  # the last reload: loading|swapped|refused
        self.config_path: Path | None = None  # the file `perceptd run -c` read (console Retrain)

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
        self.speech_setup = build_speech(self.cfg.speech, self.cfg.events, self.q_commands,
                                         self.q_publish, cur)
        self.speech = self.speech_setup.stage  # None: speech off (status says why)
        self.audio = AudioStage(self.q_audio, self.q_fusion, self.q_publish, cur, self.cfg.audio,
                                on_segment=self.speech.offer if self.speech else None)
        self.text = TextStage(self.q_commands, self.q_fusion, cur, prompts)
        self.samples = SampleLogger(self.cfg.samples, self.cfg.events, cur)
        logging_on = self.samples.start()
        raw = self.cfg.samples.raw_media
        self.vision.keep_frames = logging_on and raw.frames
        self.audio.keep_pcm = logging_on and raw.audio
        self.fusion = FusionStage(self.q_fusion, self.q_publish, cur, self.cfg.events,
                                  self.cfg.fusion.tick_ms,
                                  on_event=self.samples.on_event if logging_on else None,
                                  on_evaluate=self.samples.on_evaluate if logging_on else None)
        self.stages = [self.preprocess, self.vision, self.audio, self.text]
        if self.speech is not None:
            self.stages.insert(3, self.speech)
            self.queues.append(self.speech.inbox)

    def _build_sockets(self) -> None:
        self.publisher = EventPublisher(self.ctx, self.cfg.publish, self.q_publish,
                                        model_version=lambda: self.current_models().version,
                                        tap=self.ops.on_published, secure=self.ops.secure,
                                        xpub=self.xpub)
        reg = HandlerRegistry()
        reg.register("command", self._handle_command)
        reg.register("status", lambda _req: {"ok": True, **self.status()})
        reg.register("reload", self._handle_reload)
        reg.register("label", self._handle_label)
        self.control = ControlServer(self.ctx, self.cfg.control, reg, secure=self.ops.secure)

    # ------------------------------------------------------------------ lifecycle

    def current_models(self) -> ModelSet:
        assert self.models is not None
        return self.models.current()

    def _load_bundle(self, path) -> ModelSet:
        return load_models(verify_bundle(path), self.cfg.events, self.opts, self.cfg.vision.faces,
                           self.vision_runtime)

    def load(self) -> None:
        """Verify and load the configured bundle (the slow part of a start).

        A `current` that does not verify or load (a rollback or promotion to a bundle that never
        served) falls back to `previous`, with an ERROR log and a health error that stays until
        a good bundle is swapped in, instead of a start that fails (a restart loop under
        `Restart=on-failure`).  A pinned version, or no usable `previous`, still fails the start."""
        b = self.cfg.bundle
        path = resolve_bundle(b.dir, b.version)
        try:
            self.models = ModelRef(self._load_bundle(path))
            return
        except Exception as exc:
            prev = b.dir / "previous"
            if b.version != "current" or not prev.exists() or prev.resolve() == path:
                raise
            error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.error("event=bundle_fallback current=%s previous=%s error=%r detail='current does not "
                  "load; serving previous'", path, prev.resolve(), error)
        self.models = ModelRef(self._load_bundle(resolve_bundle(b.dir, "previous")))
        self.report_error(f"bundle {path.name} (current) refused at start: {error}; serving "
                          f"previous {self.current_models().version}", key="bundle")

    def start(self) -> None:
        self.lifecycle.to(State.STARTING)
        self.started_ns = time.monotonic_ns()
        self.ops.start_http()  # /healthz answers 503 "starting" while the bundle loads
        if self.models is None:
            self.load()
        self.ops.start_security()  # the ZAP handler must run before secured sockets bind
        self._build_queues()
        self._build_stages()
        self._build_sockets()
        self.ops.start_consumers()  # MQTT: attached before the first message is published
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
        self._update_degraded()  # a source that failed while STARTING reported no transition since
        self._publish_health()
        log.info("event=started model_version=%s sources=%d events=%d events_endpoint=%s "
                 "control_endpoint=%s", self.current_models().version, len(self.sources),
                 len(self.cfg.events), self.publisher.endpoint, self.control.endpoint)
        self._await_sources(SOURCES_SETTLE_S)
        self.ops.start()
        self.notify(f"READY=1\nSTATUS={self.ops.status_line()}")

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
        """Stop sources, drain every queue stage by stage, end open events, flush, close."""
        if self.lifecycle.state in (State.STOPPING, State.STOPPED):
            return
        deadline = time.monotonic() + timeout_s
        self.lifecycle.to(State.STOPPING)
        self.notify("STOPPING=1")
        self.ops.stop_watchdog()
        self._stop.set()
        self.control.stop(timeout_s=1.0)
        for src in self.sources:
            src.stop(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        for q in (self.q_frames, self.q_audio):
            q.close()
        if self.speech is not None:  # audio's last segment -> transcript -> command, then close
            self.audio.join(max(0.1, deadline - time.monotonic() - 2.0))
            self.speech.inbox.close()
            self.speech.join(max(0.1, deadline - time.monotonic() - 1.5))
        self.q_commands.close()
        for st in self.stages:
            st.join(max(0.1, deadline - time.monotonic() - 1.0))
        self.q_prepared.close()
        self.vision.join(max(0.1, deadline - time.monotonic() - 1.0))
        self.q_fusion.close()
        self.fusion.join(max(0.1, deadline - time.monotonic() - 0.5))
        self.samples.close(timeout_s=max(0.2, min(2.0, deadline - time.monotonic() - 0.5)))
        self.lifecycle.to(State.STOPPED)
        self._publish_health()
        self.q_publish.close()
        self.publisher.stop(timeout_s=max(0.2, deadline - time.monotonic()))
        self.ops.stop()
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
                             uptime_s=self.lifecycle.uptime_s(), errors=tuple(self.errors))

    def report_error(self, message: str, key: str = "other") -> None:
        """Keep a refusal (bad config, bad bundle) for health and status, stamped with its UTC
        time, and publish it now; `clear_error(key)` drops it once the condition is gone."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._errors.pop(key, None)
        self._errors[key] = f"{stamp} {message}"[:1000]
        while len(self._errors) > 8:
            self._errors.popitem(last=False)
        self._health_changed()

    def clear_error(self, key: str) -> None:
        if self._errors.pop(key, None) is not None:
            log.info("event=error_cleared key=%s", key)
            self._health_changed()

    @property
    def errors(self) -> list[str]:
        return list(self._errors.values())

    def _health_changed(self) -> None:
        if (self.lifecycle.state not in (State.STOPPING, State.STOPPED)
                and hasattr(self, "publisher")):  # not before the sockets exist (start-up)
            self._publish_health()

    def reconfigure(self, new: Config) -> dict[str, list[str]]:
        """Adopt a re-read config: sections that can change live are applied (the bundle selection;
        `reload` then swaps the bundle); the rest need a restart and are listed."""
        changed = [name for name in type(new).model_fields
                   if getattr(new, name) != getattr(self.cfg, name)]
        applied = [n for n in changed if n in LIVE_SECTIONS]
        self.cfg = self.cfg.model_copy(update={n: getattr(new, n) for n in applied})
        return {"applied": applied, "restart_needed": [n for n in changed if n not in applied]}

    def _publish_health(self) -> None:
        out = Outbound(self._health_message(), time.monotonic_ns())
        if self.q_publish.closed:
            self.publisher.publish_now(out)
        else:
            self.q_publish.put(out, timeout=0.5)

    def _health_loop(self) -> None:
        while not self._stop.wait(self.cfg.health.interval_s):
            self._publish_health()
            self.notify(f"STATUS={self.ops.status_line()}")

    def summary(self) -> str:
        fps = self.vision.items / max(1e-9, self.lifecycle.uptime_s())
        return (f"{self.lifecycle.state}; model {self.current_models().version}; "
                f"{len(self.sources)} sources; vision {fps:.1f} fps"
                f"{'' if self.speech is not None else '; speech off'}")

    def status(self) -> dict[str, Any]:
        m = self.current_models()
        pub = self.publisher.stats()
        return {
            "state": str(self.lifecycle.state),
            "uptime_s": round(self.lifecycle.uptime_s(), 3),
            "run_id": self.publisher.run_id,
            "model_version": m.version,
            "providers": m.providers(),
            "vision_path": m.vision.path(),
            "events_endpoint": self.publisher.endpoint,
            "control_endpoint": self.control.endpoint,
            "sources": {s.source_id: _source_status(s) for s in self.sources},
            "queues": {q.name: _queue_status(q) for q in self.queues},
            "stages": {st.name: st.stats() for st in [*self.stages]},
            "fusion": vars(self.fusion.stats).copy(),
            "published": pub.published,
            "next_seq": pub.next_seq,
            "swaps": self.swaps,
            "speech": self.speech_setup.status(),
            "last_swap": self.last_swap,
            "swap": self.swap_state,
            "errors": self.errors,
            "samples": self.samples.stats(),
            "summary": self.summary(),
            "health": self.ops.health().to_dict(),
            **self.ops.endpoints(),
        }

    # ------------------------------------------------------------------ control handlers

    def _handle_command(self, req: Any) -> dict[str, Any]:
        t = time.monotonic_ns()
        self.q_commands.put(TextCommand(req.text, "control", t), timeout=0)
        return {"ok": True, "queued": True, "t_capture_ns": t}

    def _handle_label(self, req: Any) -> dict[str, Any]:
        """Label a logged sample, or (sample "now") log the current context with the label."""
        if not self.samples.known_label(req.event):
            raise RequestRejected(f"unknown event {req.event!r} (not in the configuration)")
        try:
            if req.sample == "now":
                sid = self.samples.capture(req.event)
            else:
                sid = req.sample
                self.samples.label(sid, req.event)
        except LabelError as exc:
            raise RequestRejected(str(exc)) from None
        return {"ok": True, "sample": sid, "event": req.event}

    def _handle_reload(self, req: Any) -> dict[str, Any]:
        """Verify now (a bad bundle is refused in the reply); load and swap in the background.

        Hashing a bundle takes ~0.2 s of this (control) thread: the common no-change reload and
        reloads during a swap answer without it, so a client spamming `reload` cannot stall it."""
        b = self.cfg.bundle
        serving = self.current_models()
        try:
            path = resolve_bundle(b.dir, b.version)
            if path == serving.bundle.path:
                self.clear_error("bundle")  # the selection is back on the bundle that serves
                return {"ok": True, "model_version": serving.version, "swapped": False,
                        "detail": f"already serving {path.name}"}
            if self._swap_lock.locked():
                raise RequestRejected("a bundle swap is in progress; reload again when it is done")
            bundle = verify_bundle(path)
        except BundleError as exc:
            log.error("event=bundle_refused stage=verify error=%r detail='the running bundle stays'",
                      str(exc))
            self.swap_state = {"version": None, "path": str(b.dir / b.version), "state": "refused",
                               "error": f"bundle refused: {exc}"}
            self.report_error(f"bundle refused: {exc}", key="bundle")
            raise RequestRejected(f"bundle refused: {exc}") from None
        if bundle.version == serving.version:
            detail = (f"same bundle version as the one serving ({bundle.version}, manifest "
                      f"version of {path.name}); nothing swapped")
            log.warning("event=reload_noop path=%s version=%s detail='same manifest version as the "
                        "serving bundle %s'", path, bundle.version, serving.bundle.path)
            return {"ok": True, "model_version": bundle.version, "swapped": False, "detail": detail}
        self.swap_state = {"version": bundle.version, "path": str(path), "state": "loading",
                           "error": None}
        threading.Thread(target=self._swap, args=(bundle,), name="swap", daemon=True).start()
        return {"ok": True, "model_version": bundle.version, "swapping": True}

    def _swap(self, bundle) -> None:
        """Load and warm up the whole new ModelSet off the hot path, then switch the reference
        between batches; the old sessions are released as soon as the last batch drops them."""
        with self._swap_lock:
            if bundle.version == self.current_models().version:
                if self.swap_state and self.swap_state.get("version") == bundle.version:
                    self.swap_state = {**self.swap_state, "state": "swapped"}
                return  # a burst of reloads: an earlier one already swapped to it
            if self.opts.intra_op_threads == 1:  # no ORT pool threads would inherit it
                _lower_thread_priority()  # loading yields the cores to the live stages
            t0 = time.monotonic()
            try:
                new = load_models(bundle, self.cfg.events, self.opts, self.cfg.vision.faces,
                                  self.vision_runtime)
            except Exception as exc:  # noqa: BLE001 - the old models keep serving
                error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.error("event=swap_refused version=%s path=%s error=%r", bundle.version,
                          bundle.path, error)
                self.swap_state = {"version": bundle.version, "path": str(bundle.path),
                                   "state": "refused", "error": f"refused at load: {error}"}
                self.report_error(f"bundle {bundle.version} refused at load: {error}", key="bundle")
                return
            t_swap = time.monotonic_ns()
            assert self.models is not None  # a swap follows a start
            old_version = self.models.swap(new).version  # the old ModelSet is not kept
            self.swaps += 1
            self.last_swap = {"from": old_version, "to": new.version, "t_ns": t_swap,
                              "load_s": round(time.monotonic() - t0, 3)}
            self.swap_state = {"version": new.version, "path": str(bundle.path), "state": "swapped",
                               "error": None}
            self._errors.pop("bundle", None)  # published just below
            log.info("event=swapped from=%s to=%s load_s=%.2f", old_version, new.version,
                     time.monotonic() - t0)
            self._publish_health()
        time.sleep(1.0)  # the batches in flight at the swap drop the old models by then
        release_memory()
