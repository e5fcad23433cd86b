"""The sample tap: the sink between fusion and the publish queue while sample logging is on.

fusion -> SampleTap -> publish queue.  Fusion puts each fused event phase here and takes nothing
back; the tap asks the logger's trigger policy whether the phase is worth a sample, and when one
is taken stamps its id on the message (the logger's writer thread writes the sample under that
id) and hands the message on.  It runs on the fusion thread (microseconds: the disk work is the
writer's); whatever the logger does, the message goes on.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Protocol

from perceptd.daemon.fusion.fused import EventSink, FusedEvent, FusedRow
from perceptd.daemon.messages import EventMessage

log = logging.getLogger(__name__)


class EventSampler(Protocol):
    """What the tap asks (samples.logger.SampleLogger is one): the id of a sample taken for
    this event phase, or None."""

    def take_event(self, event: EventMessage, fused: FusedRow | None) -> str | None: ...


class SampleTap:
    """An `EventSink` that may take a sample of each event phase, then hands it downstream."""

    def __init__(self, sampler: EventSampler, downstream: EventSink) -> None:
        self.sampler = sampler
        self.downstream = downstream

    def put(self, item: FusedEvent) -> None:
        try:
            sample_id = self.sampler.take_event(item.message, item.fused)
        except Exception:  # noqa: BLE001 - logging must never cost an event
            log.exception("event=sample_tap_error")
            sample_id = None
        if sample_id is not None:
            item = dataclasses.replace(
                item, message=dataclasses.replace(item.message, sample_id=sample_id))
        self.downstream.put(item)
