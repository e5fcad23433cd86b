"""Fusion stage: encoder outputs -> timeline -> ONNX fusion head -> hysteresis -> events.

It evaluates as soon as new outputs arrive (latency) and at least every tick (so events end
when their inputs go stale).  Each fused event carries its explanation: per present modality
the attention weight, that modality's own score and its top labels.

Events leave one way: each phase goes into the stage's `EventSink` (fusion/fused.py) as a
`FusedEvent` (the message plus the row that fired it) and nothing comes back; the sink is the
publish queue, or the sample tap in front of it (samples/tap.py), which stamps the sample id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from perceptd.daemon.events.config import EventConfig
from perceptd.daemon.events.decoder import EventDecoder, Transition
from perceptd.daemon.fusion.fused import (
    EventSink,
    Explanation,
    FusedEvent,
    FusedRow,
    PublishSink,
    explain,
)
from perceptd.daemon.fusion.head import FusionResult
from perceptd.daemon.fusion.space import MODALITIES, EventSpace
from perceptd.daemon.fusion.timeline import ModalityOutput, Row, Timeline
from perceptd.daemon.health.stats import ModelTimings
from perceptd.daemon.messages import CommandMessage, EventMessage, Outbound
from perceptd.daemon.pipeline.queues import BoundedQueue

if TYPE_CHECKING:
    from perceptd.daemon.inference.models import ModelSet

log = logging.getLogger(__name__)
TEXT = MODALITIES.index("text")
NS = 1_000_000_000


@dataclass(frozen=True)
class WindowInputs:
    """What the fusion head was given for one fusion window at one evaluation: the rows and
    their stacked inputs (a shadow runs a candidate head on exactly these)."""

    rows: list[Row]
    x: np.ndarray  # [B,M,D]
    mask: np.ndarray  # [B,M]
    probs_vision: np.ndarray
    probs_audio: np.ndarray
    text_evidence: np.ndarray


@dataclass
class FusionStats:
    evaluations: int = 0
    events_published: int = 0
    commands_accepted: int = 0
    commands_rejected: int = 0
    last_eval_ms: float = 0.0


def row_evidence(rows: list[Row], space: EventSpace
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The head's per-row class probabilities (vision, audio) and command log-odds [B,E]."""
    pv = np.zeros((len(rows), space.rel_vision.shape[1]), np.float32)
    pa = np.zeros((len(rows), space.rel_audio.shape[1]), np.float32)
    te = np.zeros((len(rows), len(space.names)), np.float32)
    iv, ia, it = (MODALITIES.index(m) for m in ("vision", "audio", "text"))
    for b, r in enumerate(rows):
        v, a, t = r.outputs[iv], r.outputs[ia], r.outputs[it]
        if v is not None and v.probs is not None and v.probs.shape[0] == pv.shape[1]:
            pv[b] = v.probs
        if a is not None and a.probs is not None and a.probs.shape[0] == pa.shape[1]:
            pa[b] = a.probs
        if t is not None:
            te[b] = space.per_event(t.commands)
    return pv, pa, te


class FusionStage:
    """Owns the timeline and the decoders; the only writer of fused events."""

    name = "fusion"

    def __init__(
        self,
        inbox: BoundedQueue[ModalityOutput],
        publish: BoundedQueue[Outbound],
        models: Callable[[], ModelSet],
        events: list[EventConfig],
        tick_ms: int = 100,
        sink: EventSink | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        on_evaluate: Callable[[int, dict[str, FusedRow]], None] | None = None,
        on_journal: Callable[[int, list[ModalityOutput], bool], None] | None = None,
        on_fused: Callable[[int, dict[int, WindowInputs], list[Transition]], None] | None = None,
    ) -> None:
        self.inbox = inbox
        self.publish = publish
        self.models = models
        self.events = list(events)
        self.tick_s = tick_ms / 1000
        # where each fused event phase goes (one way): the publish queue unless a sink (the
        # sample tap, which hands on to the publish queue) is given; command verdicts go to
        # `publish` directly
        self.sink: EventSink = sink if sink is not None else PublishSink(publish)
        # sample logging hook (returns nothing): each event's best row, per evaluation
        self.on_evaluate = on_evaluate
        self.clock = clock
        # recording hook: (now, outputs applied since the previous evaluation, closing) per
        # evaluation, so a replay can evaluate at the same times on the same inputs
        self.on_journal = on_journal
        # shadow hook: (now, each window's head inputs, the live transitions) after every live
        # evaluation, on this thread (daemon/shadow.py runs a candidate head there)
        self.on_fused = on_fused
        self.timeline = Timeline()
        self.decoders = {e.name: EventDecoder(e) for e in self.events}
        self._last: dict[str, Explanation] = {}
        self._windows = sorted({int(e.window_s * NS) for e in self.events})
        self.stats = FusionStats()
        self._thread: threading.Thread | None = None
        self.heartbeat_ns = 0
        self.timings = ModelTimings()  # fusion head time per provider, for /metrics
        self._latest_rows: tuple[Row, ...] = ()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fusion", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def latest_rows(self) -> tuple[Row, ...]:
        """The rows of the newest evaluation at the widest fusion window: what the daemon sees
        now, per camera.  Any thread may call it (a reference read; rows are immutable)."""
        return self._latest_rows

    def _run(self) -> None:
        last_eval = 0.0
        applied: list[ModalityOutput] = []  # since the previous evaluation (the journal's entry)
        while True:
            item = self.inbox.get(timeout=self.tick_s)
            self.heartbeat_ns = self.clock()
            if item is None and self.inbox.closed:
                break
            commands: list[ModalityOutput] = []
            while item is not None:
                self.timeline.update(item)
                applied.append(item)
                if item.modality == "text":
                    commands.append(item)
                item = self.inbox.get(timeout=0)
            now = time.monotonic()
            if commands or now - last_eval >= self.tick_s or self.inbox.depth == 0:
                t_ns = self.clock()
                self._journal(t_ns, applied, False)
                applied = []
                try:
                    self.evaluate(commands, t_ns)
                except Exception:  # a bad evaluation must not kill fusion for months
                    log.exception("event=fusion_error")
                last_eval = now
        self.close_all()

    def _journal(self, now: int, applied: list[ModalityOutput], closing: bool) -> None:
        if self.on_journal is None:
            return
        try:
            self.on_journal(now, applied, closing)
        except Exception:  # a recorder must never cost an event
            log.exception("event=fusion_journal_error")

    def step(self, items: list[ModalityOutput], now: int) -> None:
        """Apply outputs and evaluate at `now` (replay drives fusion this way on its virtual
        clock: the same timeline, head, decoders and messages as the live loop above)."""
        commands = []
        for item in items:
            self.timeline.update(item)
            if item.modality == "text":
                commands.append(item)
        self.heartbeat_ns = now
        self.evaluate(commands, now)

    # ----------------------------------------------------------------- evaluation

    def evaluate(self, commands: list[ModalityOutput] | None = None, now: int | None = None) -> None:
        t0 = time.perf_counter()
        models = self.models()
        now = self.clock() if now is None else now
        per_window: dict[int, tuple[list[Row], FusionResult]] = {}
        inputs: dict[int, WindowInputs] = {}
        live: list[Transition] = []
        for w in self._windows:
            rows = self.timeline.rows(now, w)
            for c in commands or ():  # each command in a row of its own words (see Timeline.rows)
                if not any(r.outputs[TEXT] is c for r in rows):
                    rows += self.timeline.rows(now, w, override=c)
            x = np.stack([r.x for r in rows])
            mask = np.stack([r.mask for r in rows])
            pv, pa, te = row_evidence(rows, models.space)
            t_inf = time.perf_counter()
            per_window[w] = (rows, models.fusion.fuse(x, mask, models.space, pv, pa, te))
            self.timings.observe("fusion", models, time.perf_counter() - t_inf)
            if self.on_fused is not None:
                inputs[w] = WindowInputs(rows, x, mask, pv, pa, te)
        self._latest_rows = tuple(per_window[self._windows[-1]][0])
        names = models.space.names
        # each event's best row, for every event of a window in one call (ties: the first row)
        best_rows = {w: res.scores.argmax(axis=0) for w, (_, res) in per_window.items()}
        fused: dict[str, FusedRow] = {}
        for e in self.events:
            w = int(e.window_s * NS)
            rows, res = per_window[w]
            i = names.index(e.name)
            r = int(best_rows[w][i])
            score = float(res.scores[r, i])
            tr = self.decoders[e.name].step(score, now)
            if tr is None and self.on_evaluate is None:
                continue  # most evaluations change nothing: no row, no explanation
            fr = FusedRow(rows[r], res.scores[r], res.modality_scores[r])
            if self.on_evaluate is not None:
                fused[e.name] = fr
            if tr is not None:  # explained only when it is published
                self._emit(tr, self._explain(rows[r], res, r, i), fr)
                live.append(tr)
        if commands:
            self._command_verdicts(commands, per_window, names)
        if self.on_evaluate is not None:
            self.on_evaluate(now, fused)
        if self.on_fused is not None:  # after the live messages are queued: they go first
            try:
                self.on_fused(now, inputs, live)
            except Exception:  # a candidate must never cost a live event
                log.exception("event=shadow_error")
        self.timeline.prune(now, max(self._windows))
        self.stats.evaluations += 1
        self.stats.last_eval_ms = (time.perf_counter() - t0) * 1e3

    def _explain(self, row: Row, res: FusionResult, r: int, i: int) -> Explanation:
        return explain(row, res, r, i)

    def _emit(self, tr: Transition, expl: Explanation, fused: FusedRow | None = None) -> None:
        """Hand one phase downstream; `fused` is the row that fired it (None at shutdown)."""
        if tr.phase == "end" or not expl.modalities:
            expl = self._last.get(tr.event, expl)  # an end explains what it ended
        else:
            self._last[tr.event] = expl
        msg = EventMessage(event=tr.event, phase=tr.phase, score=tr.score,
                           modalities=expl.modalities)
        # an end is caused by the evaluation that saw the evidence go (or stale): stamp it then
        t_cap = tr.t_ns if tr.phase == "end" or not expl.t_capture_ns else expl.t_capture_ns
        self.sink.put(FusedEvent(msg, t_cap, fused))
        self.stats.events_published += 1

    def _command_verdicts(self, commands: list[ModalityOutput],
                          per_window: dict[int, tuple[list[Row], FusionResult]],
                          names: Sequence[str]) -> None:
        """Publish on `command` which event each command became (or that none did): judged on
        the command's own row, so a command from another source still in its window (typed
        "play some music", then spoken "turn on the kitchen lights") cannot lend it its event."""
        cmd_events = [e for e in self.events if e.kind == "command" and "text" in e.modalities]
        for c in commands:
            own: dict[str, float] = {}
            for e in cmd_events:
                rows, res = per_window[int(e.window_s * NS)]
                mine = [k for k, row in enumerate(rows) if row.outputs[TEXT] is c]
                # no row: the command was already older than the window when it arrived
                own[e.name] = max((float(res.scores[k, names.index(e.name)]) for k in mine), default=0.0)
            winner = max(cmd_events, key=lambda e: own[e.name], default=None)
            ok = winner is not None and own[winner.name] >= winner.threshold_on
            self.stats.commands_accepted += ok
            self.stats.commands_rejected += not ok
            msg = CommandMessage(
                text=str(c.extra.get("text", "")), source=c.extra.get("origin", "control"),
                accepted=ok, event=winner.name if ok and winner is not None else None,
            )
            self.publish.put(Outbound(msg, c.t_capture_ns))

    def close_all(self, now: int | None = None) -> None:
        """At shutdown every open event gets its end phase."""
        now = self.clock() if now is None else now
        self._journal(now, [], True)
        for name, dec in self.decoders.items():
            tr = dec.end(0.0, now)
            if tr is not None:
                self._emit(tr, self._last.get(name, Explanation({}, now)))
