"""Hysteresis: start/update/end phases, minimum duration, cooldown, no chatter."""

from __future__ import annotations

import pytest

from perceptd.daemon.events.config import EventConfig
from perceptd.daemon.events.decoder import NS, EventDecoder


def _cfg(**kw) -> EventConfig:
    base = dict(name="e", prompts=["x"], modalities=["text"], threshold_on=0.6,
                threshold_off=0.4, min_duration_s=0.0, cooldown_s=1.0, update_interval_s=0.5)
    base.update(kw)
    return EventConfig(**base)


def _run(dec: EventDecoder, series: list[tuple[float, float]]) -> list[tuple[str, float]]:
    out = []
    for t, s in series:
        tr = dec.step(s, int(t * NS))
        if tr:
            out.append((tr.phase, t))
    return out


def test_start_update_end() -> None:
    dec = EventDecoder(_cfg())
    series = [(i * 0.1, s) for i, s in enumerate([0.1, 0.7, 0.7, 0.5, 0.7, 0.7, 0.7, 0.3, 0.3])]
    phases = _run(dec, series)
    assert [p for p, _ in phases] == ["start", "update", "end"]
    assert phases[0][1] == pytest.approx(0.1) and phases[-1][1] == pytest.approx(0.7)


def test_between_thresholds_holds_state() -> None:
    dec = EventDecoder(_cfg())
    assert _run(dec, [(0, 0.5), (0.1, 0.55)]) == []  # never reached on
    assert [p for p, _ in _run(dec, [(0.2, 0.65), (0.3, 0.45), (0.4, 0.45)])] == ["start"]


def test_min_duration_filters_blips() -> None:
    dec = EventDecoder(_cfg(min_duration_s=0.3))
    assert _run(dec, [(0, 0.9), (0.1, 0.9), (0.2, 0.1)]) == []
    phases = _run(dec, [(1.0, 0.9), (1.2, 0.9), (1.3, 0.9)])
    assert phases == [("start", 1.3)]


def test_cooldown_blocks_restart() -> None:
    dec = EventDecoder(_cfg(cooldown_s=1.0))
    phases = _run(dec, [(0, 0.9), (0.1, 0.1), (0.5, 0.9), (0.9, 0.9), (1.2, 0.9)])
    assert phases == [("start", 0), ("end", 0.1), ("start", 1.2)]


def test_end_at_shutdown() -> None:
    dec = EventDecoder(_cfg())
    dec.step(0.9, 0)
    tr = dec.end(0.9, 5)
    assert tr is not None and tr.phase == "end" and not dec.active
    assert dec.end(0.9, 6) is None
