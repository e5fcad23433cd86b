"""A stage thread: consume a bounded queue until it is closed and drained.

First-error capture: an exception in one item is logged and counted, never fatal, so a bad
frame cannot end a daemon that must run for months.  `heartbeat_ns` advances on every loop,
which is what the watchdog and /healthz read to tell a stalled pipeline from an idle one.

A stage whose work releases the GIL (ONNX Runtime inference) may run `threads` > 1 consumers
on its inbox: batches are taken one at a time and numbered, computed in parallel, and
`in_order()` lets each batch emit its outputs only after the batches taken before it, so
subscribers and fusion see every source's items in capture order whatever the thread count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from perceptd.daemon.health.stats import ModelTimings
from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.priority import lower_priority

T = TypeVar("T")
log = logging.getLogger(__name__)


class Worker(Generic[T]):
    name = "worker"
    batch = 1
    batch_wait_s = 0.0
    threads = 1  # consumer threads on the inbox
    nice = 0  # scheduling niceness of this stage's threads (priority.lower_priority)

    def __init__(self, inbox: BoundedQueue[T]) -> None:
        self.inbox = inbox
        self._thread: threading.Thread | None = None  # the first of self._threads
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()  # counters shared by this stage's threads
        self._take = threading.Lock()  # one thread forms a batch at a time
        self._turn = threading.Condition()
        self._taken = 0  # batches taken (the next ticket)
        self._served = 0  # batches that have emitted their outputs
        self._local = threading.local()
        self._running = 0
        self.heartbeat_ns = time.monotonic_ns()
        self.items = 0
        self.errors = 0
        self.busy_s = 0.0  # time spent processing (per-stage cost, fps)
        self.last_error = ""
        self.paused = threading.Event()  # test hook: a deliberately stalled stage
        self.timings = ModelTimings()  # inference time per (model, provider), for /metrics

    def start(self) -> None:
        n = max(1, int(self.threads))
        self._running = n
        self._threads = [
            threading.Thread(target=self._run, name=self.name if n == 1 else f"{self.name}-{i}", daemon=True)
            for i in range(n)
        ]
        self._thread = self._threads[0]
        for t in self._threads:
            t.start()

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.is_alive()

    def is_alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _run(self) -> None:
        lower_priority(self.nice, self.name)
        while True:
            while self.paused.is_set():
                time.sleep(0.05)
            self.heartbeat_ns = time.monotonic_ns()
            with self._take:
                items = self.inbox.get_batch(self.batch_limit(), self.batch_wait_s, timeout=0.1)
                ticket = self._taken
                self._taken += bool(items)
            if not items:
                if self.inbox.closed:
                    break
                self.idle()
                continue
            t0 = time.perf_counter()
            self._local.ticket, self._local.emitted = ticket, False
            try:
                self.process(items)
            except Exception as exc:  # noqa: BLE001 - first-error capture, keep serving
                with self._lock:
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("event=stage_error stage=%s", self.name)
            finally:
                if not self._local.emitted:  # a failed batch must not hold up the next ones
                    with self.in_order():
                        pass
            with self._lock:
                self.busy_s += time.perf_counter() - t0
                self.items += len(items)
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last:
            self.finish()

    @contextmanager
    def in_order(self) -> Iterator[None]:
        """Inside `process`: wait until every batch taken earlier has emitted, then emit."""
        ticket = self._local.ticket
        with self._turn:
            self._turn.wait_for(lambda: self._served >= ticket)
        try:
            yield
        finally:
            self._local.emitted = True
            with self._turn:
                self._served = ticket + 1
                self._turn.notify_all()

    def process(self, items: list[T]) -> None:
        raise NotImplementedError

    def batch_limit(self) -> int:
        """Items to take for the next batch (called with the take lock held); a stage with a
        deadline sizes it from what its queue holds and its measured service time."""
        return self.batch

    def idle(self) -> None:
        """Called when nothing arrived for 0.1 s."""

    def finish(self) -> None:
        """Called once after the inbox closed and drained."""

    def stats(self) -> dict[str, Any]:
        return {"items": self.items, "errors": self.errors, "busy_s": round(self.busy_s, 3),
                "last_error": self.last_error}
