"""The daemon's lifecycle as a small state machine (it drives health, READY=1 and STATUS=)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum

log = logging.getLogger(__name__)


class State(StrEnum):
    INITIALIZING = "initializing"
    STARTING = "starting"
    RUNNING = "running"
    DEGRADED = "degraded"
    STOPPING = "stopping"
    STOPPED = "stopped"


_ALLOWED = {
    State.INITIALIZING: {State.STARTING, State.STOPPING},
    State.STARTING: {State.RUNNING, State.DEGRADED, State.STOPPING},
    State.RUNNING: {State.DEGRADED, State.STOPPING},
    State.DEGRADED: {State.RUNNING, State.STOPPING},
    State.STOPPING: {State.STOPPED},
    State.STOPPED: set(),
}


class Lifecycle:
    def __init__(self) -> None:
        self._state = State.INITIALIZING
        self._lock = threading.Lock()
        self._listeners: list[Callable[[State, State], None]] = []
        self.started_at = time.monotonic()

    @property
    def state(self) -> State:
        return self._state

    def on_change(self, fn: Callable[[State, State], None]) -> None:
        self._listeners.append(fn)

    def to(self, new: State) -> bool:
        """Move to `new` if allowed; returns False (and stays) otherwise."""
        with self._lock:
            old = self._state
            if new == old or new not in _ALLOWED[old]:
                return False
            self._state = new
        log.info("event=lifecycle from=%s to=%s", old, new)
        for fn in self._listeners:
            fn(old, new)
        return True

    def uptime_s(self) -> float:
        return time.monotonic() - self.started_at
