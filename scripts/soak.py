#!/usr/bin/env python3
"""Soak test: the real daemon on 4 camera streams + a microphone + a command every second for a
configurable time, sampled every 10 s: RSS, open FDs, threads, queue depths, capture->publish
latency p99 and command round-trip p99, to a CSV, a PNG and a JSON/markdown summary.

    python scripts/soak.py --minutes 60 --out docs/soak          # the documented hour
    python scripts/soak.py --minutes 10 --out /tmp/soak          # a shorter look

Pass (after warm-up): RSS and open FDs flat within 5 % (mean of the last three samples against
the first three), no queue growing (per queue, the median depth over the last third of the run at
most 2 items above the first third's), no seq gap at the subscriber, the daemon alive with one
run_id throughout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.reliability.harness import Rig, now  # noqa: E402 - after the path fix above

PHOTOS = ["cat.jpg", "coffee.jpg", "motorcycle.jpg", "astronaut.jpg"]
SPEECH = REPO / "samples" / "audio" / "turn_on_the_kitchen_lights.wav"
COMMANDS = ["turn on the lights", "play some music", "turn the volume down", "what time is it",
            "switch off the light", "call mom"]
FIELDS = ["t_s", "rss_mb", "fds", "threads", "queue_max_depth", "queue_depths", "latency_p99_ms",
          "command_p99_ms", "messages", "commands_sent", "commands_answered", "dropped_total"]


def proc_stats(pid: int) -> tuple[float, int, int]:
    """(RSS MB, open FDs, threads) from /proc."""
    rss_kb = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd")), threads


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(0.99 * len(v)))]


class Tracker:
    """Folds messages older than the current interval into running totals, so the subscriber's
    memory stays flat over an hour (seq gaps, run ids, latencies, command verdict times)."""

    def __init__(self) -> None:
        self.last_seq: dict[str, int] = {}
        self.gaps = 0
        self.messages = 0
        self.latencies_ms: list[float] = []
        self.verdicts: dict[str, float] = {}  # command text -> when its verdict arrived

    def fold(self, msgs: list[dict[str, Any]]) -> None:
        for m in msgs:
            prev = self.last_seq.get(m["run_id"])
            if prev is not None and m["seq"] != prev + 1:
                self.gaps += max(0, m["seq"] - prev - 1)
            self.last_seq[m["run_id"]] = m["seq"]
            self.messages += 1
            if m["topic"] != "health":
                self.latencies_ms.append((m["t_publish_ns"] - m["t_capture_ns"]) / 1e6)
            if m["topic"] == "command":
                self.verdicts[m["text"]] = m["_t_recv"]


class Commander:
    """A command every `period_s`; the round trip is send -> its `command` verdict."""

    def __init__(self, rig: Rig, tracker: Tracker, period_s: float = 1.0) -> None:
        self.rig = rig
        self.tracker = tracker
        self.period_s = period_s
        self.pending: dict[str, float] = {}
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Commander:
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self.rig.daemon is not None
        i = 0
        while not self._stop.wait(self.period_s):
            text = f"{COMMANDS[i % len(COMMANDS)]} #{i}"
            i += 1
            t = now()
            try:
                if self.rig.daemon.request({"type": "command", "text": text})["ok"]:
                    self.pending[text] = t
                    self.sent += 1
            except Exception:  # noqa: BLE001 - a missed reply shows as sent < answered
                pass

    def round_trips(self, since: float) -> tuple[list[float], int]:
        assert self.rig.collector is not None
        seen = dict(self.tracker.verdicts)
        seen.update({m["text"]: m["_t_recv"]
                     for m in self.rig.collector.snapshot(lambda m: m["topic"] == "command")})
        rtts = [seen[t] - ts for t, ts in self.pending.items() if t in seen and ts >= since]
        answered = sum(1 for t in self.pending if t in seen)
        return rtts, answered

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Speaker:
    """Plays the spoken command into the virtual microphone every `period_s` (VAD + ASR load)."""

    def __init__(self, rig: Rig, period_s: float = 10.0) -> None:
        self.rig = rig
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Speaker:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            if self.rig.mic is not None:
                try:
                    self.rig.mic.play(SPEECH, timeout=30)
                except Exception:  # noqa: BLE001 - the soak goes on; the audio rows show it
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(35)


@dataclass
class Summary:
    minutes: float
    warmup_s: float
    samples: int
    rss_drift: float
    fd_drift: float
    thread_drift: float
    queue_growth: float
    queue_max_depth: int
    seq_gaps: int
    run_ids: int
    alive: bool
    latency_p99_ms: float
    command_p99_ms: float
    commands_sent: int
    commands_answered: int
    messages: int
    checks: dict[str, bool] = field(default_factory=dict)
    passed: bool = False


def drift(rows: list[dict[str, Any]], key: str) -> float:
    first = statistics.mean(r[key] for r in rows[:3])
    last = statistics.mean(r[key] for r in rows[-3:])
    return (last - first) / first if first else 0.0


def queue_growth(post: list[dict[str, Any]], names: Iterable[str]) -> float:
    """Largest per-queue rise of the median depth from the first third of the run to the last:
    a backlog that builds up moves the median; a burst of load (point samples) does not."""
    third = max(1, len(post) // 3)
    growth = 0.0
    for name in names:
        start = statistics.median(r["queue_depths"].get(name, 0) for r in post[:third])
        end = statistics.median(r["queue_depths"].get(name, 0) for r in post[-third:])
        growth = max(growth, end - start)
    return growth


def checks(s: Summary, sent: int, answered: int) -> dict[str, bool]:
    return {"rss flat within 5%": abs(s.rss_drift) <= 0.05, "fds flat within 5%": abs(s.fd_drift) <= 0.05,
            "no growing queue": s.queue_growth <= 2.0, "no seq gap": s.seq_gaps == 0,
            "one run, alive": s.alive and s.run_ids == 1, "every command answered": sent - answered <= 1}


def recheck(out: Path) -> Summary:
    """Re-derive the checks of a finished run from its soak.csv + soak.json (after a change of
    criteria) and rewrite its summary files; the measurements are not touched."""
    rows = []
    with (out / "soak.csv").open() as f:
        for r in csv.DictReader(f):
            row: dict[str, Any] = {k: float(v) for k, v in r.items() if k != "queue_depths"}
            row["queue_depths"] = json.loads(r["queue_depths"])
            rows.append(row)
    s = Summary(**json.loads((out / "soak.json").read_text()))
    post = [r for r in rows if r["t_s"] >= s.warmup_s] or rows
    s.queue_growth = queue_growth(post, rows[0]["queue_depths"])
    s.checks = checks(s, s.commands_sent, s.commands_answered)
    s.passed = all(s.checks.values())
    write_outputs(rows, s, out, s.warmup_s)
    return s


def summarise(rows: list[dict[str, Any]], rig: Rig, cmd: Commander, tracker: Tracker, minutes: float,
              warmup_s: float, queue_sizes: dict[str, int], alive: bool) -> Summary:
    post = [r for r in rows if r["t_s"] >= warmup_s] or rows
    assert rig.collector is not None
    tracker.fold(rig.collector.pop_older(float("inf")))
    rtts, answered = cmd.round_trips(0.0)
    growth = queue_growth(post, queue_sizes)
    s = Summary(minutes=minutes, warmup_s=warmup_s, samples=len(rows), rss_drift=drift(post, "rss_mb"),
                fd_drift=drift(post, "fds"), thread_drift=drift(post, "threads"), queue_growth=growth,
                queue_max_depth=max(r["queue_max_depth"] for r in post), seq_gaps=tracker.gaps,
                run_ids=len(tracker.last_seq), alive=alive,
                latency_p99_ms=p99(tracker.latencies_ms), command_p99_ms=p99([x * 1e3 for x in rtts]),
                commands_sent=cmd.sent, commands_answered=answered, messages=tracker.messages)
    s.checks = checks(s, cmd.sent, answered)
    s.passed = all(s.checks.values())
    return s


def plot(rows: list[dict[str, Any]], out: Path, warmup_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] / 60 for r in rows]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7), sharex=True)
    for ax, key, label in zip(axes.flat, ["rss_mb", "fds", "threads", "queue_max_depth", "latency_p99_ms",
                                          "command_p99_ms"],
                              ["RSS (MB)", "open FDs", "threads", "deepest queue (items)",
                               "capture->publish p99 (ms)", "command round trip p99 (ms)"], strict=True):
        ax.plot(t, [r[key] for r in rows], marker=".")
        ax.axvline(warmup_s / 60, color="grey", ls=":", lw=1)
        ax.set_title(label)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("minutes")
    fig.suptitle("perceptd soak: 4 cameras + microphone + a command per second")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def run(minutes: float, out: Path, warmup_s: float = 60.0, interval_s: float = 10.0,
        cameras: int = 4, mic: bool = True, log=print) -> Summary:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="perceptd-soak-") as d:
        rig = Rig(Path(d))
        try:
            for i in range(cameras):
                rig.add_udp_camera(f"camera{i}", REPO / "samples" / "images" / PHOTOS[i % len(PHOTOS)])
            from tests.rigs.pulse import pulse_unavailable_reason

            if mic and not pulse_unavailable_reason():
                rig.add_mic()
            rig.write_config(health={"interval_s": 5.0})
            status = rig.start()
            rig.canaries[-1].stop()  # the Commander below is this run's command load
            queue_sizes = {k: v["maxsize"] for k, v in status["queues"].items()}
            tracker = Tracker()
            cmd = Commander(rig, tracker).start()
            speaker = Speaker(rig).start()
            rows = sample_loop(rig, cmd, tracker, minutes, interval_s, queue_sizes, log)
            cmd.stop()
            speaker.stop()
            time.sleep(2.0)
            alive = rig.stayed_up()
            summary = summarise(rows, rig, cmd, tracker, minutes, warmup_s, queue_sizes, alive)
        finally:
            rig.close()
    write_outputs(rows, summary, out, warmup_s)
    return summary


def sample_loop(rig: Rig, cmd: Commander, tracker: Tracker, minutes: float, interval_s: float,
                queue_sizes: dict[str, int], log) -> list[dict[str, Any]]:
    assert rig.daemon is not None and rig.collector is not None
    t0 = now()
    rows: list[dict[str, Any]] = []
    next_t = t0 + interval_s
    while now() < t0 + minutes * 60:
        time.sleep(max(0.0, next_t - now()))
        t_prev, next_t = next_t - interval_s, next_t + interval_s
        rss, fds, threads = proc_stats(rig.daemon.proc.pid)
        st = rig.status()
        depths = {k: v["depth"] for k, v in st["queues"].items()}
        recent = rig.collector.snapshot(lambda m, a=t_prev: m["_t_recv"] >= a and m["topic"] != "health")
        rtts, answered = cmd.round_trips(t_prev - 5)
        lat = [(m["t_publish_ns"] - m["t_capture_ns"]) / 1e6 for m in recent]
        row = {"t_s": round(now() - t0, 1), "rss_mb": round(rss, 1), "fds": fds, "threads": threads,
               "queue_max_depth": max(depths.values()), "queue_depths": depths,
               "queue_max_frac_depth": max(depths[k] / queue_sizes[k] for k in depths if queue_sizes.get(k)),
               "latency_p99_ms": round(p99(lat), 1),
               "command_p99_ms": round(p99([x * 1e3 for x in rtts]), 1), "messages": len(recent),
               "commands_sent": cmd.sent, "commands_answered": answered,
               "dropped_total": sum(v["dropped"] for v in st["queues"].values())}
        rows.append(row)
        tracker.fold(rig.collector.pop_older(t_prev - 5))
        log(" ".join(f"{k}={row[k]}" for k in FIELDS if k != "queue_depths"))
    return rows


def write_outputs(rows: list[dict[str, Any]], summary: Summary, out: Path, warmup_s: float) -> None:
    with (out / "soak.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "queue_depths": json.dumps(r["queue_depths"], separators=(",", ":"))})
    (out / "soak.json").write_text(json.dumps(asdict(summary), indent=1))
    plot(rows, out / "soak.png", warmup_s)
    checks = "\n".join(f"| {k} | {'pass' if v else '**FAIL**'} |" for k, v in summary.checks.items())
    (out / "soak.md").write_text(
        f"# Soak summary ({summary.minutes:g} min, warm-up {summary.warmup_s:g} s)\n\n"
        f"| check | result |\n|---|---|\n{checks}\n\n"
        f"RSS drift {summary.rss_drift:+.1%}, FD drift {summary.fd_drift:+.1%}, thread drift "
        f"{summary.thread_drift:+.1%}; deepest queue seen {summary.queue_max_depth} items (growth "
        f"{summary.queue_growth:+.1f}); {summary.messages:,} messages, seq gaps {summary.seq_gaps}; "
        f"capture->publish p99 {summary.latency_p99_ms:.0f} ms; command round trip p99 "
        f"{summary.command_p99_ms:.0f} ms ({summary.commands_answered}/{summary.commands_sent} answered).\n\n"
        f"![soak](soak.png)\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--warmup-s", type=float, default=60.0, help="excluded from the flatness checks")
    ap.add_argument("--interval-s", type=float, default=10.0)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--no-mic", action="store_true")
    ap.add_argument("--out", default=str(REPO / "docs" / "soak"))
    ap.add_argument("--recheck", action="store_true",
                    help="only re-derive the checks of the run in --out from its CSV")
    args = ap.parse_args(argv)
    if args.recheck:
        s = recheck(Path(args.out))
        print(json.dumps(asdict(s), indent=1))
        return 0 if s.passed else 1
    s = run(args.minutes, Path(args.out), args.warmup_s, args.interval_s, args.cameras, not args.no_mic)
    print(json.dumps(asdict(s), indent=1))
    return 0 if s.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
