"""What the daemon says about itself: the open-problems board, the `health` message, the
`status` reply and the one-line summary.  All read a `PipelineView`; none blocks."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from perceptd.daemon.messages import HealthMessage, QueueHealth, SourceHealth

if TYPE_CHECKING:
    from perceptd.daemon.health.view import PipelineView
    from perceptd.daemon.ops import Operations
    from perceptd.daemon.pipeline.queues import BoundedQueue
    from perceptd.daemon.sources.base import Source

log = logging.getLogger(__name__)

MAX_ERRORS = 8


class ErrorBoard:
    """Open problems shown in health and status, keyed by condition: each carries the UTC time
    it was (last) reported and goes when its condition clears (a good swap, a good config).
    `on_change` runs after a report or a clear (the daemon publishes health then)."""

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self._errors: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.on_change = on_change

    def report(self, message: str, key: str = "other") -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._lock:
            self._errors.pop(key, None)
            self._errors[key] = f"{stamp} {message}"[:1000]
            while len(self._errors) > MAX_ERRORS:
                self._errors.popitem(last=False)
        self.on_change()

    def clear(self, key: str) -> None:
        if self.discard(key):
            log.info("event=error_cleared key=%s", key)
            self.on_change()

    def discard(self, key: str) -> bool:
        """Drop an entry without telling anyone (the caller publishes); True if there was one."""
        with self._lock:
            return self._errors.pop(key, None) is not None

    def messages(self) -> list[str]:
        with self._lock:
            return list(self._errors.values())


def queue_status(q: BoundedQueue[Any]) -> dict[str, Any]:
    st = q.stats()
    return {"depth": st.depth, "maxsize": st.maxsize, "policy": st.policy,
            "dropped": sum(st.dropped_total.values()), "dropped_by_reason": dict(st.dropped_total),
            "put": st.put_total}


def source_status(src: Source) -> dict[str, Any]:
    st = src.stats
    waiting = (None if st.first_capture_ns or not st.started_ns
               else round((time.monotonic_ns() - st.started_ns) / 1e9, 3))
    return {"kind": src.kind, "state": str(st.state), "reconnects": st.reconnects,
            "captured": st.captured, "last_error": st.last_error or None,
            "last_error_at": st.last_error_at or None, "overflows": st.overflows,
            "first_capture_after_s": st.first_capture_after_s, "waiting_first_s": waiting}


def health_message(d: PipelineView) -> HealthMessage:
    """The `health` topic's message."""
    sources = {}
    for src in d.sources:
        st = src.stats
        sources[src.source_id] = SourceHealth(str(st.state), st.last_error or None, st.reconnects)
    queues = {q.name: QueueHealth(q.depth, sum(q.stats().dropped_total.values())) for q in d.queues}
    return HealthMessage(state=str(d.lifecycle.state), sources=sources, queues=queues,
                         uptime_s=d.lifecycle.uptime_s(), errors=tuple(d.errors))


def summary(d: PipelineView) -> str:
    """One line: state, model, sources, vision fps (systemd STATUS=, `status`)."""
    fps = d.vision.items / max(1e-9, d.lifecycle.uptime_s())
    return (f"{d.lifecycle.state}; model {d.current_models().version}; "
            f"{len(d.sources)} sources; vision {fps:.1f} fps"
            f"{'' if d.speech_setup.stage is not None else '; speech off'}")


def status(d: PipelineView, ops: Operations) -> dict[str, Any]:
    """The reply to a `status` request (and the console's numbers)."""
    m = d.current_models()
    pub = d.publisher.stats()
    swap = d.bundles
    return {
        "state": str(d.lifecycle.state),
        "uptime_s": round(d.lifecycle.uptime_s(), 3),
        "run_id": d.publisher.run_id,
        "model_version": m.version,
        "providers": m.providers(),
        "vision_path": m.vision.path(),
        "events_endpoint": d.publisher.endpoint,
        "control_endpoint": d.control.endpoint,
        "sources": {s.source_id: source_status(s) for s in d.sources},
        "queues": {q.name: queue_status(q) for q in d.queues},
        "stages": {st.name: st.stats() for st in d.stages},
        "fusion": vars(d.fusion.stats).copy(),
        "published": pub.published,
        "next_seq": pub.next_seq,
        "swaps": swap.swaps,
        "speech": d.speech_setup.status(),
        "last_swap": swap.last_swap,
        "swap": swap.state,
        "errors": d.errors,
        "samples": d.samples.stats(),
        "snapshots": d.snapshots.stats() if d.snapshots is not None else {"enabled": False},
        "summary": summary(d),
        "health": ops.health().to_dict(),
        **ops.endpoints(),
    }
