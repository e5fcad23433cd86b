"""`perceptd bench --pipeline --sweep-load 25,50,75,90`: real time under load.

Per stream count N (`--streams`), 100 % load is what the daemon gets through at max rate on
this machine: the max-rate run's end-to-end fps (240 fps files, `block` queues, the WAV and one
typed command per second), taken from the per-N comparison when it ran in the same invocation,
else measured first.  The stage-cost ceiling is recorded beside it when there is one.  Then live
sources are paced at each percentage of it, shared equally by the N streams: each camera replays
its file in real time at that rate (the same bitstream muxed at the rate, so no frame is decoded
only to be skipped) into live-like queues (`latest`: the newest frame per camera), with the WAV
(speech, looped) and one typed command per second as in every daemon run. Per point: offered and
end-to-end fps, capture->publish latency of vision messages, what each queue dropped, typed
command (received -> published) and spoken command (end of speech -> published) latency, the
daemon's CPU.

The pure parts (`offered_rates`, `summarise_point`) take no daemon and are unit-tested.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# a camera source's highest rate (sources/camera.py CameraConfig.fps) and a floor for tiny loads
MAX_FPS_PER_STREAM = 240.0
MIN_FPS_PER_STREAM = 1.0
DROP_BOUND = 0.01  # a point is sustained below this dropped fraction ...
DELIVERED_BOUND = 0.97  # ... and at or above this share of the offered fps published


def offered_rates(base_fps: float, streams: int, loads_pct: list[float],
                  max_fps_per_stream: float = MAX_FPS_PER_STREAM,
                  min_fps_per_stream: float = MIN_FPS_PER_STREAM) -> list[dict[str, Any]]:
    """The source rate of each load point: `pct` % of `base_fps` shared by `streams` cameras,
    rounded to 0.1 fps per camera and kept within what a camera source may be set to
    (`clamped` says when that moved it)."""
    if base_fps <= 0 or streams < 1:
        raise ValueError(f"need a positive max rate and >= 1 stream, got {base_fps} fps, {streams}")
    out = []
    for pct in loads_pct:
        want = base_fps * pct / 100.0 / streams
        per = round(min(max_fps_per_stream, max(min_fps_per_stream, want)), 1)
        out.append({"load_pct": pct, "fps_per_stream": per, "offered_fps": round(per * streams, 2),
                    "clamped": abs(per - want) > 0.05})
    return out


def _pcts(lat: dict[str, Any] | None) -> dict[str, Any]:
    lat = lat or {}
    return {"p50": lat.get("p50"), "p99": lat.get("p99"), "n": lat.get("n", 0)}


def summarise_point(streams: int, spec: dict[str, Any], base_fps: float, r: dict[str, Any]) -> dict[str, Any]:
    """One sweep point from a daemon run's summary (bench/pipeline.run_daemon)."""
    by = r.get("latency_ms_by_topic") or {}
    dropped = r.get("dropped") or {}
    put = r.get("queue_put") or {}
    by_queue = {q: {"dropped": int(dropped.get(q, 0)), "put": int(n),
                    "fraction": round(dropped.get(q, 0) / n, 4) if n else None}
                for q, n in sorted(put.items()) if n or dropped.get(q)}
    e2e = r["throughput_fps"]
    frac = r.get("dropped_fraction")
    offered = spec["offered_fps"]
    cpu = r.get("cpu") or {}
    return {
        "streams": streams, "load_pct": spec["load_pct"], "fps_per_stream": spec["fps_per_stream"],
        "offered_fps": offered, "captured_fps": r.get("captured_fps"), "e2e_fps": e2e,
        "delivered_fraction": round(e2e / offered, 3) if offered else None,
        "achieved_load_pct": round(100.0 * e2e / base_fps, 1) if base_fps else None,
        "vision_ms": _pcts(by.get("vision")),
        "dropped_fraction": frac,
        "dropped_by_queue": by_queue,
        "dropped_by_reason": r.get("dropped_by_reason") or {},
        "command_typed_ms": _pcts(by.get("command")),
        "command_spoken_ms": _pcts(by.get("command_spoken")),
        "daemon_cores": cpu.get("daemon_cores"), "other_cores": cpu.get("other_cores"),
        "bench_cores": cpu.get("bench_cores"),
        "mean_vision_batch": r.get("mean_vision_batch"),
        "fusion_evals_per_frame": r.get("fusion_evals_per_frame"),
        "commands_sent": r.get("commands_sent"), "exit_code": r.get("exit_code"),
        "sustained": bool(frac is not None and frac < DROP_BOUND and offered
                          and e2e >= DELIVERED_BOUND * offered),
    }


def sweep_load(bundle_dir: Path, args, work: Path, rows: list[dict[str, Any]],
               run: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Every --streams count x every --sweep-load percentage; `rows` are this invocation's
    per-N comparisons (their max-rate fps is reused), `run` is pipeline.run_daemon."""
    from perceptd.bench import media
    from perceptd.bench.rig import Scenario

    measured = {r["streams"]: r for r in rows}
    out: dict[str, Any] = {
        "load_base": "max-rate end-to-end fps of the same stream count (240 fps files, block queues, "
                     "WAV + 1 command/s)",
        "loads_pct": list(args.sweep_load), "seconds_per_point": args.seconds, "warmup_s": args.warmup,
        "commands_per_s": 1.0, "audio": "speech WAV looped in real time",
        "sustained_means": f"dropped < {DROP_BOUND:.0%} and e2e >= {DELIVERED_BOUND:.0%} of offered",
        "max_rate": {}, "points": [],
    }
    fixed = getattr(args, "sweep_load_base", None)
    for n in args.streams:
        if fixed:  # the same offered rates as another run (an A/B of two builds)
            mx, ceiling, where = None, None, "--sweep-load-base"
        elif n in measured:
            row = measured[n]
            mx, ceiling, where = row["pipeline_max_rate"], row.get("ceiling_fps"), "configurations"
        else:
            log.info("event=load_sweep_max streams=%d", n)
            mx = run(Scenario(f"load_max_{n}", n, realtime=False, device=args.device), bundle_dir, args, work)
            ceiling, where = None, "measured for the sweep"
        base = float(fixed) if mx is None else mx["throughput_fps"]
        out["max_rate"][str(n)] = {"e2e_fps": base, "ceiling_fps_stage_costs": ceiling, "from": where,
                                   **({"latency_ms": mx["latency_ms"], "cpu": mx["cpu"],
                                       "mean_vision_batch": mx["mean_vision_batch"]} if mx else {})}
        if base <= 0:
            log.warning("event=load_sweep_skip streams=%d reason=no_max_rate", n)
            continue
        for spec in offered_rates(base, n, args.sweep_load):
            fps = spec["fps_per_stream"]
            for i in range(n):  # muxed into the run's scratch folder: one-off rates stay out of bench/.cache
                media.video(i, fps, cache=work / "media")
            sc = Scenario(f"load{spec['load_pct']:g}_{n}", n, realtime=True, fps=fps, file_fps=fps,
                          device=args.device, media_dir=work / "media")
            p = summarise_point(n, spec, base, run(sc, bundle_dir, args, work))
            out["points"].append(p)
            log.info("event=load_point streams=%d load_pct=%g offered=%.1f fps=%.1f dropped=%s p50=%s p99=%s "
                     "cmd_p99=%s spoken_p99=%s cores=%.2f", n, spec["load_pct"], spec["offered_fps"],
                     p["e2e_fps"], p["dropped_fraction"], p["vision_ms"]["p50"], p["vision_ms"]["p99"],
                     p["command_typed_ms"]["p99"], p["command_spoken_ms"]["p99"], p["daemon_cores"] or 0.0)
    return out


# --------------------------------------------------------------------------- report


def _ms(d: dict[str, Any]) -> str:
    if not d.get("n"):
        return "-"
    return f"{d['p50']:.0f}/{d['p99']:.0f}" + (f" ({d['n']})" if d["n"] < 20 else "")


def _drops(p: dict[str, Any]) -> str:
    parts = [f"{q} {v['fraction']:.1%}" for q, v in p["dropped_by_queue"].items()
             if v["dropped"] and v["fraction"] is not None]
    return ", ".join(parts) or "0"


def print_load_sweep(sw: dict[str, Any], echo=print) -> None:
    base = ", ".join(f"{n} stream{'s' if int(n) > 1 else ''} {m['e2e_fps']:.1f} fps"
                     for n, m in sw["max_rate"].items())
    echo(f"load sweep (100 % = max-rate e2e fps: {base}); latencies ms p50/p99 (n when < 20)")
    echo(f"{'streams':>7} {'load':>5} {'offered':>8} {'captured':>8} {'e2e fps':>8} {'vision':>10} "
         f"{'dropped by queue':<30} "
         f"{'typed cmd':>12} {'spoken cmd':>12} {'cores':>6} {'other':>6}")
    for p in sw["points"]:
        echo(f"{p['streams']:>7} {p['load_pct']:>4g}% {p['offered_fps']:>8.1f} "
             f"{p['captured_fps'] or 0:>8.1f} {p['e2e_fps']:>8.1f} "
             f"{_ms(p['vision_ms']):>10} {_drops(p):<30} {_ms(p['command_typed_ms']):>12} "
             f"{_ms(p['command_spoken_ms']):>12} {p['daemon_cores'] or 0:>6.2f} "
             f"{p['other_cores'] or 0:>6.2f}")


def _y(pts: list[dict[str, Any]], key: str, q: str) -> list[float]:
    """A latency series with NaN where a point had no sample (matplotlib leaves a gap)."""
    return [float("nan") if p[key][q] is None else p[key][q] for p in pts]


def plot_load_sweep(sw: dict[str, Any], path: Path, title: str) -> None:
    """Left: capture->publish p50/p99 vs load, one colour per stream count; right: typed and
    spoken command latency vs load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    counts = sorted({p["streams"] for p in sw["points"]})
    for k, n in enumerate(counts):
        pts = sorted((p for p in sw["points"] if p["streams"] == n), key=lambda p: p["load_pct"])
        x = [p["load_pct"] for p in pts]
        c = f"C{k}"
        lab = f"{n} stream{'s' if n > 1 else ''} ({sw['max_rate'][str(n)]['e2e_fps']:.0f} fps = 100 %)"
        ax = axes[0]
        ax.plot(x, _y(pts, "vision_ms", "p99"), "s-", color=c, label=f"p99, {lab}")
        ax.plot(x, _y(pts, "vision_ms", "p50"), "o--", color=c, label=f"p50, {lab}")
        for p in pts:
            if (p["dropped_fraction"] or 0) >= DROP_BOUND:
                ax.annotate(f"{p['dropped_fraction']:.0%} drop", (p["load_pct"], p["vision_ms"]["p99"] or 0),
                            fontsize=7, color=c, xytext=(3, 3), textcoords="offset points")
        ax = axes[1]
        for key, style, what in (("command_typed_ms", "-", "typed"), ("command_spoken_ms", ":", "spoken")):
            ax.plot(x, _y(pts, key, "p99"), "^" + style, color=c, label=f"{what} p99, {n} str.")
            ax.plot(x, _y(pts, key, "p50"), "o" + style, color=c, alpha=0.6,
                    label=f"{what} p50, {n} str.")
    for ax, what in ((axes[0], "vision capture -> publish ms"), (axes[1], "command -> event ms")):
        ax.set_yscale("log")
        ax.set_xlabel("offered load, % of the max-rate fps")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("vision latency under load (live sources, newest frame per camera)")
    axes[1].set_title("typed (received) / spoken (end of speech) -> command event")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
