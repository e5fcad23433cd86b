"""Deterministic replay: a recording through the same stages, fusion and decoders on a virtual
clock driven by the recorded capture times (docs/replay.md).

What makes it deterministic whatever the machine's speed or load:
- The driver feeds inputs in capture order, one virtual step at a time, and waits until every
  stage has processed everything it was fed (queues empty, each stage's taken == done) before
  fusion sees the outputs: thread timing decides nothing.
- Fusion does not run in its own thread: the driver calls `FusionStage.step(outputs, now)` at
  virtual times.  Schedule `live` (a recording with a fusion journal): the live run's own
  evaluation times, each with the outputs the live fusion had received by then, so replay with
  the recording's bundle reproduces the live events; frames the live run never inferred
  (dropped by a full queue, or motion-gated) are skipped the same way.  Schedule `tick`: an
  evaluation every `fusion.tick_ms` of virtual time with the outputs of the inputs captured
  before it (no journal, or asked for).
- One vision worker (the face interval is then decided in capture order), no sample logging,
  speech latency reported as 0 (it is wall-clock time).
- Published messages are ordered per step by (publish time, stage messages before fusion's,
  emission order) and stamped with virtual times, a fixed run id and a seq from 0.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from perceptd.daemon.bundle import resolve_bundle, verify_bundle
from perceptd.daemon.config.loader import load_config, parse_config
from perceptd.daemon.config.root import Config
from perceptd.daemon.fusion.timeline import ModalityOutput
from perceptd.daemon.inference.models import ModelSet, load_models
from perceptd.daemon.inference.session import SessionOptions
from perceptd.daemon.inference.vision import VisionRuntime
from perceptd.daemon.messages import Outbound, dumps, wall_time_iso
from perceptd.daemon.pipeline.audio_stage import AudioStage
from perceptd.daemon.pipeline.fusion_stage import FusionStage
from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.pipeline.text_stage import TextCommand, TextStage
from perceptd.daemon.pipeline.vision_stage import PreprocessStage, VisionStage
from perceptd.daemon.pipeline.worker import Worker
from perceptd.daemon.record.reader import RecordedCommand, Recording
from perceptd.daemon.samples.crypto import Cipher, SampleCryptoError, load_key
from perceptd.daemon.sources.base import AudioChunk, Frame
from perceptd.daemon.speech.stage import build_speech

log = logging.getLogger(__name__)
NS = 1_000_000_000
Schedule = Literal["auto", "live", "tick"]
LIVE_STEP_NS = 2 * NS  # live schedule: inputs fed per quiescent step (stages overlap within it;
# measured 0.5 s: 22 fps, 2 s: 29 fps, 5 s: 26 fps with speech on a 2-core box)


class ReplayError(Exception):
    """Replay cannot start (bad config, missing bundle): one clear line."""


@dataclass
class ReplayReport:
    recording: str
    bundle_version: str
    schedule: str
    speed: str
    frames: int = 0
    chunks: int = 0
    commands: int = 0
    frames_not_inferred_live: int = 0
    evaluations: int = 0
    virtual_s: float = 0.0
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    topics: dict[str, int] = field(default_factory=dict)  # messages per topic (kept or not)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["topic"].startswith("event.")]

    def summary(self) -> dict[str, Any]:
        return {"recording": self.recording, "bundle_version": self.bundle_version,
                "schedule": self.schedule, "speed": self.speed, "frames": self.frames,
                "chunks": self.chunks, "commands": self.commands,
                "frames_not_inferred_live": self.frames_not_inferred_live,
                "evaluations": self.evaluations, "virtual_s": round(self.virtual_s, 3),
                "wall_s": round(self.wall_s, 3), "fps": round(self.fps, 1),
                "x_realtime": round(self.virtual_s / self.wall_s, 2) if self.wall_s else None,
                "messages": dict(self.topics), "skipped": self.skipped, "problems": self.problems}


def replay_config(rec: Recording, config_path: Path | None, bundle: str | None) -> Config:
    """The recording's own config (or `config_path`), made replay-safe: one vision worker, no
    sample logging; `bundle` selects a version from the config's bundle dir."""
    if config_path is not None:
        cfg = load_config(config_path)
    else:
        data = rec.meta.get("config")
        if not isinstance(data, dict):
            raise ReplayError(f"{rec.path / 'meta.json'}: no config recorded; pass -c CONFIG")
        cfg = parse_config(data, source=str(rec.path / "meta.json"))
    version = bundle or rec.meta.get("bundle_version") or cfg.bundle.version
    if bundle is None and not (cfg.bundle.dir / str(version)).is_dir():
        log.warning("event=replay_bundle_missing version=%s detail='using %s'", version,
                    cfg.bundle.version)
        version = cfg.bundle.version
    return cfg.model_copy(update={
        "bundle": cfg.bundle.model_copy(update={"version": str(version)}),
        "vision": cfg.vision.model_copy(update={"workers": 1}),
        "samples": cfg.samples.model_copy(update={"enabled": False}),
        "speech": cfg.speech.model_copy(update={"nice": 0}),  # no live pipeline to yield to
    })


def recording_cipher(cfg: Config, *, create: bool = False) -> Cipher | None:
    """The samples' key when recordings are sealed (record.encrypt on, or auto with
    samples.encryption.enabled); the composition root passes it to the recorder."""
    mode = cfg.record.encrypt
    if mode == "off" or (mode == "auto" and not cfg.samples.encryption.enabled):
        return None
    return Cipher(load_key(cfg.samples.encryption.key_file, create=create))


def open_recording(rec: Recording, cfg: Config) -> None:
    """Give a sealed recording its key (samples.encryption.key_file of `cfg`)."""
    if rec.meta.get("encrypted") and rec.cipher is None:
        try:
            rec.cipher = Cipher(load_key(cfg.samples.encryption.key_file))
        except SampleCryptoError as exc:
            raise ReplayError(f"{rec.path}: the recording is encrypted: {exc}") from None


def load_replay_models(cfg: Config) -> ModelSet:
    rt = cfg.runtime
    opts = SessionOptions(rt.device, rt.intra_op_threads, tensorrt=rt.tensorrt,
                          trt_cache_dir=str(rt.tensorrt_cache))
    vrt = VisionRuntime(rt.gpu_resize, rt.cuda_graph, rt.pinned_memory, cfg.vision.max_batch)
    path = resolve_bundle(cfg.bundle.dir, cfg.bundle.version)
    return load_models(verify_bundle(path), cfg.events, opts, cfg.vision.faces, vrt)


def _key(o: ModalityOutput) -> tuple[str, str, int]:
    return (o.modality, o.source, int(o.t_capture_ns))


class Replayer:
    """One replay of one recording; `run()` returns the report (and streams to `sink`)."""

    def __init__(self, rec: Recording, cfg: Config, models: ModelSet, *,
                 speed: float | None = None, schedule: Schedule = "auto",
                 sink: Callable[[dict[str, Any]], None] | None = None,
                 outbox: BoundedQueue[Outbound] | None = None, keep_messages: bool = True) -> None:
        self.rec = rec
        self.cfg = cfg
        self.models = models
        self.speed = speed  # None: as fast as the models allow; 1.0: real time
        self.sink = sink
        self.outbox = outbox  # --publish: the live publisher's inbox
        self.keep = keep_messages
        self.journal = rec.journal()
        evals = [e for e in self.journal if not e.get("close")]
        self.schedule: str = ("live" if evals else "tick") if schedule == "auto" else schedule
        if self.schedule == "live" and not evals:
            raise ReplayError(f"{rec.path}: no fusion journal recorded; use the tick schedule")
        self.report = ReplayReport(str(rec.path), models.version, self.schedule,
                                   "max" if speed is None else f"{speed:g}")
        self._seq = 0
        # a fixed run id per recording (the schema's 32 hex digits): replays compare bit for bit
        self._run_id = hashlib.sha256(f"replay:{rec.meta.get('run_id')}".encode()).hexdigest()[:32]
        self._wall0 = int(rec.meta.get("started_wall_ns", 0))
        self._mono0 = int(rec.meta.get("started_mono_ns", 0))

    # ----------------------------------------------------------------- pipeline

    def _build(self) -> None:
        cfg, cur = self.cfg, (lambda: self.models)
        self.q_frames: BoundedQueue[Frame] = BoundedQueue("frames", 64, "block")
        self.q_prepared = BoundedQueue("prepared", 64, "block")
        self.q_audio: BoundedQueue[AudioChunk] = BoundedQueue("audio", 4096, "block")
        self.q_commands: BoundedQueue[TextCommand] = BoundedQueue("commands", 1024, "block")
        self.q_fusion: BoundedQueue[ModalityOutput] = BoundedQueue("fusion", 1_000_000, "block")
        self.q_publish: BoundedQueue[Outbound] = BoundedQueue("publish", 1_000_000, "block")
        self.q_events: BoundedQueue[Outbound] = BoundedQueue("events", 1_000_000, "block")
        self.preprocess = PreprocessStage(self.q_frames, self.q_prepared, cur, cfg.vision)
        self.vision = VisionStage(self.q_prepared, self.q_fusion, self.q_publish, cur, cfg.vision)
        setup = build_speech(cfg.speech, cfg.events, self.q_commands, self.q_publish, cur)
        self.speech = setup.stage
        if self.speech is not None:
            self.speech.clock = lambda: 0  # latency is wall-clock time: 0 in a replay
            self.speech.inbox = BoundedQueue("speech", 1024, "block")
        self.audio = AudioStage(self.q_audio, self.q_fusion, self.q_publish, cur, cfg.audio,
                                on_segment=self.speech.offer if self.speech else None)
        self.text = TextStage(self.q_commands, self.q_fusion, cur, [list(e.prompts) for e in cfg.events])
        self.fusion = FusionStage(self.q_fusion, self.q_events, cur, cfg.events, cfg.fusion.tick_ms,
                                  clock=lambda: 0)
        self.pairs: list[tuple[BoundedQueue[Any], Worker[Any]]] = [
            (self.q_frames, self.preprocess), (self.q_prepared, self.vision), (self.q_audio, self.audio)]
        if self.speech is not None:
            self.pairs.append((self.speech.inbox, self.speech))
        self.pairs.append((self.q_commands, self.text))
        for _, st in self.pairs:
            st.start()

    def _idle(self) -> bool:
        """Everything fed has been processed: checked in flow order, so an upstream stage
        that is done has already handed its outputs to the next queue."""
        for q, st in self.pairs:
            if q.depth or q.get_total != st.items:
                return False
        return True

    def _quiesce(self) -> tuple[list[ModalityOutput], list[Outbound]]:
        outs: list[ModalityOutput] = []
        msgs: list[Outbound] = []
        spins = 0
        while True:
            idle = self._idle()  # read before draining: what it covers is queued by now
            while (o := self.q_fusion.get(timeout=0)) is not None:
                outs.append(o)
            while (m := self.q_publish.get(timeout=0)) is not None:
                msgs.append(m)
            if idle:
                return outs, msgs
            spins += 1
            time.sleep(0.0002 if spins < 50 else 0.001)

    def _stop_stages(self) -> None:
        self.q_frames.close()
        self.q_audio.close()
        self.preprocess.join(30)
        self.audio.join(30)
        if self.speech is not None:
            self.speech.inbox.close()
            self.speech.join(60)
        self.q_commands.close()
        self.text.join(30)
        self.q_prepared.close()
        self.vision.join(30)

    # ----------------------------------------------------------------- output

    def _emit(self, out: Outbound, t_publish: int) -> None:
        payload = out.payload
        t_cap = min(int(out.t_capture_ns), t_publish)
        wall = self._wall0 + (t_publish - self._mono0) if self._wall0 else t_publish
        msg = {"schema_version": 1, "topic": payload.topic, "seq": self._seq, "run_id": self._run_id,
               "t_capture_ns": t_cap, "t_publish_ns": t_publish, "wall_time": wall_time_iso(wall),
               "model_version": self.models.version, **payload.to_wire()}
        self._seq += 1
        self.report.topics[payload.topic] = self.report.topics.get(payload.topic, 0) + 1
        if self.keep:
            self.report.messages.append(msg)
        if self.sink is not None:
            self.sink(msg)
        if self.outbox is not None:
            self.outbox.put(out, timeout=None)

    def _flush_messages(self, stage_msgs: list[Outbound], fusion_msgs: list[tuple[int, Outbound]],
                        step_start: int) -> None:
        # stages run concurrently: their messages are ordered by time, then topic (one stage
        # per topic, each in its own order); fusion's keep the order it emitted them in
        items = [(max(int(m.t_capture_ns), step_start), 0, m.payload.topic, i, m)
                 for i, m in enumerate(stage_msgs)]
        items += [(t, 1, "", i, m) for i, (t, m) in enumerate(fusion_msgs)]
        items.sort(key=lambda x: x[:4])
        for t, _, _, _, m in items:
            self._emit(m, t)

    # ----------------------------------------------------------------- the loop

    def run(self) -> ReplayReport:
        t_wall0 = time.monotonic()
        rep = self.report
        step_ns = LIVE_STEP_NS if self.schedule == "live" else self.cfg.fusion.tick_ms * 1_000_000
        tick_ns = self.cfg.fusion.tick_ms * 1_000_000
        arrival: dict[tuple[str, str, int], int] = {}
        evals: list[int] = []
        close_t: int | None = None
        for e in self.journal:
            if e.get("close"):
                close_t = int(e["t"])
                continue
            evals.append(int(e["t"]))
            for k in e.get("in", ()):
                try:
                    arrival.setdefault((str(k[0]), str(k[1]), int(k[2])), int(e["t"]))
                except (IndexError, TypeError, ValueError):
                    continue
        evals.sort()
        live = self.schedule == "live"
        inferred = {(k[1], k[2]) for k in arrival if k[0] == "vision"}
        # frames after the journal's last evaluation (a run that was killed) were never judged
        # live: they are fed, and evaluated on the tick after it
        journal_end = evals[-1] if evals else 0
        self._build()
        inputs = self.rec.inputs()
        nxt = next(inputs, None)
        if nxt is None and not evals:
            self._stop_stages()
            rep.problems = self.rec.problems + ["nothing to replay: no readable input"]
            return rep
        t0 = min(x for x in (nxt[0] if nxt else None, evals[0] if evals else None) if x is not None)
        b = t0
        ei = 0
        pending: list[tuple[int, int, ModalityOutput]] = []  # (arrival, order, output)
        order = 0
        last_t = last_eval = t0
        while nxt is not None or ei < len(evals):
            b_next = b + step_ns
            if self.speed is not None:  # real time: the step's inputs are "captured" by now
                delay = (b_next - t0) / NS / self.speed - (time.monotonic() - t_wall0)
                if delay > 0:
                    time.sleep(delay)
            while nxt is not None and nxt[0] < b_next:
                self._feed(nxt[2], live and nxt[0] <= journal_end, inferred)
                last_t = max(last_t, nxt[0])
                nxt = next(inputs, None)
            outs, stage_msgs = self._quiesce()
            for o in outs:
                pending.append((arrival.get(_key(o), b_next) if live else b_next, order, o))
                order += 1
            if live:
                times = []
                while ei < len(evals) and evals[ei] < b_next:
                    times.append(evals[ei])
                    ei += 1
                if ei == len(evals) and close_t is None and (nxt is not None or outs):
                    t = max(journal_end, last_eval) + tick_ns  # past the journal: ticks
                    while t < b_next:
                        times.append(t)
                        t += tick_ns
            else:
                times = [b_next] if (outs or nxt is not None or pending) else []
                ei = len(evals)
            fusion_msgs = self._evaluate(times, pending)
            last_eval = times[-1] if times else last_eval
            self._flush_messages(stage_msgs, fusion_msgs, b)
            b = b_next
        # the end: what the stages still hold (a speech segment open at the end), then close
        self._stop_stages()
        outs, stage_msgs = self._quiesce_final()
        end_t = close_t if (live and close_t) else max(b, last_t + tick_ns, last_eval)
        for o in outs:
            pending.append((min(arrival.get(_key(o), end_t), end_t), order, o))
            order += 1
        fusion_msgs = self._evaluate([end_t] if pending else [], pending)
        self.fusion.close_all(end_t)
        fusion_msgs += [(end_t, m) for m in self._drain(self.q_events)]
        self._flush_messages(stage_msgs, fusion_msgs, b)
        rep.virtual_s = (end_t - t0) / NS
        rep.wall_s = time.monotonic() - t_wall0
        rep.evaluations = self.fusion.stats.evaluations
        rep.problems = list(self.rec.problems)
        rep.skipped = dict(self.rec.skipped)
        drops = self.rec.drops()
        if drops:
            rep.problems.append(f"{len(drops)} live item(s) were not recorded (the recorder fell "
                                "behind; drops.jsonl): replay lacks them")
        if rep.frames_not_inferred_live:
            rep.problems.append(f"{rep.frames_not_inferred_live} recorded frame(s) the live run did "
                                "not infer (dropped by a full queue or motion-gated): skipped likewise")
        live_drops = (self.rec.meta.get("live") or {}).get("audio_dropped")
        if live_drops:
            rep.problems.append(f"the live run dropped {live_drops} audio chunk(s) in its queue: "
                                "replay feeds them, so audio results near those moments may differ")
        versions = sorted({str(m.get("model_version")) for m in self.rec.messages()
                           if m.get("topic", "").startswith("event.")})
        if len(versions) > 1:
            rep.problems.append(f"the live run served bundles {', '.join(versions)} (a hot swap): "
                                f"replay uses {self.models.version} throughout")
        return rep

    def _feed(self, item: Any, live: bool, inferred: set[tuple[str, int]]) -> None:
        if isinstance(item, Frame):
            if live and (item.source_id, item.t_capture_ns) not in inferred:
                self.report.frames_not_inferred_live += 1
                return
            self.report.frames += 1
            self.q_frames.put(item, timeout=None)
        elif isinstance(item, AudioChunk):
            self.report.chunks += 1
            self.q_audio.put(item, timeout=None)
        elif isinstance(item, RecordedCommand):
            self.report.commands += 1
            self.q_commands.put(TextCommand(item.text, item.origin, item.t_capture_ns, item.source),
                                timeout=None)

    def _evaluate(self, times: list[int], pending: list[tuple[int, int, ModalityOutput]]
                  ) -> list[tuple[int, Outbound]]:
        out: list[tuple[int, Outbound]] = []
        for t in times:
            # a total order: typed and spoken commands reach the text stage in thread order
            due = sorted((p for p in pending if p[0] <= t),
                         key=lambda p: (p[0], p[2].t_capture_ns, p[2].modality, p[2].source, p[1]))
            if due:
                pending[:] = [p for p in pending if p[0] > t]
            try:
                self.fusion.step([p[2] for p in due], t)
            except Exception:  # the same first-error capture as the live loop
                log.exception("event=fusion_error")
            out += [(t, m) for m in self._drain(self.q_events)]
        return out

    @staticmethod
    def _drain(q: BoundedQueue[Any]) -> list[Any]:
        items = []
        while (x := q.get(timeout=0)) is not None:
            items.append(x)
        return items

    def _quiesce_final(self) -> tuple[list[ModalityOutput], list[Outbound]]:
        return self._drain(self.q_fusion), self._drain(self.q_publish)


def replay_recording(path: Path, *, config_path: Path | None = None, bundle: str | None = None,
                     speed: float | None = None, schedule: Schedule = "auto",
                     sink: Callable[[dict[str, Any]], None] | None = None,
                     keep_messages: bool = True, models: ModelSet | None = None,
                     outbox: BoundedQueue[Outbound] | None = None) -> ReplayReport:
    """Open, configure, load the bundle and replay; the one call the CLI and evaluate use."""
    rec = Recording(path)
    cfg = replay_config(rec, config_path, bundle)
    open_recording(rec, cfg)
    m = models or load_replay_models(cfg)
    return Replayer(rec, cfg, m, speed=speed, schedule=schedule, sink=sink, outbox=outbox,
                    keep_messages=keep_messages).run()


def event_key(m: dict[str, Any]) -> tuple[str, str, int]:
    return (m["topic"], m["phase"], int(m["t_capture_ns"]))


def canonical(m: dict[str, Any]) -> str:
    """A message without what differs between runs by design (run id, wall time)."""
    return dumps({k: v for k, v in m.items() if k not in ("run_id", "wall_time")}).decode()
