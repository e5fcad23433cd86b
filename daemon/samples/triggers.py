"""When to log a sample: pure decisions on fusion outputs, plus rate caps.

Triggers (each on/off in config):
* low_confidence: an event's score within `band` of its threshold (the cases a label helps most);
* disagreement: among an event's present, allowed modalities one is confident (>= confident)
  while another contradicts it (<= contradicting);
* command: a command event starts -> its window's context, labelled with the command's event;
* label: an explicit `label` request for sample "now" -> the current context, labelled;
* random: a Poisson process at `random_per_hour` (the unbiased background of the data set).
A candidate is admitted only if its (trigger, event) has been quiet for `min_interval_s`
(explicit labels excepted) and the hourly caps (all triggers, per trigger) have room.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from perceptd.daemon.events.config import EventConfig
from perceptd.daemon.samples.config import TRIGGERS, CapsConfig, TriggersConfig

HOUR_S = 3600.0


@dataclass(frozen=True)
class Candidate:
    trigger: str  # one of TRIGGERS
    event: str | None  # the event concerned (None: random)
    label: str | None = None  # label given with the sample (command / explicit label)


class RateCaps:
    """Sliding one-hour windows: all triggers together, and per trigger."""

    def __init__(self, caps: CapsConfig, window_s: float = HOUR_S) -> None:
        self.total_cap = caps.per_hour
        self.per_trigger = dict(caps.per_trigger_per_hour)
        self.window_s = window_s
        self._all: deque[float] = deque()
        self._by: dict[str, deque[float]] = {t: deque() for t in TRIGGERS}

    def _trim(self, q: deque[float], now_s: float) -> None:
        while q and now_s - q[0] >= self.window_s:
            q.popleft()

    def allow(self, trigger: str, now_s: float) -> bool:
        q = self._by[trigger]
        self._trim(self._all, now_s)
        self._trim(q, now_s)
        cap = self.per_trigger.get(trigger)
        if len(self._all) >= self.total_cap or (cap is not None and len(q) >= cap):
            return False
        self._all.append(now_s)
        q.append(now_s)
        return True


def disagreement(modality_scores: np.ndarray, use: np.ndarray, confident: float,
                 contradicting: float) -> bool:
    """One used modality at/above `confident` and another at/below `contradicting`."""
    used = modality_scores[use > 0]
    return used.size >= 2 and float(used.max()) >= confident and float(used.min()) <= contradicting


class TriggerPolicy:
    """Decides which fusion outcomes become samples; keeps its own counters."""

    def __init__(self, cfg: TriggersConfig, caps: CapsConfig, events: list[EventConfig],
                 rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.caps = RateCaps(caps)
        self.events = {e.name: e for e in events}
        self.rng = rng or random.Random()
        self._last: dict[tuple[str, str | None], float] = {}
        self._next_random: float | None = None
        self.rejected: Counter[str] = Counter()  # "cap:<trigger>", "interval:<trigger>"

    def _low_confidence(self, event: EventConfig, score: float) -> bool:
        return self.cfg.low_confidence and abs(score - event.threshold_on) <= self.cfg.band

    def _disagree(self, modality_scores: np.ndarray, use: np.ndarray) -> bool:
        return self.cfg.disagreement and disagreement(
            modality_scores, use, self.cfg.confident, self.cfg.contradicting)

    def on_start(self, name: str, score: float, modality_scores: np.ndarray,
                 use: np.ndarray) -> Candidate | None:
        """An event just started: a command labels its context; others may be uncertain."""
        event = self.events.get(name)
        if event is None:
            return None
        if event.kind == "command":
            return Candidate("command", name, name) if self.cfg.command else None
        return self.assess(name, score, modality_scores, use)

    def assess(self, name: str, score: float, modality_scores: np.ndarray,
               use: np.ndarray) -> Candidate | None:
        """Per evaluation: is this event's current evidence worth a label?"""
        event = self.events.get(name)
        if event is None:
            return None
        if self._low_confidence(event, score):
            return Candidate("low_confidence", name)
        if self._disagree(modality_scores, use):
            return Candidate("disagreement", name)
        return None

    def random_due(self, now_s: float) -> bool:
        rate = self.cfg.random_per_hour
        if rate <= 0:
            return False
        if self._next_random is None:
            self._next_random = now_s + self.rng.expovariate(rate / HOUR_S)
            return False
        if now_s < self._next_random:
            return False
        self._next_random = now_s + self.rng.expovariate(rate / HOUR_S)
        return True

    def quiet(self, c: Candidate, now_s: float) -> bool:
        """True if this (trigger, event) has been quiet long enough (labels are never held)."""
        if c.trigger == "label":
            return True
        last = self._last.get((c.trigger, c.event))
        return last is None or now_s - last >= self.cfg.min_interval_s

    def admit(self, c: Candidate, now_s: float) -> bool:
        if not self.quiet(c, now_s):
            self.rejected[f"interval:{c.trigger}"] += 1
            return False
        if not self.caps.allow(c.trigger, now_s):
            self.rejected[f"cap:{c.trigger}"] += 1
            return False
        self._last[(c.trigger, c.event)] = now_s
        return True
