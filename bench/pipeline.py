"""`perceptd bench --pipeline`: the daemon end to end against the ceiling its stages allow and
against a plain sequential loop doing the same work, side by side in one run.

Per stream count N (file-fed 640x480 H.264 cameras, plus a WAV replayed in real time and a
text command per second over the control socket):
- stage costs, each measured alone (bench/stages.py) -> ceiling_fps;
- max rate: the daemon (`perceptd run`, 240 fps files, `block` queues, no fps limit) ->
  throughput_fps, pipeline_efficiency = throughput / ceiling; the plain loop -> sequential_fps;
- real time: 30 fps sources (live-like `latest` queues: the newest frame per camera) -> frames
  published, dropped and late, latency, for the daemon and the plain loop.
Then capture-to-publish latency for one 15 fps stream with audio and commands, and, with
--soak-minutes, RSS and open fds of a 4-stream daemon over time; with --sweep-load, live
sources at fractions of the max rate (bench/load_sweep.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from perceptd.bench import media, stages
from perceptd.bench.common import environment, write_json
from perceptd.bench.rig import (
    CpuWindow,
    DaemonRun,
    GpuSampler,
    ProcSampler,
    Scenario,
    percentiles,
    scenario_config,
)

log = logging.getLogger(__name__)
NS = 1_000_000_000


def _cores() -> int:
    return len(os.sched_getaffinity(0))


# --------------------------------------------------------------------------- the daemon


def _recheck_ceilings(m, cfg, rows: list[dict[str, Any]], args, before: dict[str, Any]) -> None:
    """Stage costs measured alone move by several % between minutes (caches, clocks, the host),
    so they are measured again after the daemon runs: each row gets the efficiency against both
    ceilings (`pipeline_efficiency_range`); the headline keeps the one measured before."""
    log.info("event=stage_costs_again")
    batches = sorted(before["vision"])
    after = stages.measure_all(m, cfg, [r["streams"] for r in rows], batches)
    for r in rows:
        sc = Scenario("", r["streams"], False, device=args.device)
        c = _ceiling(after, cfg, sc, r["pipeline_max_rate"], _cores())
        r["ceiling_fps_after"] = c["ceiling_fps"]
        effs = (r["pipeline_efficiency"], round(r["throughput_fps"] / c["ceiling_fps"], 3))
        r["pipeline_efficiency_range"] = [min(effs), max(effs)]
        r["stage_costs_ms_after"] = stages.costs_json(after)


def runtime_overrides(args) -> dict[str, Any]:
    """The runtime settings the command line overrides (the rest as configured)."""
    out: dict[str, Any] = {}
    if getattr(args, "gpu_resize", None):
        out["gpu_resize"] = args.gpu_resize
    if getattr(args, "cuda_graph", False):
        out["cuda_graph"] = True
    return out


def run_daemon(sc: Scenario, bundle_dir: Path, args, work: Path, seconds: float | None = None,
               warmup: float | None = None, sample_period: float = 0.0,
               runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start the daemon, let it warm up, measure a window of `seconds`, stop it."""
    seconds = args.seconds if seconds is None else seconds
    warmup = args.warmup if warmup is None else warmup
    vision = {k: v for k, v in (("workers", args.vision_workers), ("max_batch", args.vision_batch),
                                ("max_wait_ms", args.vision_wait_ms)) if v is not None} or None
    cfg = scenario_config(sc, bundle_dir, args.threads, vision, Path(args.config),
                          {**runtime_overrides(args), **(runtime or {})})
    d = DaemonRun(cfg, work / sc.name)
    sampler = gpu = gpu_usage = None
    try:
        ready = d.wait_ready()
        if sc.commands_per_s:
            d.start_commands(sc.commands_per_s)
        if sample_period:
            sampler = ProcSampler(d.pid, sample_period)
        time.sleep(warmup)
        gpu = GpuSampler() if sc.device == "cuda" else None
        s0, mark, cpu = d.status(), d.collector.mark(), CpuWindow(d.pid)
        time.sleep(seconds)
        rows, usage, s1 = d.collector.since(mark), cpu.read(), d.status()
        gpu_usage = gpu.summary() if gpu is not None else None
        if sampler is not None:
            sampler.close()
    finally:
        if gpu is not None and gpu_usage is None:
            gpu.summary()  # stops nvidia-smi
        rc = d.stop()
    if rc != 0:
        log.warning("event=daemon_exit rc=%s log=%s", rc, d.log(500))
    return {**_summarise(sc, rows, usage, s0, s1, ready, rc, d, sampler), "gpu": gpu_usage}


def _delta(s0: dict, s1: dict, *path: str) -> float:
    a, b = s0, s1
    for p in path:
        a, b = a[p], b[p]
    return b - a


def _reasons(s0: dict, s1: dict, q: str) -> dict[str, int]:
    """A queue's drops in the window by reason (overflow, closed, ...), the nonzero ones."""
    a = (s0["queues"].get(q) or {}).get("dropped_by_reason") or {}
    b = s1["queues"][q].get("dropped_by_reason") or {}
    return {k: int(v - a.get(k, 0)) for k, v in b.items() if v - a.get(k, 0)}


def _summarise(sc, rows, usage, s0, s1, ready, rc, d, sampler) -> dict[str, Any]:
    wall = usage["wall_s"]
    topics = Counter(r[0] for r in rows)
    vision = [r for r in rows if r[0] == "vision"]
    lat = {"vision": percentiles([(r[3] - r[2]) / 1e6 for r in rows if r[0] == "vision"]),
           # typed: received -> published; spoken: end of speech -> published (recognition included)
           "command": percentiles([(r[3] - r[2]) / 1e6 for r in rows
                                   if r[0] == "command" and r[5] == "control"]),
           "command_spoken": percentiles([(r[3] - r[2]) / 1e6 for r in rows
                                          if r[0] == "command" and r[5] == "speech"])}
    lat["events"] = percentiles([(r[3] - r[2]) / 1e6 for r in rows if r[0].startswith("event.")])
    lat["vision_to_subscriber"] = percentiles([(r[4] - r[2]) / 1e6 for r in vision])
    seqs = sorted(r[1] for r in rows)
    gaps = int(seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
    captured = sum(_delta(s0, s1, "sources", f"cam{i}", "captured") for i in range(sc.streams))
    dropped = {q: _delta(s0, s1, "queues", q, "dropped") for q in s1["queues"]}
    vis_items = _delta(s0, s1, "stages", "vision", "items")
    batches = _delta(s0, s1, "stages", "vision", "batches")
    evals = s1["fusion"]["evaluations"] - s0["fusion"]["evaluations"]
    out = {
        "throughput_fps": round(len(vision) / wall, 2),
        "captured_fps": round(captured / wall, 2),
        "dropped": {k: int(v) for k, v in dropped.items() if v},
        "dropped_by_reason": {q: r for q in s1["queues"] if (r := _reasons(s0, s1, q))},
        # items offered to each queue in the window (a queue's own drop fraction: dropped / put)
        "queue_put": {q: int(_delta(s0, s1, "queues", q, "put")) for q in s1["queues"]
                      if "put" in s1["queues"][q] and q in s0["queues"]},
        # frames the queues dropped per frame captured in the window (never negative: frames
        # captured before the window may be published inside it)
        "dropped_fraction": round((dropped.get("frames", 0) + dropped.get("prepared", 0)) / captured, 4)
        if captured else None,
        "latency_ms": lat["vision"],
        "latency_ms_by_topic": lat,
        "messages_per_s": {t: round(n / wall, 2) for t, n in sorted(topics.items())},
        "seq_gaps_seen": gaps,
        "mean_vision_batch": round(vis_items / batches, 2) if batches else None,
        "fusion_evals_per_frame": round(evals / max(1, vis_items), 3),
        "cpu": {k: round(v, 3) for k, v in usage.items()},
        "providers": ready.get("providers"),
        "vision_path": ready.get("vision_path"),
        "exit_code": rc,
        "stage_busy_s": {k: round(_delta(s0, s1, "stages", k, "busy_s"), 3) for k in s1["stages"]},
        "commands_sent": d.commands.sent if d.commands else 0,
        "speech_status": s1.get("speech"),  # verdicts, speculative used/wasted (end of the window)
    }
    if sampler is not None:
        out["samples"] = {"t_s": [round(t, 1) for t in sampler.samples.t],
                          "rss_mb": [round(v, 2) for v in sampler.samples.rss_mb],
                          "fds": sampler.samples.fds, "threads": sampler.samples.threads}
    return out


# --------------------------------------------------------------------------- the plain loop


def run_sequential(m, cfg, sc: Scenario, seconds: float, warmup: float) -> dict[str, Any]:
    from perceptd.bench.sequential import PlainLoop

    loop = PlainLoop(m, cfg, sc.streams, sc.realtime, sc.fps, sc.audio, sc.commands_per_s)
    try:
        return loop.run(seconds, warmup)
    finally:
        loop.close()


# --------------------------------------------------------------------------- the suite


def _ceiling(costs, cfg, sc: Scenario, run: dict[str, Any], cores: float, key: str = "cpu_ms"):
    other = sum(v for t, v in run["messages_per_s"].items() if t != "vision")
    batch = round(run["mean_vision_batch"] or 1)
    return stages.ceiling(costs, cores=cores, streams=sc.streams, batch=batch,
                          fps_per_stream=sc.fps if sc.realtime else None,
                          face_interval_s=cfg.vision.face_interval_s if cfg.vision.faces else 0.0,
                          audio_sources=int(sc.audio), commands_per_s=sc.commands_per_s,
                          other_msgs_per_s=other, key=key, device=sc.device)


def configuration(m, cfg, costs, bundle_dir: Path, n: int, args, work: Path,
                  seq_models: dict[int, Any]) -> dict[str, Any]:
    cores = _cores()
    dev = args.device
    mx = Scenario(f"max_{n}", n, realtime=False, device=dev)
    rt = Scenario(f"rt30_{n}", n, realtime=True, fps=30.0, device=dev)
    log.info("event=config streams=%d phase=pipeline_max", n)
    pipe = run_daemon(mx, bundle_dir, args, work)
    ceil = _ceiling(costs, cfg, mx, pipe, cores)
    avail = cores - pipe["cpu"]["other_cores"] - pipe["cpu"]["bench_cores"]
    ceil_avail = _ceiling(costs, cfg, mx, pipe, avail)
    useful = ceil["per_frame_total_ms"] * pipe["throughput_fps"] + sum(ceil["time_based_ms_per_s"].values())
    row: dict[str, Any] = {
        "name": f"{n} stream{'s' if n > 1 else ''}", "streams": n, "device": dev,
        "throughput_fps": pipe["throughput_fps"],
        "ceiling_fps": ceil["ceiling_fps"],
        "pipeline_efficiency": round(pipe["throughput_fps"] / ceil["ceiling_fps"], 3),
        "ceiling_fps_cores_available": ceil_avail["ceiling_fps"],
        "pipeline_efficiency_cores_available": round(pipe["throughput_fps"] / ceil_avail["ceiling_fps"], 3)
        if ceil_avail["ceiling_fps"] else None,
        "work_fraction_of_daemon_cpu": round(useful / 1e3 / max(1e-9, pipe["cpu"]["daemon_cores"]), 3),
        "frames_per_daemon_cpu_second": round(
            pipe["throughput_fps"] / max(1e-9, pipe["cpu"]["daemon_cores"]), 2),
        "latency_ms": pipe["latency_ms"],
        "ceiling": ceil,
        "stage_costs_ms": stages.costs_json(costs),
        "pipeline_max_rate": pipe,
    }
    if not args.no_sequential and n <= args.sequential_max_streams:
        seq = {}
        for t, mm in seq_models.items():
            log.info("event=config streams=%d phase=sequential_max threads=%d", n, t)
            seq[f"ort_threads_{t}"] = run_sequential(mm, cfg, mx, args.seconds, args.warmup)
        best = max(seq.values(), key=lambda r: r["fps"])
        row["sequential_fps"] = best["fps"]
        row["sequential_max_rate"] = seq
        row["ratio_pipelined_over_sequential_max_rate"] = round(pipe["throughput_fps"] / best["fps"], 3)
    if not args.no_sequential:
        from perceptd.bench.sequential import plain_vision_loop
        from perceptd.daemon.bundle import verify_bundle

        log.info("event=config streams=%d phase=plain_vision_loop", n)
        pv = plain_vision_loop(verify_bundle(bundle_dir), dev, n, args.seconds, args.warmup,
                               threads=_cores() if dev == "cpu" else 1)
        row["plain_vision_loop_max_rate"] = pv
        row["ratio_pipelined_over_plain_vision_loop"] = round(
            pipe["throughput_fps"] / max(1e-9, pv["fps"]), 3)
    log.info("event=config streams=%d phase=pipeline_rt30", n)
    prt = run_daemon(rt, bundle_dir, args, work)
    row["realtime_30fps"] = {"offered_fps": round(30.0 * n, 1), "pipeline": prt}
    if not args.no_sequential and n <= args.sequential_max_streams:
        log.info("event=config streams=%d phase=sequential_rt30", n)
        t_best = max(seq, key=lambda k: seq[k]["fps"])  # the plain loop's best threading
        t_best = int(t_best.rsplit("_", 1)[1])
        srt = run_sequential(seq_models[t_best], cfg, rt, args.seconds, args.warmup)
        row["realtime_30fps"]["sequential"] = {"ort_threads": t_best, **srt}
        row["realtime_30fps"]["ratio_pipelined_over_sequential"] = round(
            prt["throughput_fps"] / max(1e-9, srt["fps"]), 3)
    return row


def latency_run(bundle_dir: Path, args, work: Path) -> dict[str, Any]:
    sc = Scenario("latency_15fps", 1, realtime=True, fps=15.0, device=args.device)
    r = run_daemon(sc, bundle_dir, args, work)
    return {"scenario": "1 stream 640x480 at 15 fps + WAV audio + 1 command/s", "latency_ms": r["latency_ms"],
            "target_p99_ms": 100, **r}


def soak_run(bundle_dir: Path, args, work: Path) -> dict[str, Any]:
    """4 live-like 30 fps streams for --soak-minutes; RSS/fds sampled every few seconds.

    Drift compares the medians of the first and last fifth of the samples after warm-up (RSS
    breathes with allocations such as a speech transcription); the fitted slope shows a leak."""
    sc = Scenario("soak", 4, realtime=True, fps=30.0, device=args.device)
    seconds = args.soak_minutes * 60
    period = max(1.0, min(10.0, seconds / 120))
    r = run_daemon(sc, bundle_dir, args, work, seconds=seconds, warmup=0.0, sample_period=period)
    s = r["samples"]
    t = np.asarray(s["t_s"])
    warm = min(60.0, 0.2 * seconds)
    after = t >= warm
    out = {"minutes": args.soak_minutes, "warmup_s": warm, "sample_period_s": period}
    for key in ("rss_mb", "fds", "threads"):
        v = np.asarray(s[key], dtype=float)[after]
        if v.size >= 4:
            k = max(2, v.size // 5)  # medians of the first and last fifth: robust to a transient
            ref, end = float(np.median(v[:k])), float(np.median(v[-k:]))
            slope = float(np.polyfit(t[after] / 60.0, v, 1)[0])
            out[key] = {"after_warmup": round(ref, 2), "end": round(end, 2),
                        "drift_fraction": round((end - ref) / ref, 4) if ref else None,
                        "slope_per_min": round(slope, 4),
                        "min": round(float(v.min()), 2), "max": round(float(v.max()), 2),
                        "range_fraction": round(float(v.max() - v.min()) / ref, 4) if ref else None}
    out["flat_within_5_percent"] = all(
        abs(out[k]["drift_fraction"] or 0) <= 0.05 for k in ("rss_mb", "fds") if k in out)
    return {**out, "run": r}


# The preprocessing "before and after": the same load with the resize on the host (cv2), on
# the device (the bundle's vision_resize graph) and on the device with the encoder replayed as
# a CUDA graph.  On a CPU the device resize is ORT's Resize on the CPU: it shows why `auto`
# keeps cv2 there; the CUDA graph is inactive (vision_path.fixed_batch says so).
VISION_PATHS = {
    "host_resize": {"gpu_resize": "off", "cuda_graph": False},
    "device_resize": {"gpu_resize": "on", "cuda_graph": False},
    "device_resize_cuda_graph": {"gpu_resize": "on", "cuda_graph": True},
}


def compare_vision_paths(bundle_dir: Path, args, work: Path, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"streams": n, "mode": "max rate (240 fps files, block queues) + WAV + commands"}
    for name, rt in VISION_PATHS.items():
        log.info("event=vision_path_run path=%s streams=%d", name, n)
        r = run_daemon(Scenario(f"path_{name}_{n}", n, realtime=False, device=args.device), bundle_dir,
                       args, work, runtime=rt)
        per_cpu_s = r["throughput_fps"] / max(1e-9, r["cpu"]["daemon_cores"])
        out[name] = {"throughput_fps": r["throughput_fps"], "cpu": r["cpu"],
                     "frames_per_daemon_cpu_second": round(per_cpu_s, 2),
                     "latency_ms": r["latency_ms"], "mean_vision_batch": r["mean_vision_batch"],
                     "vision_path": r["vision_path"], "providers": r["providers"], "gpu": r["gpu"],
                     "exit_code": r["exit_code"]}
    base = out["host_resize"]
    out["ratios_over_host_resize"] = {
        name: {"throughput": round(out[name]["throughput_fps"] / max(1e-9, base["throughput_fps"]), 3),
               "frames_per_daemon_cpu_second": round(out[name]["frames_per_daemon_cpu_second"]
                                                     / max(1e-9, base["frames_per_daemon_cpu_second"]), 3)}
        for name in VISION_PATHS if name != "host_resize"}
    return out


def sweep_batching(bundle_dir: Path, args, work: Path, n: int) -> dict[str, Any]:
    """max_batch x max_wait_ms at N live 30 fps streams: what each costs in latency and CPU.

    Recommended: the lowest p99 among the points that sustain the load (< 1 % dropped); the
    cheapest such point (daemon cores) is reported beside it."""
    points = []
    for b in args.sweep_batch:
        for w in args.sweep_wait_ms:
            sub = argparse.Namespace(**{**vars(args), "vision_batch": b, "vision_wait_ms": w})
            r = run_daemon(Scenario(f"sweep_b{b}_w{w:g}_{n}", n, realtime=True, fps=30.0,
                                    device=args.device), bundle_dir, sub, work)
            ok = r["dropped_fraction"] is not None and r["dropped_fraction"] < 0.01
            points.append({"max_batch": b, "max_wait_ms": w, "fps": r["throughput_fps"],
                           "dropped_fraction": r["dropped_fraction"], "latency_ms": r["latency_ms"],
                           "mean_vision_batch": r["mean_vision_batch"],
                           "daemon_cores": r["cpu"]["daemon_cores"], "other_cores": r["cpu"]["other_cores"],
                           "gpu": r["gpu"], "sustained": ok})
            log.info("event=sweep_point batch=%d wait_ms=%g fps=%.1f dropped=%s p99=%s cores=%.2f", b, w,
                     r["throughput_fps"], r["dropped_fraction"], r["latency_ms"].get("p99"),
                     r["cpu"]["daemon_cores"])
    ok = [p for p in points if p["sustained"] and p["latency_ms"].get("p99") is not None]
    best = min(ok, key=lambda p: p["latency_ms"]["p99"]) if ok else None
    cheapest = min(ok, key=lambda p: p["daemon_cores"]) if ok else None
    return {"streams": n, "fps_per_stream": 30.0, "points": points,
            "recommended_lowest_p99": _batching(best), "cheapest_cpu": _batching(cheapest)}


def _batching(point: dict[str, Any] | None) -> dict[str, Any] | None:
    return {"max_batch": point["max_batch"], "max_wait_ms": point["max_wait_ms"]} if point else None


def find_max_streams(bundle_dir: Path, args, work: Path) -> dict[str, Any]:
    """Double the 30 fps streams until one point drops >= 1 % of frames or passes the p99 bound."""
    target = args.p99_target_ms or (50.0 if args.device == "cuda" else 100.0)
    points, best, n = [], 0, 1
    while n <= args.find_max_streams:
        for i in range(n):
            media.video(i, 30)
        r = run_daemon(Scenario(f"find_{n}", n, realtime=True, fps=30.0, device=args.device), bundle_dir,
                       args, work)
        p99 = r["latency_ms"].get("p99")
        ok = (r["dropped_fraction"] is not None and r["dropped_fraction"] < 0.01 and p99 is not None
              and p99 < target and r["throughput_fps"] >= 0.97 * 30 * n)
        points.append({"streams": n, "offered_fps": 30 * n, "fps": r["throughput_fps"],
                       "dropped_fraction": r["dropped_fraction"], "latency_ms": r["latency_ms"],
                       "daemon_cores": r["cpu"]["daemon_cores"],
                       "daemon_cores_per_stream": round(r["cpu"]["daemon_cores"] / n, 3),
                       "gpu": r["gpu"], "mean_vision_batch": r["mean_vision_batch"],
                       "vision_path": r["vision_path"], "sustained": ok})
        log.info("event=find_point streams=%d fps=%.1f dropped=%s p99=%s sustained=%s", n,
                 r["throughput_fps"], r["dropped_fraction"], p99, ok)
        if not ok:
            break
        best, n = n, n * 2
    return {"p99_target_ms": target, "drop_bound": 0.01, "max_streams_sustained": best, "points": points}


def scaling(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cost per stream as streams grow: CPU per frame at max rate; at 30 fps per stream, what
    is sustained, dropped, how late, and the daemon's CPU per stream."""
    out = []
    for r in rows:
        mx, rt = r["pipeline_max_rate"], r["realtime_30fps"]["pipeline"]
        n = r["streams"]
        out.append({
            "streams": n,
            "max_rate_fps": mx["throughput_fps"],
            "max_rate_fps_per_stream": round(mx["throughput_fps"] / n, 2),
            "daemon_cpu_ms_per_frame_max_rate": round(
                1e3 * mx["cpu"]["daemon_cores"] / max(1e-9, mx["throughput_fps"]), 3),
            "rt30_fps_per_stream": round(rt["throughput_fps"] / n, 2),
            "rt30_dropped_fraction": rt["dropped_fraction"],
            "rt30_latency_p50_ms": rt["latency_ms"]["p50"], "rt30_latency_p99_ms": rt["latency_ms"]["p99"],
            "rt30_daemon_cores_per_stream": round(rt["cpu"]["daemon_cores"] / n, 3),
            "rt30_sustained": bool(rt["dropped_fraction"] is not None and rt["dropped_fraction"] < 0.01),
            "gpu_max_rate": mx.get("gpu"), "gpu_rt30": rt.get("gpu"),
        })
    return out


def bench_pipeline(bundle_dir: Path, args) -> dict[str, Any]:
    from perceptd.daemon.bundle import verify_bundle
    from perceptd.daemon.config import load_config
    from perceptd.daemon.inference.models import load_models
    from perceptd.daemon.inference.session import SessionOptions
    from perceptd.daemon.inference.vision import VisionRuntime

    cfg = load_config(args.config)
    bundle = verify_bundle(bundle_dir)
    env = environment()
    for i in range(max(args.streams)):
        media.video(i, 30), media.video(i, 240)
    media.speech_wav()
    opts = SessionOptions(args.device, args.threads)
    rt = cfg.runtime.model_copy(update=runtime_overrides(args))
    mb = args.vision_batch or cfg.vision.max_batch
    vrt = VisionRuntime(rt.gpu_resize, rt.cuda_graph, rt.pinned_memory, mb)  # as the daemon runs it
    m = load_models(bundle, cfg.events, opts, cfg.vision.faces, vrt)
    seq_models = {args.threads: m}
    if not args.no_sequential and args.device == "cpu" and _cores() > args.threads:
        seq_models[_cores()] = load_models(bundle, cfg.events, SessionOptions("cpu", _cores()),
                                           cfg.vision.faces)
    batches = sorted({1, mb, *[min(n, mb) for n in args.streams]})
    work = Path(tempfile.mkdtemp(prefix="perceptd-bench-"))
    rows = []
    if not args.no_configurations:
        log.info("event=stage_costs")
        costs = stages.measure_all(m, cfg, list(args.streams), batches)
    for n in [] if args.no_configurations else args.streams:
        row = configuration(m, cfg, costs, bundle_dir, n, args, work, seq_models)
        # the vision cost at the batch the daemon really used, measured alone now
        b = round(row["pipeline_max_rate"]["mean_vision_batch"] or 1)
        if b not in costs["vision"]:
            costs["vision"][b] = stages.vision_cost(m, [np.zeros((480, 640, 3), np.uint8)], b, 200)
            row["ceiling"] = _ceiling(costs, cfg, Scenario("", n, False, device=args.device),
                                      row["pipeline_max_rate"], _cores())
            row["ceiling_fps"] = row["ceiling"]["ceiling_fps"]
            row["pipeline_efficiency"] = round(row["throughput_fps"] / row["ceiling_fps"], 3)
            row["stage_costs_ms"] = stages.costs_json(costs)
        rows.append(row)
        log.info("event=config_done streams=%d throughput=%.1f ceiling=%.1f efficiency=%.3f", n,
                 row["throughput_fps"], row["ceiling_fps"], row["pipeline_efficiency"])
    if rows:
        _recheck_ceilings(m, cfg, rows, args, costs)
    data: dict[str, Any] = {
        "scaling": scaling(rows), "runtime": rt.model_dump(mode="json"),
        "kind": "pipeline", **env, "bundle": bundle.version, "device": args.device,
        "ort_intra_op_threads": args.threads, "seconds_per_point": args.seconds, "warmup_s": args.warmup,
        "video_codec": media.video(0, 240).stem.rsplit("_", 1)[1], "configurations": rows,
        "vision_config": cfg.vision.model_dump(),
    }
    if getattr(args, "sweep_load", None):
        from perceptd.bench.load_sweep import sweep_load

        log.info("event=sweep_load streams=%s loads=%s", args.streams, args.sweep_load)
        data["load_sweep"] = sweep_load(bundle_dir, args, work, rows, run_daemon)
    if args.compare_vision_paths:
        log.info("event=compare_vision_paths streams=%d", max(args.streams))
        data["vision_paths"] = compare_vision_paths(bundle_dir, args, work, max(args.streams))
    if args.sweep_batch:
        log.info("event=sweep_batching streams=%d", max(args.streams))
        data["batching_sweep"] = sweep_batching(bundle_dir, args, work, max(args.streams))
    if args.find_max_streams:
        log.info("event=find_max_streams up_to=%d", args.find_max_streams)
        data["max_streams_30fps"] = find_max_streams(bundle_dir, args, work)
    if not args.no_latency:
        log.info("event=latency_run")
        data["latency_15fps"] = latency_run(bundle_dir, args, work)
    if args.soak_minutes:
        log.info("event=soak minutes=%s", args.soak_minutes)
        data["soak"] = soak_run(bundle_dir, args, work)
    return data


# --------------------------------------------------------------------------- report


def print_table(data: dict[str, Any], echo=print) -> None:
    echo(f"{'streams':>7} {'e2e fps':>8} {'ceiling':>8} {'effic.':>7} {'seq fps':>8} {'x seq':>6} "
         f"{'30fps: pipe/seq fps':>20} {'p50/p99 ms':>14}")
    for r in data["configurations"]:
        rt = r["realtime_30fps"]
        lo, hi = r.get("pipeline_efficiency_range") or (None, None)
        seq = rt.get("sequential", {}).get("fps")
        echo(f"{r['streams']:>7} {r['throughput_fps']:>8.1f} {r['ceiling_fps']:>8.1f} "
             f"{r['pipeline_efficiency']:>7.3f} {r.get('sequential_fps') or float('nan'):>8.1f} "
             f"{r.get('ratio_pipelined_over_sequential_max_rate') or float('nan'):>6.2f} "
             f"{rt['pipeline']['throughput_fps']:>9.1f}/{seq or float('nan'):<10.1f} "
             f"{r['latency_ms']['p50']}/{r['latency_ms']['p99']}"
             + (f"   efficiency against the stage costs before / after the runs: {lo}-{hi}" if lo else ""))
    if "vision_paths" in data:
        vp = data["vision_paths"]
        for name in VISION_PATHS:
            r = vp[name]
            echo(f"vision path {name:<25} {vp['streams']} streams: {r['throughput_fps']:>7.1f} fps, "
                 f"{r['frames_per_daemon_cpu_second']:>7.1f} frames per daemon CPU-s, "
                 f"p50/p99 {r['latency_ms']['p50']}/{r['latency_ms']['p99']} ms, {r['vision_path']}")
    if "batching_sweep" in data:
        sw = data["batching_sweep"]
        echo(f"batching sweep, {sw['streams']} streams at 30 fps: batch wait_ms -> fps dropped p50/p99 cores")
        for p in sw["points"]:
            echo(f"  {p['max_batch']:>4} {p['max_wait_ms']:>6g} -> {p['fps']:>7.1f} {p['dropped_fraction']} "
                 f"{p['latency_ms'].get('p50')}/{p['latency_ms'].get('p99')} {p['daemon_cores']:.2f}")
        echo(f"  recommended (lowest p99, sustained): {sw['recommended_lowest_p99']}; "
             f"cheapest: {sw['cheapest_cpu']}")
    if "max_streams_30fps" in data:
        f = data["max_streams_30fps"]
        echo(f"most 30 fps streams sustained (< 1 % dropped, p99 < {f['p99_target_ms']} ms): "
             f"{f['max_streams_sustained']}  ("
             + ", ".join(f"{p['streams']}: {p['fps']} fps p99 {p['latency_ms'].get('p99')}"
                         for p in f["points"]) + ")")
    if "load_sweep" in data:
        from perceptd.bench.load_sweep import print_load_sweep

        print_load_sweep(data["load_sweep"], echo)
    if "latency_15fps" in data:
        lat = data["latency_15fps"]["latency_ms"]
        echo(f"latency, 1 stream 15 fps + audio + commands: p50 {lat['p50']} ms, p99 {lat['p99']} ms")
        by = data["latency_15fps"].get("latency_ms_by_topic", {})
        for key, what in (("command", "typed command (received -> published)"),
                          ("command_spoken", "spoken command (end of speech -> published)")):
            if by.get(key, {}).get("n"):
                echo(f"  {what}: p50 {by[key]['p50']} ms, p99 {by[key]['p99']} ms (n {by[key]['n']})")
    if "soak" in data:
        s = data["soak"]
        echo(f"soak {s['minutes']} min: RSS drift {s['rss_mb']['drift_fraction']:+.2%}, "
             f"fds drift {s['fds']['drift_fraction']:+.2%}, flat: {s['flat_within_5_percent']}")


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["configurations"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    x = np.arange(len(rows))
    labels = [f"{r['streams']} stream{'s' if r['streams'] > 1 else ''}" for r in rows]
    ax = axes[0]
    ax.bar(x - 0.3, [r["ceiling_fps"] for r in rows], 0.2, label="ceiling (stage costs)", color="#bbb")
    ax.bar(x - 0.1, [r["throughput_fps"] for r in rows], 0.2, label="perceptd pipeline")
    for k, name in enumerate(sorted(rows[0].get("sequential_max_rate") or {})):
        fps = [r.get("sequential_max_rate", {}).get(name, {}).get("fps", 0) for r in rows]
        ax.bar(x + 0.1 + 0.2 * k, fps, 0.2, label=f"plain loop ({name.replace('_', ' ')})")
    for i, r in enumerate(rows):
        ax.annotate(f"eff {r['pipeline_efficiency']:.2f}", (i - 0.1, r["throughput_fps"]), ha="center",
                    va="bottom", fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_ylabel("frames/s end to end")
    ax.set_title("max rate from files (+audio, +1 command/s)")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.bar(x - 0.2, [r["realtime_30fps"]["pipeline"]["throughput_fps"] for r in rows], 0.4,
           label="perceptd pipeline")
    ax.bar(x + 0.2, [r["realtime_30fps"].get("sequential", {}).get("fps", 0) for r in rows], 0.4,
           label="plain loop")
    ax.plot(x, [r["realtime_30fps"]["offered_fps"] for r in rows], "k_", markersize=30, label="offered")
    ax.set_xticks(x, labels)
    ax.set_ylabel("frames/s published")
    ax.set_title("30 fps live-like sources")
    ax.legend(fontsize=7)
    ax = axes[2]
    parts = list(rows[-1]["ceiling"]["per_frame_ms"])
    bottom = np.zeros(len(rows))
    for p in parts:
        v = np.array([r["ceiling"]["per_frame_ms"].get(p, 0) for r in rows])
        ax.bar(x, v, 0.5, bottom=bottom, label=p)
        bottom += v
    for p in rows[-1]["ceiling"]["time_based_amortised_ms_per_frame_at_ceiling"]:
        v = np.array([r["ceiling"]["time_based_amortised_ms_per_frame_at_ceiling"].get(p) or 0 for r in rows])
        ax.bar(x, v, 0.5, bottom=bottom, label=f"{p} (amortised)", hatch="//", alpha=0.6)
        bottom += v
    ax.set_xticks(x, labels)
    ax.set_ylabel("CPU ms per frame (each stage alone)")
    ax.set_title("stage costs")
    ax.legend(fontsize=7)
    fig.suptitle(f"perceptd pipeline, {data['machine']['cpu']} x{data['machine']['cores']}, "
                 f"{data['device']}, {data['date'][:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    if "soak" in data:
        _plot_soak(data, path.with_name(path.stem + "-soak.png"))


def plot_all(data: dict[str, Any], path: Path) -> None:
    """The PNGs the run has data for: `path` itself, -soak.png, -paths.png, -load.png."""
    import matplotlib

    matplotlib.use("Agg")
    if data["configurations"]:
        plot(data, path)
    elif "soak" in data:
        _plot_soak(data, path.with_name(path.stem + "-soak.png"))
    if {"vision_paths", "max_streams_30fps", "batching_sweep"} & data.keys():
        _plot_gpu_path(data, path.with_name(path.stem + "-paths.png"))
    if data.get("load_sweep", {}).get("points"):
        from perceptd.bench.load_sweep import plot_load_sweep

        plot_load_sweep(data["load_sweep"], path.with_name(path.stem + "-load.png"),
                        f"perceptd under load, {data['machine']['cpu']} x{data['machine']['cores']}, "
                        f"{data['device']}, {data['date'][:16]}")


def _plot_soak(data: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    s = data["soak"]["run"]["samples"]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(np.asarray(s["t_s"]) / 60, s["rss_mb"], label="RSS (MB)")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS MB")
    ax2 = ax.twinx()
    ax2.plot(np.asarray(s["t_s"]) / 60, s["fds"], color="C1", label="open fds")
    ax2.set_ylabel("open fds")
    ax.axvline(data["soak"]["warmup_s"] / 60, color="#999", linestyle=":")
    ax.set_title(f"soak: 4 streams at 30 fps, {data['soak']['minutes']} min, {data['date'][:10]}")
    fig.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_gpu_path(data: dict[str, Any], path: Path) -> None:
    """One panel per extra the run has: vision paths side by side, the stream search (what the
    GPU targets are read from), the batching sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, fn) for k, fn in (("vision_paths", _panel_paths), ("max_streams_30fps", _panel_findmax),
                                    ("batching_sweep", _panel_sweep)) if data.get(k)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.8), squeeze=False)
    for ax, (key, fn) in zip(axes[0], panels, strict=True):
        fn(ax, data[key], data["device"])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _panel_paths(ax, vp: dict[str, Any], device: str) -> None:
    names = list(VISION_PATHS)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [vp[n]["throughput_fps"] for n in names], 0.4, label="frames/s")
    ax.bar(x + 0.2, [vp[n]["frames_per_daemon_cpu_second"] for n in names], 0.4,
           label="frames per daemon CPU-s")
    ax.set_xticks(x, [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_title(f"vision path, {vp['streams']} streams at max rate ({device})")
    ax.legend(fontsize=8)


def _panel_findmax(ax, f: dict[str, Any], device: str) -> None:
    pts = f["points"]
    n = [p["streams"] for p in pts]
    h1 = ax.plot(n, [p["fps"] / p["streams"] for p in pts], "o-", label="fps per stream")
    ax.set_ylim(0, 33)
    ax2 = ax.twinx()
    h2 = ax2.plot(n, [p["latency_ms"].get("p99") or 0 for p in pts], "s--", color="C3", label="p99 ms")
    ax2.axhline(f["p99_target_ms"], color="C3", linestyle=":")
    ax2.set_ylim(0, None)
    ax2.set_ylabel("capture-to-publish p99 ms")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("30 fps streams")
    ax.set_ylabel("frames/s per stream")
    ax.set_title(f"most streams sustained: {f['max_streams_sustained']} ({device})")
    ax.legend(handles=h1 + h2, loc="lower left", fontsize=8)


def _panel_sweep(ax, sw: dict[str, Any], device: str) -> None:
    for w in sorted({p["max_wait_ms"] for p in sw["points"]}):
        pts = [p for p in sw["points"] if p["max_wait_ms"] == w]
        ax.plot([p["max_batch"] for p in pts], [p["latency_ms"].get("p99") or 0 for p in pts], "o-",
                label=f"p99, wait {w:g} ms")
        ax.plot([p["max_batch"] for p in pts], [p["latency_ms"].get("p50") or 0 for p in pts], "x:",
                label=f"p50, wait {w:g} ms")
    for p in sw["points"]:
        if not p["sustained"]:
            ax.annotate(f"{100 * (p['dropped_fraction'] or 0):.0f}% drop",
                        (p["max_batch"], p["latency_ms"].get("p99") or 0), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("vision.max_batch")
    ax.set_ylabel("capture-to-publish ms")
    ax.set_title(f"batching sweep, {sw['streams']} streams at 30 fps ({device})")
    ax.legend(fontsize=7)


def main(bundle_dir: Path, args) -> Path:
    data = bench_pipeline(bundle_dir, args)
    print_table(data)
    path = write_json(f"pipeline-{args.device}", data, args.json_out)
    plot_all(data, path.with_suffix(".png"))
    print(f"wrote {path} and its PNGs")
    return path
