"""What every capture source shares: the items it emits, its state machine, stats, backoff.

A source owns one thread that captures, stamps each item with ``time.monotonic_ns()`` and
offers it to its ``Sink`` (in the daemon, the stage's queue; the source knows nothing of the
pipeline). Capture never waits on the pipeline (a full live queue drops its oldest item), and
the pipeline never waits on capture (a hung device read only stalls that source's own thread).
State changes (up / reconnecting / down) go to ``on_state``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

SOURCE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # pattern for source ids in configs
SAMPLE_RATE = 16_000
CHUNK_SAMPLES = 512  # 32 ms: Silero VAD's chunk at 16 kHz


class Sink(Protocol):
    """Where a source hands what it captured (pipeline.queues.BoundedQueue is one): `offer`
    never waits unless `wait` (a file replayed without loss) and the sink allows it; `stop`
    ends a wait. True when the item was taken."""

    @property
    def closed(self) -> bool: ...

    def offer(self, item: Any, *, wait: bool = False, stop: threading.Event | None = None) -> bool: ...


class ReconnectConfig(BaseModel):
    """Retry settings every reconnecting source shares (camera, microphone)."""

    model_config = ConfigDict(extra="forbid")

    backoff_initial_s: float = Field(default=0.5, gt=0, le=60, description="first reconnect delay")
    backoff_max_s: float = Field(default=10.0, gt=0, le=600, description="reconnect delay cap")
    down_after_failures: int = Field(
        default=5,
        ge=1,
        le=10_000,
        description="consecutive failures before the state is 'down' (retries continue)",
    )

    @model_validator(mode="after")
    def _check_backoff(self) -> ReconnectConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s}) must be >= "
                f"backoff_initial_s ({self.backoff_initial_s})"
            )
        return self


class SourceError(Exception):
    """A source that cannot work as configured (unreadable file, bad URI): one clear line."""


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One camera frame: BGR uint8 HxWx3, stamped when ``read()`` returned it."""

    source_id: str
    seq: int
    t_capture_ns: int
    image: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class AudioChunk:
    """512 float32 mono samples at 16 kHz; ``t_capture_ns`` is the time of the LAST sample."""

    source_id: str
    seq: int
    t_capture_ns: int
    pcm: np.ndarray


class SourceState(StrEnum):
    UP = "up"
    RECONNECTING = "reconnecting"
    DOWN = "down"


StateCallback = Callable[[str, SourceState, str], None]


@dataclass(slots=True)
class SourceStats:
    """Counters of one source; ``Source.stats`` hands out copies (safe to read anywhere)."""

    captured: int = 0  # items offered to the queue (frames or chunks)
    skipped_rate: int = 0  # frames read but not pushed because of the fps limit
    reconnects: int = 0  # successful re-opens after a failure
    open_failures: int = 0
    read_errors: int = 0  # reads that failed or timed out on an open stream
    overflows: int = 0  # device-side overflows (audio input_overflow flags)
    state: SourceState = SourceState.DOWN
    last_error: str = ""  # the open problem; cleared when data flows again
    last_error_at: str = ""  # its UTC time (ISO 8601), "" when there is none
    last_capture_ns: int = 0  # monotonic stamp of the newest item; 0 = none yet
    started_ns: int = 0  # monotonic time the source was started
    first_capture_ns: int = 0  # monotonic stamp of the first item (time to first frame)

    @property
    def first_capture_after_s(self) -> float | None:
        """Seconds from start to the first item (a stream without keyframes takes long)."""
        if not (self.first_capture_ns and self.started_ns):
            return None
        return round((self.first_capture_ns - self.started_ns) / 1e9, 3)


class Backoff:
    """Capped exponential backoff: initial, initial*factor, ... up to maximum.

    ``jitter`` in [0, 1] shortens each delay by a random fraction up to that much, so that
    sources that failed together do not retry in lockstep. ``reset()`` after a success.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        factor: float = 2.0,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not (0 < initial <= maximum) or factor < 1 or not 0 <= jitter <= 1:
            raise ValueError(
                f"bad backoff: initial={initial} maximum={maximum} factor={factor} jitter={jitter}"
            )
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self._rng = rng or random.Random()
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        delay = min(self.maximum, self.initial * self.factor**self.failures)
        self.failures += 1
        if self.jitter:
            delay *= 1.0 - self.jitter * self._rng.random()
        return delay

    def reset(self) -> None:
        self.failures = 0


class Source:
    """Base of all capture sources: thread lifecycle, state machine, stats, emitting.

    Subclasses implement ``_run()`` (the capture loop, returning when ``self._stop`` is set
    or the source is gone for good) and may override ``_interrupt()`` to unblock a capture
    call when ``stop()`` is requested.
    """

    kind = "source"

    def __init__(
        self, source_id: str, out: Sink, on_state: StateCallback | None = None
    ) -> None:
        self.source_id = source_id
        self.out = out
        self._on_state = on_state
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stats = SourceStats()
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._failures = 0  # consecutive failed opens/reads
        self._ever_up = False
        # sees every item offered downstream, before the queue (the recorder: it must not block)
        self.tap: Callable[[Any], None] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.kind} {self.source_id}: already started")
        self._stats.started_ns = time.monotonic_ns()
        self._thread = threading.Thread(
            target=self._main, name=f"{self.kind}-{self.source_id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to end and join it; False if it is still stuck after ``timeout``.

        A thread stuck in a device call is a daemon thread: it is abandoned, never joined
        forever, and cannot keep the process alive.
        """
        self._stop.set()
        self._interrupt()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        alive = self._thread.is_alive()
        if alive:
            log.warning(
                "event=source_stop_timeout source=%s timeout_s=%.1f", self.source_id, timeout
            )
        return not alive

    def wait_finished(self, timeout: float | None = None) -> bool:
        """True once the capture thread has ended (e.g. a file without loop reached its end)."""
        if self._thread is None:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _main(self) -> None:
        try:
            self._run()
        except Exception as exc:  # first-error capture: a source never takes the daemon down
            log.exception("event=source_crashed source=%s", self.source_id)
            self._error(f"crashed: {exc.__class__.__name__}: {exc}")
            self._set_state(SourceState.DOWN, "crashed")
            return
        if self._stop.is_set():
            self._set_state(SourceState.DOWN, "stopped")

    def _run(self) -> None:
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Unblock a pending capture call so that stop() is quick (override where possible)."""

    # -- state and stats -----------------------------------------------------------------
    @property
    def state(self) -> SourceState:
        return self._stats.state

    @property
    def stats(self) -> SourceStats:
        with self._lock:
            return dataclasses.replace(self._stats)

    def _set_state(self, state: SourceState, reason: str) -> None:
        with self._lock:
            if self._stats.state == state:
                return
            old, self._stats.state = self._stats.state, state
        log.info(
            "event=source_state source=%s kind=%s from=%s to=%s reason=%r",
            self.source_id, self.kind, old, state, reason,
        )
        if self._on_state is not None:
            try:
                self._on_state(self.source_id, state, reason)
            except Exception:  # a faulty listener must not kill capture
                log.exception("event=on_state_failed source=%s", self.source_id)

    def _mark_up(self, backoff: Backoff, reason: str) -> None:
        """Data flows again: count a reconnect (if it had been up before), reset backoff."""
        if self._failures and self._ever_up:
            self._count("reconnects")
        self._failures = 0
        self._ever_up = True
        backoff.reset()
        with self._lock:  # the problem is over: status and health stop showing it
            self._stats.last_error = self._stats.last_error_at = ""
        self._set_state(SourceState.UP, reason)

    def _fail(self, reason: str, down_after_failures: int) -> None:
        """One more consecutive failure: reconnecting, or down after too many in a row."""
        self._failures += 1
        gone = self._failures >= down_after_failures
        log.warning(
            "event=source_failure source=%s kind=%s reason=%r failures=%d error=%r",
            self.source_id, self.kind, reason, self._failures, self._stats.last_error,
        )
        self._set_state(SourceState.DOWN if gone else SourceState.RECONNECTING, reason)

    def _count(self, field: str, n: int = 1) -> None:
        with self._lock:
            setattr(self._stats, field, getattr(self._stats, field) + n)

    def _error(self, message: str, field: str | None = None) -> None:
        with self._lock:
            self._stats.last_error = message
            self._stats.last_error_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if field is not None:
                setattr(self._stats, field, getattr(self._stats, field) + 1)

    def _next_seq(self, t_capture_ns: int) -> int:
        """Allocate the next item's seq and count it as captured (+1 per item, no gaps)."""
        with self._lock:
            seq = self._seq
            self._seq += 1
            self._stats.captured += 1
            self._stats.last_capture_ns = t_capture_ns
            if not self._stats.first_capture_ns:
                self._stats.first_capture_ns = t_capture_ns
        return seq

    def _offer(self, item: Any, wait: bool = False) -> bool:
        """Hand an item to the sink. Live capture never waits (``wait=False``); replay
        (``wait=True``) may wait for room, and stop() still ends it. True when it was taken."""
        tap = self.tap
        if tap is not None:
            try:
                tap(item)
            except Exception:  # a recorder must never cost capture
                log.exception("event=source_tap_failed source=%s", self.source_id)
        return self.out.offer(item, wait=wait, stop=self._stop)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True when a stop was requested."""
        return self._stop.wait(max(0.0, seconds))
