"""What fusion hands downstream: typed, frozen items, and the sink they go into.

The fusion stage (pipeline/fusion_stage.py) puts every fused event phase into an `EventSink`
and takes nothing back.  The sink is either the publish queue (`PublishSink`) or, with sample
logging on, the sample tap (samples/tap.py), which may stamp a sample id on the message and
hands it on to the publish queue.  The sample logger reads the same evidence types
(`FusedRow`) per evaluation, so they live here, where both the pipeline and samples/ may import
them (samples/ never imports pipeline/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from perceptd.daemon.fusion.head import FusionResult
from perceptd.daemon.fusion.space import MODALITIES
from perceptd.daemon.fusion.timeline import Row
from perceptd.daemon.messages import EventMessage, ModalityScore, Outbound


@dataclass(frozen=True)
class Explanation:
    """Why an event phase fired: per present modality its weight, own score and top labels,
    and the newest capture time among them (0: none)."""

    modalities: dict[str, ModalityScore]
    t_capture_ns: int


@dataclass(frozen=True)
class FusedRow:
    """One timeline row and what the head said about it (read by the sample logger)."""

    row: Row
    scores: np.ndarray  # [E] every event's score on this row (this window's evaluation)
    modality_scores: np.ndarray  # [E,M]


@dataclass(frozen=True)
class FusedEvent:
    """One event phase on its way to the wire: the message, its capture time, and the row that
    fired it (None for the ends fusion closes at shutdown).  The message's `sample_id` is None
    until the sample tap stamps the id of a sample it took for this phase."""

    message: EventMessage
    t_capture_ns: int
    fused: FusedRow | None = None

    def outbound(self) -> Outbound:
        return Outbound(self.message, self.t_capture_ns)


class EventSink(Protocol):
    """Where fusion puts each fused event phase (one way: nothing comes back)."""

    def put(self, item: FusedEvent) -> None: ...


class OutboundQueue(Protocol):
    """The publish queue as a sink sees it (pipeline.queues.BoundedQueue[Outbound] is one)."""

    def put(self, item: Outbound, timeout: float | None = None) -> bool: ...


class PublishSink:
    """The last sink of the chain: the event message onto the publish queue."""

    def __init__(self, queue: OutboundQueue) -> None:
        self.queue = queue

    def put(self, item: FusedEvent) -> None:
        self.queue.put(item.outbound())


def explain(row: Row, res: FusionResult, r: int, i: int) -> Explanation:
    """Event i on row r: per present modality its weight, own score and top labels."""
    mods: dict[str, ModalityScore] = {}
    t_cap = 0
    for m, name in enumerate(MODALITIES):
        w = float(res.weights[r, i, m])
        out = row.outputs[m]
        if out is None or w <= 0.0:
            continue
        mods[name] = ModalityScore(
            weight=w, score=float(res.modality_scores[r, i, m]), top=tuple(out.top[:3])
        )
        t_cap = max(t_cap, out.t_capture_ns)
    return Explanation(mods, t_cap)
