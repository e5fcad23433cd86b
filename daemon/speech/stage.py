"""The speech worker: closed speech segments -> transcripts (topic `speech`) -> text commands.

It runs in its own thread behind a small drop-oldest queue, fed by the audio stage's
`on_segment` hook, so a slow transcription never stalls capture, vision or fusion: while it
is busy, new segments wait or push out the oldest (counted as drops).  Each segment gives
two `speech` messages: the audio stage's at segment close (text null: "someone spoke"), then
this stage's transcript with its confidence, the matcher's verdict and the latency from end
of speech.  An accepted transcript enters the text stage exactly like a typed command, with
origin "speech", stamped at the end of speech, sourced from the microphone.

Speculation (`speech.early_ms`): the audio stage also hands on the speech so far, marked not
final, once the silence after it has lasted early_ms, before the hangover closes the segment.
It is transcribed (and judged) at once if nothing else waits; when the segment then closes
with the same audio (its key: start and end sample), that result is published, so the hangover
and the recognition overlap.  Speech resuming gives the close another key: the speculative
result is counted as wasted and the closed segment decoded as always.  Either way the
transcript is published once per closed segment, never for a speculative one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from perceptd.daemon.events.config import EventConfig
from perceptd.daemon.messages import Outbound, SpeechMessage
from perceptd.daemon.pipeline.audio_stage import SpeechSegmentAudio
from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.pipeline.text_stage import TextCommand
from perceptd.daemon.pipeline.worker import Worker
from perceptd.daemon.priority import lower_priority
from perceptd.daemon.speech.config import SpeechConfig
from perceptd.daemon.speech.engine import AsrEngine, EngineRegistry, EngineUnavailable, Transcript
from perceptd.daemon.speech.matcher import CommandMatcher, Verdict, recognizer_prompt
from perceptd.daemon.speech.registry import default_registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Speculation:
    """A speculative segment's result, kept until its source's next closed segment."""

    key: tuple[int, int]
    samples: int
    transcript: Transcript
    verdict: Verdict
    models: Any  # the ModelSet it was judged with (a reload swaps it: judge again)


class SpeechStage(Worker[SpeechSegmentAudio]):
    name = "speech"

    def __init__(self, inbox: BoundedQueue[SpeechSegmentAudio], commands: BoundedQueue[TextCommand],
                 publish: BoundedQueue[Outbound], models: Callable[[], Any], engine: AsrEngine,
                 matcher: CommandMatcher, clock: Callable[[], int] = time.monotonic_ns,
                 nice: int = 0) -> None:
        super().__init__(inbox)
        self.nice = nice
        self.commands = commands
        self.publish = publish
        self.models = models
        self.engine = engine
        self.matcher = matcher
        self.clock = clock
        self.verdicts: Counter[str] = Counter()
        self.last_latency_ms = 0.0
        self._speculation: dict[str, _Speculation] = {}  # per source, the latest
        # speculative segments: decoded, used (their close published them), wasted (speech
        # went on, or the close differed), busy (not queued: the queue held something) and
        # skipped (not decoded: something waited behind it); a speculation never delays or
        # pushes out a closed segment.  Keys fixed here: stats() reads from another thread.
        self.speculative: Counter[str] = Counter(decoded=0, used=0, wasted=0, busy=0, skipped=0)

    def offer(self, seg: SpeechSegmentAudio) -> None:
        """The audio stage's on_segment hook: never blocks the audio thread.  A speculative
        segment is queued only into an empty queue: it never pushes out a closed one (the audio
        thread is the only producer, so the queue cannot fill between the check and the put),
        and a closed segment queued after it evicts it first (it is the oldest)."""
        if not seg.final and len(self.inbox):
            self.speculative["busy"] += 1  # the audio thread's key alone
            return
        self.inbox.put(seg, timeout=0)

    def process(self, items: list[SpeechSegmentAudio]) -> None:
        m = self.models()
        for seg in items:
            if seg.final:
                self.recognise(m, seg)
            else:
                self.speculate(m, seg)

    def speculate(self, m, seg: SpeechSegmentAudio) -> None:
        """Transcribe and judge a segment that may still go on; publish nothing.  Skipped when
        anything waits behind it (its own close, or other speech): that comes first."""
        if len(self.inbox):
            self.speculative["skipped"] += 1
            return
        tr = self.engine.transcribe(seg.pcm)
        verdict = self.matcher.judge(tr, m)
        old = self._speculation.get(seg.source)
        if old is not None:
            self.speculative["wasted"] += 1
        self._speculation[seg.source] = _Speculation(seg.key, int(np.size(seg.pcm)), tr, verdict, m)
        self.speculative["decoded"] += 1

    def _speculated(self, m, seg: SpeechSegmentAudio) -> tuple[Transcript, Verdict] | None:
        """The speculative result for this closed segment, if it had the same audio."""
        spec = self._speculation.pop(seg.source, None)
        if spec is None:
            return None
        if spec.key != seg.key or spec.samples != np.size(seg.pcm):
            self.speculative["wasted"] += 1
            return None
        self.speculative["used"] += 1
        verdict = spec.verdict if spec.models is m else self.matcher.judge(spec.transcript, m)
        return spec.transcript, verdict

    def recognise(self, m, seg: SpeechSegmentAudio) -> Verdict:
        """Transcribe (or take the speculative result of) a closed segment and publish it."""
        known = self._speculated(m, seg)
        if known is not None:  # the speculative decode had this very audio
            tr, verdict = known
        else:
            tr = self.engine.transcribe(seg.pcm)
            verdict = self.matcher.judge(tr, m)
        latency_ms = max(0.0, (self.clock() - seg.end_ns) / 1e6)
        self.last_latency_ms = latency_ms
        self.verdicts[verdict.reason] += 1
        msg = SpeechMessage(
            source=seg.source, start_ns=seg.start_ns, end_ns=seg.end_ns, text=tr.text,
            avg_logprob=tr.avg_logprob, no_speech_prob=tr.no_speech_prob, engine=self.engine.name,
            latency_ms=latency_ms, command=verdict.event if verdict.accepted else None,
            verdict=verdict.reason,
        )
        self.publish.put(Outbound(msg, seg.end_ns))
        if verdict.accepted:
            self.commands.put(TextCommand(verdict.text, "speech", seg.end_ns, seg.source), timeout=0)
        log.info("event=transcript source=%s text=%r verdict=%s command=%s similarity=%s margin=%s "
                 "avg_logprob=%s no_speech_prob=%s latency_ms=%.0f speculative=%s", seg.source, tr.text,
                 verdict.reason, verdict.event, verdict.similarity, verdict.margin,
                 _fmt(tr.avg_logprob), _fmt(tr.no_speech_prob), latency_ms, known is not None)
        return verdict

    def stats(self) -> dict[str, Any]:
        accepted = self.verdicts["accepted"]
        return {**super().stats(), "engine": self.engine.name, "accepted": accepted,
                "rejected": sum(self.verdicts.values()) - accepted, "verdicts": dict(self.verdicts),
                "dropped": sum(self.inbox.stats().dropped_total.values()),
                "last_latency_ms": round(self.last_latency_ms, 1),
                "speculative": dict(self.speculative)}


def _create_niced(create: Callable[[], AsrEngine], nice: int) -> AsrEngine:
    """Build the engine on a reniced thread, so the compute threads it starts (CTranslate2's
    workers) inherit the lower priority: transcription yields the CPU to the live pipeline."""
    result: dict[str, Any] = {}

    def run() -> None:
        lower_priority(nice, "speech")
        try:
            result["engine"] = create()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            result["error"] = exc

    t = threading.Thread(target=run, name="speech-load", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["engine"]


def _fmt(v: float | None) -> str:
    return "none" if v is None else f"{v:.3f}"


@dataclass(frozen=True)
class SpeechSetup:
    """What the daemon gets: a stage to run, or why there is none (status says it)."""

    stage: SpeechStage | None
    reason: str  # "" when enabled
    wanted: bool = True  # enabled in config (then being off is a health warning)

    @property
    def warning(self) -> str | None:
        return f"speech off: {self.reason}" if self.wanted and self.stage is None else None

    def status(self) -> dict[str, Any]:
        if self.stage is None:
            return {"enabled": False, "reason": self.reason}
        return {"enabled": True, **self.stage.stats()}


def load_engine(cfg: SpeechConfig, events: list[EventConfig],
                registry: EngineRegistry | None = None) -> tuple[AsrEngine | None, str]:
    """(engine, "") or (None, why not): disabled in config, or not installed here."""
    if not cfg.enabled:
        return None, "disabled in config (speech.enabled: false)"
    prompt = cfg.initial_prompt if cfg.initial_prompt is not None else \
        recognizer_prompt(cfg.prompt, events, cfg.wake_phrase)
    reg = registry or default_registry()
    try:
        return _create_niced(lambda: reg.create(cfg.engine, prompt), cfg.nice), ""
    except EngineUnavailable as exc:
        log.error("event=speech_disabled reason=%r", str(exc))
        return None, str(exc)


def build_speech(cfg: SpeechConfig, events: list[EventConfig], commands: BoundedQueue[TextCommand],
                 publish: BoundedQueue[Outbound], models: Callable[[], Any],
                 registry: EngineRegistry | None = None) -> SpeechSetup:
    """Load the configured engine; a missing engine disables speech with a logged reason."""
    engine, reason = load_engine(cfg, events, registry)
    if engine is None:
        return SpeechSetup(None, reason, wanted=cfg.enabled)
    inbox: BoundedQueue[SpeechSegmentAudio] = BoundedQueue("speech", cfg.queue_size, "drop_oldest")
    stage = SpeechStage(inbox, commands, publish, models, engine, CommandMatcher(cfg, events),
                        nice=cfg.nice)
    log.info("event=speech_enabled engine=%s wake_phrase=%r", engine.name, cfg.wake_phrase)
    return SpeechSetup(stage, "")
