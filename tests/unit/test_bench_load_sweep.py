"""The pure parts of `perceptd bench --pipeline --sweep-load`: the rates offered from a max rate
and one point's summary from a daemon run's figures (no daemon, no timing)."""

from __future__ import annotations

import pytest

from perceptd.bench.load_sweep import offered_rates, summarise_point


def test_offered_rates_share_the_load_between_streams() -> None:
    pts = offered_rates(120.0, 4, [25, 50, 75, 90])
    assert [p["fps_per_stream"] for p in pts] == [7.5, 15.0, 22.5, 27.0]
    assert [p["offered_fps"] for p in pts] == [30.0, 60.0, 90.0, 108.0]
    assert [p["load_pct"] for p in pts] == [25, 50, 75, 90]
    assert not any(p["clamped"] for p in pts)


def test_offered_rates_round_to_a_tenth_and_stay_within_a_cameras_range() -> None:
    (p,) = offered_rates(133.3, 1, [75])
    assert p["fps_per_stream"] == 100.0 and not p["clamped"]  # 99.975 -> 100.0
    fast, slow = offered_rates(300.0, 1, [90]), offered_rates(10.0, 4, [25])
    assert fast[0]["fps_per_stream"] == 240.0 and fast[0]["clamped"]  # the camera source's highest
    assert slow[0]["fps_per_stream"] == 1.0 and slow[0]["clamped"]
    assert slow[0]["offered_fps"] == 4.0


@pytest.mark.parametrize(("base", "streams"), [(0.0, 1), (-5.0, 2), (100.0, 0)])
def test_offered_rates_refuse_a_missing_max_rate(base: float, streams: int) -> None:
    with pytest.raises(ValueError):
        offered_rates(base, streams, [50])


def _run(fps: float, dropped: dict[str, int], put: dict[str, int], frac: float | None) -> dict:
    lat = {"p50": 20.0, "p90": 40.0, "p99": 80.0, "max": 90.0, "n": 500}
    none = {"p50": None, "p90": None, "p99": None, "max": None, "n": 0}
    return {
        "throughput_fps": fps, "captured_fps": 60.0, "dropped": dropped, "queue_put": put,
        "dropped_by_reason": {q: {"overflow": n} for q, n in dropped.items()},
        "dropped_fraction": frac, "latency_ms": lat, "mean_vision_batch": 2.5,
        "latency_ms_by_topic": {"vision": lat,
                                "command": {"p50": 5.0, "p90": 6.0, "p99": 9.0, "max": 9.5, "n": 10},
                                "command_spoken": none},
        "cpu": {"wall_s": 10.0, "daemon_cores": 1.2, "bench_cores": 0.1, "other_cores": 0.3},
        "commands_sent": 10, "exit_code": 0,
    }


def test_summarise_point_keeps_what_the_table_shows() -> None:
    (spec,) = offered_rates(120.0, 2, [50])  # 30 fps per stream, 60 offered
    p = summarise_point(2, spec, 120.0, _run(59.5, {}, {"frames": 600, "prepared": 600, "text": 10,
                                                       "publish": 0}, 0.0))
    assert p["streams"] == 2 and p["load_pct"] == 50 and p["offered_fps"] == 60.0
    assert p["e2e_fps"] == 59.5 and p["achieved_load_pct"] == 49.6 and p["delivered_fraction"] == 0.992
    assert p["vision_ms"] == {"p50": 20.0, "p99": 80.0, "n": 500}
    assert p["command_typed_ms"] == {"p50": 5.0, "p99": 9.0, "n": 10}
    assert p["command_spoken_ms"] == {"p50": None, "p99": None, "n": 0}
    # a queue that saw nothing is left out
    assert set(p["dropped_by_queue"]) == {"frames", "prepared", "text"}
    assert p["dropped_by_queue"]["frames"] == {"dropped": 0, "put": 600, "fraction": 0.0}
    assert p["daemon_cores"] == 1.2 and p["other_cores"] == 0.3
    assert p["sustained"]


def test_summarise_point_drops_by_queue_and_an_unsustained_point() -> None:
    (spec,) = offered_rates(120.0, 2, [90])  # 108 offered
    p = summarise_point(2, spec, 120.0, _run(90.0, {"frames": 150}, {"frames": 1000, "prepared": 850}, 0.15))
    assert p["dropped_by_queue"]["frames"] == {"dropped": 150, "put": 1000, "fraction": 0.15}
    assert p["dropped_by_reason"] == {"frames": {"overflow": 150}}
    assert not p["sustained"]
    # no drops, but too few frames published for what was offered: not sustained either
    q = summarise_point(2, spec, 120.0, _run(100.0, {}, {"frames": 1000}, 0.0))
    assert q["delivered_fraction"] == 0.926 and not q["sustained"]
