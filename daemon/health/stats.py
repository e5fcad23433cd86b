"""Counters the pipeline owns and the exporters read: histograms and rate meters.

No Prometheus here: stages and the publisher count into these plain objects (cheap, no
globals), and /metrics, `perceptd status` or a test read consistent snapshots on demand.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

# seconds; inference of one batch on a CPU edge box spans ~0.2 ms (fusion) to ~1 s (a big batch)
INFERENCE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# capture -> publish: a frame is ~10-100 ms old when published; fused events wait for windows
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]  # upper bounds, +Inf implied
    cumulative: tuple[int, ...]  # len(bounds) + 1 counts, the last one is the total
    sum: float
    count: int

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (None when empty or in +Inf)."""
        if not self.count:
            return None
        rank = q * self.count
        for bound, c in zip(self.bounds, self.cumulative, strict=False):
            if c >= rank:
                return bound
        return None


class Histogram:
    """Fixed buckets; observe() is O(log buckets) under an uncontended lock."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"bucket bounds must increase strictly: {bounds}")
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cum, run = [], 0
        for c in counts:
            run += c
            cum.append(run)
        return HistogramSnapshot(self.bounds, tuple(cum), total, run)


class HistogramSet:
    """Histograms keyed by a label tuple, created on first use (labels are few and bounded)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._items: dict[tuple[str, ...], Histogram] = {}
        self._lock = threading.Lock()

    def observe(self, key: tuple[str, ...], value: float) -> None:
        h = self._items.get(key)
        if h is None:
            with self._lock:
                h = self._items.setdefault(key, Histogram(self.bounds))
        h.observe(value)

    def snapshots(self) -> dict[tuple[str, ...], HistogramSnapshot]:
        with self._lock:
            items = list(self._items.items())
        return {k: h.snapshot() for k, h in items}


class ModelTimings:
    """Inference time per (model, provider), owned by the stage that calls the models.

    The provider is read from the ModelSet the call used, so a hot swap to a bundle on
    another provider shows up as a new series instead of polluting the old one.
    """

    def __init__(self) -> None:
        self.histograms = HistogramSet(INFERENCE_BUCKETS_S)
        self._models: Any = None
        self._providers: dict[str, str] = {}

    def observe(self, model: str, models: Any, seconds: float) -> None:
        if models is not self._models:
            try:
                self._providers = dict(models.providers())
            except Exception:  # noqa: BLE001 - a stand-in model set without providers()
                self._providers = {}
            self._models = models
        provider = self._providers.get(model, "unknown").removesuffix("ExecutionProvider")
        self.histograms.observe((model, provider), seconds)


class RateMeter:
    """Items per second over a sliding window of (time, counter) samples."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()

    def sample(self, t: float, value: float) -> None:
        self._samples.append((t, value))
        while len(self._samples) > 2 and t - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, v0), (t1, v1) = self._samples[0], self._samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0


class Rates:
    """Named rate meters sampled together (the watchdog thread ticks them)."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._meters: dict[str, RateMeter] = {}
        self._lock = threading.Lock()

    def sample(self, t: float, values: dict[str, float]) -> None:
        with self._lock:
            for name, v in values.items():
                self._meters.setdefault(name, RateMeter(self.window_s)).sample(t, v)

    def get(self, name: str) -> float:
        with self._lock:
            m = self._meters.get(name)
            return m.rate() if m else 0.0
