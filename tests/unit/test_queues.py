"""BoundedQueue: overflow policies, batching deadlines, close semantics, thread safety."""

from __future__ import annotations

import math
import threading
import time

import pytest

from perceptd.daemon.pipeline.queues import BoundedQueue


def _balanced(q: BoundedQueue) -> bool:
    return q.put_total == q.get_total + q.depth + sum(q.dropped_total.values())


def _drain(q: BoundedQueue) -> list:
    out = []
    while (item := q.get(timeout=0)) is not None:
        out.append(item)
    return out


def test_drop_oldest_keeps_the_newest_and_counts_evictions() -> None:
    q: BoundedQueue[int] = BoundedQueue("t", 3, "drop_oldest")
    assert all(q.put(i) for i in range(5))
    assert q.depth == 3
    assert q.dropped_total == {"overflow": 2, "closed": 0}
    assert _drain(q) == [2, 3, 4]
    assert q.put_total == 5 and q.get_total == 3 and _balanced(q)


def test_drop_newest_refuses_when_full() -> None:
    q: BoundedQueue[int] = BoundedQueue("t", 2, "drop_newest")
    assert [q.put(i) for i in range(4)] == [True, True, False, False]
    assert _drain(q) == [0, 1]
    assert q.dropped_total["overflow"] == 2 and _balanced(q)


def test_block_put_times_out_and_counts_it() -> None:
    q: BoundedQueue[int] = BoundedQueue("t", 1, "block")
    assert q.put(0)
    t0 = time.monotonic()
    assert q.put(1, timeout=0.05) is False
    assert 0.045 <= time.monotonic() - t0 < 1.0
    assert q.dropped_total["overflow"] == 1 and _balanced(q)


def test_block_put_waits_for_room() -> None:
    q: BoundedQueue[int] = BoundedQueue("t", 1, "block")
    q.put(0)
    threading.Timer(0.05, q.get).start()
    t0 = time.monotonic()
    assert q.put(1, timeout=2.0)
    assert 0.04 <= time.monotonic() - t0 < 1.5
    assert q.get(timeout=0) == 1
    assert q.dropped_total == {"overflow": 0, "closed": 0}


def test_close_wakes_a_blocked_producer() -> None:
    q: BoundedQueue[int] = BoundedQueue("t", 1, "block")
    q.put(0)
    threading.Timer(0.05, q.close).start()
    t0 = time.monotonic()
    assert q.put(1, timeout=None) is False  # no deadline: only close can end this
    assert time.monotonic() - t0 < 1.5
    assert q.dropped_total["closed"] == 1


def test_close_wakes_a_waiting_consumer() -> None:
    q: BoundedQueue[int] = BoundedQueue("t", 4, "drop_oldest")
    threading.Timer(0.05, q.close).start()
    t0 = time.monotonic()
    assert q.get(timeout=None) is None
    assert q.get_batch(4, 0.01, timeout=math.inf) == []
    assert time.monotonic() - t0 < 1.5


def test_close_drains_remaining_items_then_none() -> None:
    q: BoundedQueue[str] = BoundedQueue("t", 4, "drop_oldest")
    q.put("a")
    q.put("b")
    q.close()
    assert q.closed
    assert q.put("c") is False
    assert q.dropped_total["closed"] == 1
    assert q.get(timeout=1) == "a"
    assert q.get_batch(8, 1.0) == ["b"]  # closed: no waiting for a fuller batch
    t0 = time.monotonic()
    assert q.get(timeout=5) is None
    assert time.monotonic() - t0 < 0.1
    assert _balanced(q)


def test_get_times_out_with_none() -> None:
    q: BoundedQueue[int] = BoundedQueue("t", 2, "block")
    t0 = time.monotonic()
    assert q.get(timeout=0.05) is None
    assert 0.045 <= time.monotonic() - t0 < 1.0


def test_wait_for_room_does_not_count_as_an_offer() -> None:
    q: BoundedQueue[int] = BoundedQueue("t", 1, "block")
    q.put(0)
    assert q.wait_for_room(0.02) is False
    assert q.put_total == 1 and q.dropped_total["overflow"] == 0
    q.get(timeout=0)
    assert q.wait_for_room(0)


def test_get_batch_returns_at_once_when_full() -> None:
    q: BoundedQueue[int] = BoundedQueue("t", 16, "block")
    for i in range(10):
        q.put(i)
    t0 = time.monotonic()
    assert q.get_batch(4, 5.0) == [0, 1, 2, 3]
    assert time.monotonic() - t0 < 0.1
    assert q.depth == 6


def test_get_batch_partial_after_max_wait_from_first_arrival() -> None:
    q: BoundedQueue[int] = BoundedQueue("t", 16, "block")
    q.put(0)
    threading.Timer(0.03, q.put, args=(1,)).start()
    t0 = time.monotonic()
    batch = q.get_batch(8, 0.15)
    waited = time.monotonic() - t0
    assert batch == [0, 1]  # the item that came during the wait joins the batch
    assert 0.13 <= waited < 0.6


def test_get_batch_deadline_counts_from_when_the_item_arrived() -> None:
    q: BoundedQueue[int] = BoundedQueue("t", 16, "block")
    q.put(0)
    time.sleep(0.12)  # the item already waited longer than max_wait_s
    t0 = time.monotonic()
    assert q.get_batch(8, 0.1) == [0]
    assert time.monotonic() - t0 < 0.05


def test_get_batch_empty_on_timeout() -> None:
    q: BoundedQueue[int] = BoundedQueue("t", 4, "block")
    t0 = time.monotonic()
    assert q.get_batch(4, 0.02) == []  # timeout defaults to max_wait_s
    assert q.get_batch(4, 0.01, timeout=0.05) == []
    assert 0.065 <= time.monotonic() - t0 < 1.0


def test_get_batch_fills_when_items_arrive_during_the_wait() -> None:
    q: BoundedQueue[int] = BoundedQueue("t", 16, "block")

    def produce() -> None:
        for i in range(4):
            q.put(i)
            time.sleep(0.005)

    threading.Thread(target=produce).start()
    t0 = time.monotonic()
    assert q.get_batch(4, 2.0, timeout=2.0) == [0, 1, 2, 3]
    assert time.monotonic() - t0 < 1.0  # returned when full, not at the 2 s deadline


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        BoundedQueue("t", 0, "block")
    with pytest.raises(ValueError, match="policy"):
        BoundedQueue("t", 1, "drop_random")  # type: ignore[arg-type]
    q: BoundedQueue[int | None] = BoundedQueue("t", 1, "block")
    with pytest.raises(ValueError, match="None"):
        q.put(None)
    with pytest.raises(ValueError, match="max_items"):
        q.get_batch(0, 0.1)


def test_stats_snapshot() -> None:
    q: BoundedQueue[int] = BoundedQueue("vision", 2, "drop_oldest")
    for i in range(3):
        q.put(i)
    q.get(timeout=0)
    s = q.stats()
    assert (s.name, s.policy, s.maxsize, s.depth) == ("vision", "drop_oldest", 2, 1)
    assert (s.put_total, s.get_total, s.dropped_total["overflow"], s.closed) == (3, 1, 1, False)
    s.dropped_total["overflow"] = 99  # a copy: the queue's counters are untouched
    assert q.dropped_total["overflow"] == 1


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_concurrent_lossy_queue_accounts_for_every_item(policy: str) -> None:
    q: BoundedQueue[tuple[int, int]] = BoundedQueue("t", 8, policy)  # type: ignore[arg-type]
    n_prod, per = 4, 3000
    got: list[list[tuple[int, int]]] = [[], []]  # one list per consumer, in pop order
    done = threading.Event()

    def produce(p: int) -> None:
        for i in range(per):
            q.put((p, i))

    def consume(c: int) -> None:
        while True:
            n = 5 if c == 0 else 1  # one batching consumer, one taking single items
            batch = q.get_batch(n, 0.001 * n, timeout=0.05)
            got[c].extend(batch)
            if not batch and done.is_set():
                return

    consumers = [threading.Thread(target=consume, args=(c,)) for c in range(2)]
    producers = [threading.Thread(target=produce, args=(p,)) for p in range(n_prod)]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join(timeout=30)
    done.set()
    for t in consumers:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in consumers + producers)
    everything = got[0] + got[1]
    assert q.put_total == n_prod * per
    assert len(everything) == len(set(everything)) == q.get_total  # nothing delivered twice
    assert q.depth == 0 and _balanced(q)
    for items in got:  # FIFO: each consumer sees each producer's items in order
        for p in range(n_prod):
            seq = [i for (pp, i) in items if pp == p]
            assert seq == sorted(seq)


def test_concurrent_block_queue_loses_nothing_and_keeps_order() -> None:
    q: BoundedQueue[tuple[int, int]] = BoundedQueue("t", 4, "block")
    n_prod, per = 3, 2000
    got: list[tuple[int, int]] = []

    def produce(p: int) -> None:
        for i in range(per):
            assert q.put((p, i), timeout=10)

    def consume() -> None:
        while (item := q.get(timeout=5)) is not None:
            got.append(item)

    consumer = threading.Thread(target=consume)
    producers = [threading.Thread(target=produce, args=(p,)) for p in range(n_prod)]
    consumer.start()
    for t in producers:
        t.start()
    for t in producers:
        t.join(timeout=30)
    q.close()
    consumer.join(timeout=30)
    assert not consumer.is_alive()
    assert len(got) == n_prod * per
    assert sum(q.dropped_total.values()) == 0 and _balanced(q)
    for p in range(n_prod):
        assert [i for (pp, i) in got if pp == p] == list(range(per))


# ---------------------------------------------------------------- latest, max_age (live frames)


def test_latest_keeps_the_newest_item_per_key_and_counts_the_superseded() -> None:
    q: BoundedQueue[tuple[str, int]] = BoundedQueue("t", 4, "latest", key=lambda it: it[0])
    for item in [("cam0", 0), ("cam1", 0), ("cam0", 1), ("cam0", 2), ("cam1", 1)]:
        assert q.put(item)
    # one per camera, in the order their newest arrived
    assert _drain(q) == [("cam0", 2), ("cam1", 1)]
    assert q.dropped_total == {"overflow": 0, "closed": 0, "superseded": 3} and _balanced(q)


def test_latest_full_of_other_keys_drops_the_oldest() -> None:
    q: BoundedQueue[tuple[str, int]] = BoundedQueue("t", 2, "latest", key=lambda it: it[0])
    for cam in ("a", "b", "c"):
        q.put((cam, 0))
    assert _drain(q) == [("b", 0), ("c", 0)]
    assert q.dropped_total["overflow"] == 1 and _balanced(q)


def test_stale_items_are_dropped_at_the_take_by_their_origin_stamp() -> None:
    now = time.monotonic()
    q: BoundedQueue[tuple[str, float]] = BoundedQueue("t", 8, "drop_oldest", max_age_s=0.5,
                                                      stamp=lambda it: it[1])
    q.put(("old", now - 2.0))  # captured 2 s ago: queued just now, stale all the same
    q.put(("fresh", now))
    assert q.oldest_stamp() == now  # the stale one no longer counts
    assert q.get_batch(8, 0.0) == [("fresh", now)]
    assert q.dropped_total["stale"] == 1 and _balanced(q)


def test_an_item_ageing_in_the_queue_goes_stale() -> None:
    q: BoundedQueue[str] = BoundedQueue("t", 8, "drop_oldest", max_age_s=0.05)
    q.put("a")
    time.sleep(0.1)
    assert q.get(timeout=0) is None
    assert q.dropped_total["stale"] == 1 and q.depth == 0 and _balanced(q)


def test_latest_needs_a_key_and_block_takes_no_age_limit() -> None:
    with pytest.raises(ValueError, match="needs a key"):
        BoundedQueue("t", 2, "latest")
    with pytest.raises(ValueError, match="not with 'block'"):
        BoundedQueue("t", 2, "block", max_age_s=1.0)


def test_put_many_counts_each_item_as_put_would() -> None:
    q: BoundedQueue[int] = BoundedQueue("t", 3, "drop_oldest")
    assert q.put_many([0, 1, 2, 3, 4]) == 5
    assert _drain(q) == [2, 3, 4] and q.dropped_total["overflow"] == 2 and _balanced(q)
    q2: BoundedQueue[int] = BoundedQueue("t", 2, "drop_newest")
    assert q2.put_many([0, 1, 2]) == 2 and _drain(q2) == [0, 1] and _balanced(q2)
    with pytest.raises(ValueError, match="None cannot be queued"):
        q.put_many([1, None])  # pyright: ignore[reportArgumentType]
    assert q.put_many([]) == 0


def test_put_many_into_a_full_block_queue_hands_over_what_it_queued_first() -> None:
    """A batch larger than the queue: the consumer must see the first items (woken before the
    producer waits for room), or producer and consumer would wait for each other."""
    q: BoundedQueue[int] = BoundedQueue("t", 2, "block")
    got: list[int] = []

    def consume() -> None:
        while (item := q.get(timeout=2)) is not None:
            got.append(item)

    t = threading.Thread(target=consume)
    t.start()
    assert q.put_many(list(range(10)), timeout=5) == 10
    t.join(timeout=10)
    assert got == list(range(10)) and _balanced(q)
