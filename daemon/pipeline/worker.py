"""A stage thread: consume a bounded queue until it is closed and drained.

First-error capture: an exception in one item is logged and counted, never fatal, so a bad
frame cannot end a daemon that must run for months.  `heartbeat_ns` advances on every loop,
which is what the watchdog and /healthz read to tell a stalled pipeline from an idle one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Generic, TypeVar

from perceptd.daemon.pipeline.queues import BoundedQueue

T = TypeVar("T")
log = logging.getLogger(__name__)


class Worker(Generic[T]):
    name = "worker"
    batch = 1
    batch_wait_s = 0.0

    def __init__(self, inbox: BoundedQueue[T]) -> None:
        self.inbox = inbox
        self._thread: threading.Thread | None = None
        self.heartbeat_ns = time.monotonic_ns()
        self.items = 0
        self.errors = 0
        self.busy_s = 0.0  # time spent processing (per-stage cost, fps)
        self.last_error = ""
        self.paused = threading.Event()  # test hook: a deliberately stalled stage

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            while self.paused.is_set():
                time.sleep(0.05)
            self.heartbeat_ns = time.monotonic_ns()
            items = self.inbox.get_batch(self.batch, self.batch_wait_s, timeout=0.1)
            if not items:
                if self.inbox.closed:
                    break
                self.idle()
                continue
            t0 = time.perf_counter()
            try:
                self.process(items)
            except Exception as exc:  # noqa: BLE001 - first-error capture, keep serving
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("event=stage_error stage=%s", self.name)
            self.busy_s += time.perf_counter() - t0
            self.items += len(items)
        self.finish()

    def process(self, items: list[T]) -> None:
        raise NotImplementedError

    def idle(self) -> None:
        """Called when nothing arrived for 0.1 s."""

    def finish(self) -> None:
        """Called once after the inbox closed and drained."""

    def stats(self) -> dict[str, Any]:
        return {"items": self.items, "errors": self.errors, "busy_s": round(self.busy_s, 3),
                "last_error": self.last_error}
