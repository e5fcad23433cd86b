"""Bounded queues between pipeline stages, each with a declared overflow policy.

Every stage boundary is one of these so that a slow consumer can never grow memory or
stall a live source: live sources use ``drop_oldest`` (the freshest data wins) or ``latest``
(at most the newest item per key, e.g. per camera: a busy stage takes the newest frame of each
camera instead of working through a standing backlog), replay uses ``block`` (back-pressure,
nothing lost). A live queue may also declare ``max_age_s``: an item older than that when a
consumer would take it is dropped instead (reason "stale"). Every refused or evicted item is
counted, by reason.

Accounting invariant (checked by the tests): at any quiet moment
``put_total == get_total + depth + sum(dropped_total.values())``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

Policy = Literal["drop_oldest", "drop_newest", "block", "latest"]
# overflow: full; closed: offered after close; superseded: a newer item of the same key
# arrived first (latest); stale: older than max_age_s when a consumer would have taken it
DropReason = Literal["overflow", "closed", "superseded", "stale"]
_POLICIES: tuple[str, ...] = ("drop_oldest", "drop_newest", "block", "latest")


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A consistent snapshot for metrics and /healthz."""

    name: str
    policy: str
    maxsize: int
    depth: int
    put_total: int
    get_total: int
    dropped_total: dict[str, int]
    closed: bool


def _wait_s(timeout: float | None) -> float | None:
    """Condition.wait rejects inf; None means 'no deadline'."""
    if timeout is None or math.isinf(timeout):
        return None
    return max(0.0, timeout)


class BoundedQueue(Generic[T]):
    """A thread-safe FIFO of at most ``maxsize`` items with an overflow policy.

    ``put`` counts every offer in ``put_total``; an offer that is refused or an item that is
    evicted is counted in ``dropped_total[reason]`` ("overflow": the queue was full,
    including a ``block`` put that timed out; "closed": offered after ``close()``).
    ``None`` cannot be queued: it is the "nothing" answer of ``get``.

    ``latest`` needs ``key`` (an item's key, e.g. its source id): an offer replaces the queued
    item of the same key (counted "superseded") and joins the back; when full of other keys the
    oldest goes ("overflow").  ``max_age_s`` (not with ``block``: nothing may be lost there)
    ages items by ``stamp`` (monotonic seconds of the item's origin, e.g. its capture; default:
    when it was queued); a stale one is dropped at the consumer's take ("stale").
    """

    def __init__(self, name: str, maxsize: int, policy: Policy, *,
                 key: Callable[[T], Hashable] | None = None, max_age_s: float | None = None,
                 stamp: Callable[[T], float] | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"queue {name!r}: maxsize must be >= 1, got {maxsize}")
        if policy not in _POLICIES:
            raise ValueError(f"queue {name!r}: policy must be one of {_POLICIES}, got {policy!r}")
        if policy == "latest" and key is None:
            raise ValueError(f"queue {name!r}: policy 'latest' needs a key")
        if max_age_s is not None and (policy == "block" or max_age_s <= 0):
            raise ValueError(f"queue {name!r}: max_age_s must be > 0 and not with 'block'")
        self.name = name
        self.maxsize = maxsize
        self.policy: Policy = policy
        self.max_age_s = max_age_s
        self._key = key if policy == "latest" else None  # only `latest` coalesces by key
        self._stamp = stamp
        self._items: deque[tuple[float, T]] = deque()  # (monotonic enqueue time, item)
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._closed = False
        self.put_total = 0
        self.get_total = 0
        self.dropped_total: dict[str, int] = {"overflow": 0, "closed": 0}
        if policy == "latest":
            self.dropped_total["superseded"] = 0
        if max_age_s is not None:
            self.dropped_total["stale"] = 0

    # -- producer side -------------------------------------------------------------------
    def put(self, item: T, timeout: float | None = None) -> bool:
        """Offer an item; True when it was queued (``drop_oldest`` always queues if open).

        ``timeout`` only matters for ``block``: how long to wait for room (None: until room
        or close). Returns False when refused (full, timed out, or closed).
        """
        if item is None:
            raise ValueError(f"queue {self.name!r}: None cannot be queued")
        with self._lock:
            queued = self._put_locked(item, timeout)
            if queued:
                # notify_all: a batching consumer that keeps waiting must not swallow the wakeup
                self._not_empty.notify_all()
            return queued

    def put_many(self, items: list[T], timeout: float | None = None) -> int:
        """Offer several items in order under one lock and one wake-up of the consumers (a
        stage handing on a whole batch: a wake-up per item was the largest non-model cost in
        the profile); each is counted and judged as `put` would.  Returns how many were queued."""
        if any(it is None for it in items):
            raise ValueError(f"queue {self.name!r}: None cannot be queued")
        if not items:
            return 0
        with self._lock:
            queued = sum(self._put_locked(it, timeout) for it in items)
            if queued:
                self._not_empty.notify_all()
            return queued

    def _put_locked(self, item: T, timeout: float | None) -> bool:
        """One offer, lock held; the caller wakes the consumers when it returns True."""
        self.put_total += 1
        if self._closed:
            self.dropped_total["closed"] += 1
            return False
        if self._key is not None:
            self._supersede(self._key(item))
        if len(self._items) >= self.maxsize:
            if self.policy in ("drop_oldest", "latest"):
                self._items.popleft()
                self.dropped_total["overflow"] += 1
            elif self.policy == "drop_newest":
                self.dropped_total["overflow"] += 1
                return False
            else:
                self._not_empty.notify_all()  # what put_many queued so far must reach a consumer
                if not self._wait_for_room(timeout):
                    reason = "closed" if self._closed else "overflow"
                    self.dropped_total[reason] += 1
                    return False
        self._items.append((time.monotonic(), item))
        return True

    def _supersede(self, key: Hashable) -> None:
        """Called with the lock held (latest): drop the queued item of this key, if any."""
        assert self._key is not None
        for i, (_, old) in enumerate(self._items):
            if self._key(old) == key:
                del self._items[i]
                self.dropped_total["superseded"] += 1
                self._not_full.notify()
                return

    def _prune(self) -> None:
        """Called with the lock held: drop the items older than max_age_s (never blocks)."""
        if self.max_age_s is None or not self._items:
            return
        limit = time.monotonic() - self.max_age_s
        fresh = [(t, it) for t, it in self._items if self._origin(t, it) >= limit]
        if len(fresh) != len(self._items):
            self.dropped_total["stale"] += len(self._items) - len(fresh)
            self._items = deque(fresh)
            self._not_full.notify_all()

    def oldest_stamp(self) -> float | None:
        """Origin time (monotonic s, as `stamp` gives it) of the oldest queued item, or None:
        what a consumer sizing its batch to a deadline needs to know."""
        with self._lock:
            self._prune()
            if not self._items:
                return None
            return min(self._origin(t, it) for t, it in self._items)

    def _origin(self, queued_s: float, item: T) -> float:
        """An item's age reference: `stamp` (e.g. its capture), else when it was queued."""
        return self._stamp(item) if self._stamp is not None else queued_s

    def _wait_for_room(self, timeout: float | None) -> bool:
        """Called with the lock held (block policy); True when there is room and not closed."""
        return self._not_full.wait_for(
            lambda: self._closed or len(self._items) < self.maxsize, _wait_s(timeout)
        ) and not self._closed

    def offer(self, item: T, *, wait: bool = False, stop: threading.Event | None = None) -> bool:
        """A producer's hand-off (the `Sink` a source sees): never waits unless asked and this
        queue's policy is `block` (replay of a file: nothing lost); then waits for room in short
        steps, so `stop` or `close()` still ends it. True when the item was queued."""
        if not wait or self.policy != "block":
            return self.put(item, timeout=0)
        while not (stop is not None and stop.is_set()) and not self.closed:
            if self.wait_for_room(0.1):
                return self.put(item, timeout=1.0)
        return False

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Wait until a put would not block (or close); True when there is room.

        Lets a blocking producer wait in short steps (to notice its own stop request)
        without each step counting as a refused offer.
        """
        with self._lock:
            return self._not_full.wait_for(
                lambda: self._closed or len(self._items) < self.maxsize, _wait_s(timeout)
            ) and not self._closed

    # -- consumer side -------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> T | None:
        """Next item, or None after ``timeout`` (None: wait until an item or close).

        After ``close()`` the remaining items are still handed out, then None at once.
        """
        with self._lock:
            if not self._not_empty.wait_for(self._ready, _wait_s(timeout)) or not self._items:
                return None
            return self._pop_locked()

    def _ready(self) -> bool:
        """Wait predicate (lock held): a fresh item is queued, or the queue is closed."""
        self._prune()
        return bool(self._items) or self._closed

    def get_batch(
        self, max_items: int, max_wait_s: float, timeout: float | None = None
    ) -> list[T]:
        """Up to ``max_items`` items for one batched inference call.

        Returns as soon as ``max_items`` are queued, or ``max_wait_s`` after the oldest
        queued item arrived (so no item waits in a partial batch longer than that), or at
        close. ``timeout`` bounds the wait for the first item (None: ``max_wait_s``;
        ``math.inf``: until an item or close); on timeout the list is empty.
        """
        if max_items < 1:
            raise ValueError(f"queue {self.name!r}: max_items must be >= 1, got {max_items}")
        first_wait = max_wait_s if timeout is None else timeout
        with self._lock:
            if not self._not_empty.wait_for(self._ready, _wait_s(first_wait)):
                return []
            if self._items:
                deadline = self._items[0][0] + max_wait_s
                while len(self._items) < max_items and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._not_empty.wait(left)
            self._prune()
            n = min(max_items, len(self._items))
            return [self._pop_locked() for _ in range(n)]

    def _pop_locked(self) -> T:
        _, item = self._items.popleft()
        self.get_total += 1
        self._not_full.notify()
        return item

    # -- lifecycle and introspection -----------------------------------------------------
    def close(self) -> None:
        """Refuse new items and wake every waiter; queued items can still be drained."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def depth(self) -> int:
        return len(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> QueueStats:
        with self._lock:
            return QueueStats(
                name=self.name,
                policy=self.policy,
                maxsize=self.maxsize,
                depth=len(self._items),
                put_total=self.put_total,
                get_total=self.get_total,
                dropped_total=dict(self.dropped_total),
                closed=self._closed,
            )

    def __repr__(self) -> str:
        return (
            f"BoundedQueue(name={self.name!r}, policy={self.policy}, "
            f"depth={self.depth}/{self.maxsize}, dropped={self.dropped_total})"
        )
