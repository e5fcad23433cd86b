"""The console's view of the message stream: a bounded buffer fed by the publisher's tap.

`offer()` runs on the publisher thread after each send, so it only appends bytes the publisher
already encoded to a deque (O(1), no JSON, no lock held by a reader while it copies): the hot
path never waits for a browser.  Per-frame topics (vision, audio, face) are not buffered at all
while no page is connected; with one, only the newest of each source is kept.  Pages wait on a
condition for new items (Server-Sent Events), each with its own cursor into the sequence.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

# topics worth a history (the Live list and the Timeline); the rest are "newest per source"
_HISTORY = ("event.", "command", "speech")


@dataclass(frozen=True, slots=True)
class Item:
    n: int  # position in the feed (a page's cursor)
    topic: str
    body: bytes  # the published JSON, as sent


class Feed:
    def __init__(self, size: int) -> None:
        self._items: deque[Item] = deque(maxlen=size)
        self._latest: dict[str, bytes] = {}  # newest per-frame message per topic, only while watched
        self._n = 0
        self._cond = threading.Condition()
        self.watchers = 0
        self.closed = False

    def offer(self, topic: str, body: bytes) -> None:
        """Publisher thread: never blocks for long (the condition is held only to append)."""
        if topic.startswith(_HISTORY):
            with self._cond:
                self._n += 1
                self._items.append(Item(self._n, topic, body))
                if self.watchers:
                    self._cond.notify_all()
        elif self.watchers and topic != "health":
            self._latest[topic] = body  # one reference assignment

    @property
    def cursor(self) -> int:
        return self._n

    def recent(self, after: int = 0) -> list[Item]:
        with self._cond:
            items = list(self._items)
        return [i for i in items if i.n > after]

    def latest(self) -> dict[str, bytes]:
        return dict(self._latest)

    def wait(self, after: int, timeout: float) -> list[Item]:
        """Items newer than `after`, waiting up to `timeout` for the first one."""
        with self._cond:
            if self._n <= after and not self.closed:
                self._cond.wait(timeout)
            if self._n <= after:
                return []
            items = list(self._items)
        return [i for i in items if i.n > after]

    def watch(self) -> None:
        with self._cond:
            self.watchers += 1

    def unwatch(self) -> None:
        with self._cond:
            self.watchers = max(0, self.watchers - 1)
            if not self.watchers:
                self._latest.clear()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
