"""Hysteresis per event: a score must rise above `threshold_on` (for `min_duration_s`) to start,
fall below `threshold_off` to end, and an ended event stays quiet for `cooldown_s`.

Pure logic on the monotonic clock (nanoseconds), so it is tested without threads or sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from perceptd.daemon.events.config import EventConfig

Phase = Literal["start", "update", "end"]
NS = 1_000_000_000


class _State(Enum):
    IDLE = "idle"
    RISING = "rising"  # above threshold_on, waiting out min_duration
    ACTIVE = "active"
    COOLDOWN = "cooldown"


@dataclass(frozen=True)
class Transition:
    event: str
    phase: Phase
    score: float
    t_ns: int


class EventDecoder:
    """One event's state machine; feed it (score, t_ns) at every fusion evaluation."""

    def __init__(self, cfg: EventConfig) -> None:
        self.cfg = cfg
        self.state = _State.IDLE
        self._since_ns = 0  # RISING: when it rose; COOLDOWN: when it ended
        self._last_emit_ns = 0
        self._on = cfg.threshold_on
        self._off = cfg.threshold_off
        self._min_ns = int(cfg.min_duration_s * NS)
        self._cool_ns = int(cfg.cooldown_s * NS)
        self._update_ns = int(cfg.update_interval_s * NS)

    @property
    def active(self) -> bool:
        return self.state is _State.ACTIVE

    def step(self, score: float, t_ns: int) -> Transition | None:
        """Advance to time t_ns with the current score; return a phase to publish, if any."""
        if self.state is _State.COOLDOWN:
            if t_ns - self._since_ns < self._cool_ns:
                return None
            self.state = _State.IDLE
        if self.state is _State.IDLE:
            if score < self._on:
                return None
            self.state, self._since_ns = _State.RISING, t_ns
        if self.state is _State.RISING:
            if score < self._on:
                self.state = _State.IDLE
                return None
            if t_ns - self._since_ns < self._min_ns:
                return None
            return self._emit("start", score, t_ns, _State.ACTIVE)
        # ACTIVE
        if score < self._off:
            return self.end(score, t_ns)
        if t_ns - self._last_emit_ns >= self._update_ns:
            return self._emit("update", score, t_ns, _State.ACTIVE)
        return None

    def end(self, score: float, t_ns: int) -> Transition | None:
        """Close an active event (also used at shutdown so no event stays open)."""
        if self.state is not _State.ACTIVE:
            self.state = _State.IDLE if self.state is _State.RISING else self.state
            return None
        tr = self._emit("end", score, t_ns, _State.COOLDOWN)
        self._since_ns = t_ns
        return tr

    def _emit(self, phase: Phase, score: float, t_ns: int, nxt: _State) -> Transition:
        self.state = nxt
        self._last_emit_ns = t_ns
        return Transition(self.cfg.name, phase, float(score), t_ns)
