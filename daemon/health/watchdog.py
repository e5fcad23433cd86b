"""systemd watchdog fed by the pipeline's own heartbeats.

A timer thread that pinged unconditionally would keep a wedged daemon alive for ever.  This
thread sends WATCHDOG=1 only while every stage worker's `heartbeat_ns` is fresh (and the
caller's extra check passes), so a stalled stage stops the pings and systemd restarts the
unit after WatchdogSec.  The same tick samples the rate meters used for per-stage fps.

Test hook: with PERCEPTD_TEST_PAUSE_FILE set, a file at that path lists stage names (one
per line, `*` = all) whose `paused` Event is set while the file exists; nothing else reads it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from perceptd.daemon.health.report import HasHeartbeat, stalled_stages

log = logging.getLogger(__name__)

PAUSE_FILE_ENV = "PERCEPTD_TEST_PAUSE_FILE"


class Watchdog:
    def __init__(
        self,
        workers: Callable[[], Iterable[HasHeartbeat]],
        notify: Callable[[str], None],
        *,
        interval_s: float | None,
        stall_after_s: float,
        alive: Callable[[], bool] = lambda: True,
        status: Callable[[], str] | None = None,
        on_tick: Callable[[float], None] | None = None,
        pause_file: Path | None = None,
    ) -> None:
        """`interval_s`: ping period (half of WatchdogSec), None = no systemd watchdog (the
        thread still ticks for rates and stall logs); `alive`: other threads' liveness."""
        self._workers = workers
        self._notify = notify
        self.interval_s = interval_s
        self.stall_after_s = stall_after_s
        self._alive = alive
        self._status = status
        self._on_tick = on_tick
        self._pause_file = pause_file
        self.tick_s = min(0.5, interval_s / 2) if interval_s else 0.5
        self.pings = 0
        self.withheld = 0  # pings not sent because the pipeline was stalled
        self.stalled: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_ns = time.monotonic_ns()

    def start(self) -> None:
        self._started_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()
        log.info("event=watchdog_started interval_s=%s stall_after_s=%.1f",
                 self.interval_s, self.stall_after_s)

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        next_ping = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                self._apply_pause_hook()
                self._check(now)
                if self.interval_s and now >= next_ping:
                    self._ping()
                    next_ping = now + self.interval_s
                if self._on_tick is not None:
                    self._on_tick(now)
            except Exception:  # noqa: BLE001 - never let the watchdog thread die silently
                log.exception("event=watchdog_error")
            self._stop.wait(self.tick_s)

    def _check(self, now: float) -> None:
        ages = stalled_stages(list(self._workers()), self.stall_after_s, time.monotonic_ns(),
                              self._started_ns)
        stalled = sorted(n for n, s in ages.items() if s.stalled)
        if not self._alive():
            stalled.append("threads")
        if stalled != self.stalled:
            if stalled:
                log.error("event=pipeline_stalled stages=%s ages_s=%s", ",".join(stalled),
                          ",".join(f"{n}:{ages[n].heartbeat_age_s}" for n in stalled if n in ages))
            else:
                log.info("event=pipeline_recovered")
            self.stalled = stalled
            if self._status is not None:
                self._notify(f"STATUS={self._status()}")

    def _ping(self) -> None:
        if self.stalled:
            self.withheld += 1
            return
        self._notify("WATCHDOG=1")
        self.pings += 1

    def _apply_pause_hook(self) -> None:
        if self._pause_file is None:
            return
        try:
            names = set(self._pause_file.read_text().split())
        except OSError:
            names = set()
        for w in self._workers():
            paused = getattr(w, "paused", None)
            if paused is None:
                continue
            if "*" in names or w.name in names:
                paused.set()
            else:
                paused.clear()
