"""Stage workers with several consumer threads: parallel work, outputs in input order."""

from __future__ import annotations

import threading
import time

from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.pipeline.worker import Worker


class _Sleepy(Worker[int]):
    """Batches whose work takes longer for lower numbers, so they finish out of order."""

    name = "sleepy"
    batch = 2

    def __init__(self, inbox: BoundedQueue[int], threads: int) -> None:
        super().__init__(inbox)
        self.threads = threads
        self.out: list[int] = []
        self.finished = 0
        self.active = 0
        self.peak = 0
        self._count = threading.Lock()

    def process(self, items: list[int]) -> None:
        with self._count:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.02 if items[0] % 4 == 0 else 0.002)  # sleeping releases the GIL, as ORT does
        with self._count:
            self.active -= 1
        if 13 in items:
            raise ValueError("a bad item")
        with self.in_order():
            self.out.extend(items)

    def finish(self) -> None:
        self.finished += 1


def _run(threads: int) -> _Sleepy:
    q: BoundedQueue[int] = BoundedQueue("in", 64, "block")
    for i in range(40):  # queued first, so every batch is a full pair: (12, 13) fails
        assert q.put(i, timeout=5.0)
    q.close()
    w = _Sleepy(q, threads)
    w.start()
    assert w.join(10.0), "worker threads did not end"
    return w


def test_threads_run_batches_in_parallel_and_emit_in_input_order() -> None:
    w = _run(threads=3)
    assert w.peak >= 2  # batches really overlapped
    failed = {12, 13}  # the batch holding 13 raised before emitting: it is skipped, not a hang
    assert w.out == [i for i in range(40) if i not in failed]
    assert w.errors == 1 and "bad item" in w.last_error
    assert w.items == 40
    assert w.finished == 1  # finish() once, by the last thread out


def test_one_thread_behaves_as_before() -> None:
    w = _run(threads=1)
    assert w.peak == 1
    assert w.out == [i for i in range(40) if i not in (12, 13)]
    assert w.finished == 1
