"""Run every fault scenario at full repetition and regenerate docs/reliability.md (+ .json).

    python -m tests.reliability.report            # full counts (~10 min on 2 cores)
    python -m tests.reliability.report --short    # the CI counts, for a quick look

A scenario that raises becomes a row saying so: the report is written whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tests.reliability import scenarios as sc
from tests.reliability.harness import REPO, Result, Rig, can_mount, make_fake_bundles, now, reps
from tests.rigs.pulse import pulse_unavailable_reason

COLUMNS = [("scenario", "scenario"), ("reps", "reps"), ("detect", "time to detect"),
           ("recover", "time to recover"), ("lost", "events lost / expected"),
           ("stayed_up", "daemon stayed up"), ("notes", "notes")]


def _run(results: list[Result], name: str, fn: Callable[[], Result]) -> None:
    t = now()
    try:
        res = fn()
    except Exception as exc:  # noqa: BLE001 - the report records it
        res = Result(name, stayed_up=False, notes=[f"scenario raised {type(exc).__name__}: "
                                                   f"{str(exc).splitlines()[0][:200]}"])
        traceback.print_exc()
    res.figures["wall_s"] = round(now() - t, 1)
    print(f"[reliability] {res.row()}", flush=True)
    results.append(res)


def faults(tmp: Path, results: list[Result]) -> None:
    rig = Rig(tmp)
    try:
        rig.add_udp_camera("camera0")
        rig.add_udp_camera("camera1", relay=True)
        if not pulse_unavailable_reason():
            rig.add_mic()
        rig.write_config(publish={"sndhwm": 100, "endpoint": f"ipc://{tmp}/events.sock"})
        rig.start()
        for cid in ("camera0", "camera1"):
            rig.wait_data("vision", cid, now(), 30)
        _run(results, "baseline", lambda: sc.baseline(rig, 10.0))
        _run(results, "camera restarts", lambda: sc.camera_restarts(rig, "camera0", reps(3, 20)))
        _run(results, "stall", lambda: sc.stream_stall(rig, "camera0", reps(1, 5)))
        _run(results, "corrupt", lambda: sc.corrupt_packets(rig, "camera1", reps(4.0, 10.0)))
        _run(results, "corrupt heavy", lambda: sc.corrupt_packets(rig, "camera1", reps(4.0, 10.0), 0.5))
        if rig.mic is not None:
            _run(results, "mic", lambda: sc.mic_vanishes(rig, reps(1, 5)))
            _run(results, "overflow", lambda: sc.audio_overflow(rig, reps(4.0, 10.0), reps(2.0, 6.0)))
        _run(results, "slow subscriber", lambda: sc.slow_subscriber(rig, reps(15.0, 30.0)))
        if can_mount():
            _run(results, "bundle ro", lambda: sc.bundle_readonly(rig))
        _run(results, "config", lambda: sc.config_garbage(rig, list(sc.GARBAGE)))
        _run(results, "model", lambda: sc.corrupt_model(rig))
        gaps = rig.seq_gaps()
        results.append(Result("whole fault run: one process, one run_id", stayed_up=rig.stayed_up(),
                              counts={"seq gaps seen by the subscriber": (gaps, 0)},
                              notes=[f"{len(rig.collector.snapshot()) if rig.collector else 0} "
                                     "messages received"]))
    finally:
        rig.close()


def restarts(tmp: Path, results: list[Result]) -> None:
    rig = Rig(tmp)
    late = tmp / "late.mp4"
    try:
        rig.add_udp_camera("camera0")
        rig.camera_cfg("late", str(late), loop=True)
        rig.camera_cfg("dev", "/dev/video57")
        rig.write_config()
        rig.start()
        _run(results, "missing device", lambda: sc.missing_device(rig, "late", late, "dev"))
        _run(results, "sigkill", lambda: sc.sigkill_restarts(rig, reps(2, 10), random.Random(1)))
        _run(results, "sigkill swap", lambda: sc.sigkill_during_swap(rig, reps(1, 6), random.Random(2)))
    finally:
        rig.close()
    root, a, b = make_fake_bundles(tmp)
    _run(results, "sigkill promote",
         lambda: sc.sigkill_during_promote(root, a, b, reps(10, 50), random.Random(3)))


def samples(tmp: Path, results: list[Result]) -> None:
    state = tmp / "state"
    state.mkdir()
    mounted = can_mount() and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(state)], check=False
    ).returncode == 0
    rig = Rig(tmp)
    try:
        rig.add_udp_camera("camera0")
        rig.write_config(samples=sc.samples_config(state / "samples"))
        rig.start()
        if mounted:
            _run(results, "disk full", lambda: sc.disk_full(rig, state))
        _run(results, "sigkill samples", lambda: sc.sigkill_during_sample_writes(
            rig, state / "samples", reps(2, 10), random.Random(4)))
    finally:
        rig.close()
        if mounted:
            subprocess.run(["umount", "-l", str(state)], check=False)


def table(results: list[Result]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in results:
        row = r.row()
        lines.append("| " + " | ".join(row[k].replace("|", "/") for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def _commit() -> str:
    res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                         text=True, check=False)
    return res.stdout.strip() or "unknown"


def write_docs(results: list[Result], wall_s: float, full: bool, out: Path) -> None:
    load = os.getloadavg()
    meta = (f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m tests.reliability.report"
            f"{'' if full else ' --short'}` at commit {_commit()} on {os.cpu_count()} cores "
            f"({platform.machine()}, load average {load[0]:.1f} at the end, shared with other work); "
            f"{'full' if full else 'CI'} repetition counts; {wall_s / 60:.1f} min.")
    template = (Path(__file__).parent / "report_template.md").read_text()
    text = template.format(meta=meta, table=table(results))
    (out / "reliability.md").write_text(text)
    (out / "reliability.json").write_text(json.dumps(
        {"meta": meta, "results": [r.to_json() for r in results]}, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="CI repetition counts")
    ap.add_argument("--out", default=str(REPO / "docs"), help="folder for reliability.md/.json")
    args = ap.parse_args(argv)
    if not args.short:
        os.environ["PERCEPTD_FULL"] = "1"
    results: list[Result] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="perceptd-rel-") as d:
        for name, fn in (("faults", faults), ("restarts", restarts), ("samples", samples)):
            (Path(d) / name).mkdir()
            fn(Path(d) / name, results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_docs(results, time.monotonic() - t0, not args.short, out)
    print(f"wrote {out / 'reliability.md'}")
    return 0 if all(r.stayed_up for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
