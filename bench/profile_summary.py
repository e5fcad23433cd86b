"""Where a py-spy profile of the daemon spends its CPU: `python -m perceptd.bench.profile_summary
FILE.speedscope.json [--top N] [--json OUT]`.

py-spy samples only threads that are running (not idle ones, unless --idle), so a sample is CPU.
Each sample is put in the first category (table below, in order) that one of its frames matches;
the model work is what the benchmark's stage costs measure (ONNX Runtime, the H.264 decode, the
resize, the face detector, speech recognition, the audio front end); the rest is the pipeline's
own Python: the overhead the issue asks about.  Then the heaviest functions inclusive and the
heaviest lines (self time), all of them and those outside the model categories.

On a loaded machine py-spy also counts a thread that is runnable but waiting for a core (a lock
just released, a queue just fed), so profile a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

# (category, regex on "file:function:line", scope): first match wins.  Scope "any": some frame of
# the sample matches; "leaf": its innermost frame does (a lock wait under fusion is lock traffic,
# not fusion).  A C call shows as the Python line that made it (py-spy without --native).
CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("logging", r"[/\\]logging[/\\]", "any"),
    ("queues, locks, worker hand-off",
     r"(pipeline/queues\.py|threading\.py|pipeline/worker\.py|sources/base\.py):", "leaf"),
    ("model: ONNX Runtime run", r"onnxruntime[/\\].*:run:", "any"),
    ("model: speech recognition (CTranslate2)", r"faster_whisper|ctranslate2", "any"),
    ("model: H.264 decode (cv2 read)", r"sources/camera\.py:_stream:", "leaf"),
    ("model: vision resize (cv2)", r"inference/vision\.py:preprocess:", "any"),
    ("model: face detector (MTCNN, Python side)", r"inference/face\.py:", "any"),
    ("model: audio front end (VAD, log-mel)", r"inference/(vad|audio_frontend|audio_tagger)\.py:", "any"),
    ("fusion: evaluate (timeline, head inputs, decoders)", r"pipeline/fusion_stage\.py:evaluate:", "any"),
    ("publish: serialise + send", r"publish/zmq_pub\.py:_send:", "any"),
    ("samples logger", r"daemon/samples/", "any"),
    ("health, status, control, console", r"daemon/(health|control|console)/|daemon/ops\.py", "any"),
)


Profile = tuple[str, list[list[int]], list[float]]  # thread name, stacks (root first), weights (s)


def load_speedscope(path: Path) -> tuple[list[dict[str, Any]], list[Profile]]:
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    profiles = [(p.get("name", "?"), p["samples"], p.get("weights") or [1.0] * len(p["samples"]))
                for p in data["profiles"] if p.get("type") == "sampled"]
    return frames, profiles


def _key(f: dict[str, Any]) -> str:
    return f"{f.get('file', '?')}:{f.get('name', '?')}:{f.get('line', '')}"


def _thread(name: str) -> str:
    """py-spy names a profile 'Process P Thread T "name"'; keep the name (worker threads
    numbered -0, -1 ... count together)."""
    m = re.search(r'"([^"]*)"', name)
    return re.sub(r"-\d+$", "", m.group(1)) if m else name


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    frames, profiles = load_speedscope(path)
    keys = [_key(f) for f in frames]
    any_hit = [[i for i, (_, rx, scope) in enumerate(CATEGORIES) if re.search(rx, k)] for k in keys]
    leaf_ok = [[i for i in hits if CATEGORIES[i][2] == "leaf"] for hits in any_hit]
    any_ok = [[i for i in hits if CATEGORIES[i][2] == "any"] for hits in any_hit]
    overhead: Counter[str] = Counter()
    total = 0.0
    cats: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    cats_by_thread: dict[str, Counter[str]] = defaultdict(Counter)
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for pname, samples, weights in profiles:
        th = _thread(pname)
        for stack, w in zip(samples, weights, strict=True):
            total += w
            by_thread[th] += w
            hit = [c for i in stack for c in any_ok[i]] + (leaf_ok[stack[-1]] if stack else [])
            cat = CATEGORIES[min(hit)][0] if hit else "other Python / native"
            cats[cat] += w
            cats_by_thread[th][cat] += w
            for fn in {f"{frames[i].get('file', '?')}:{frames[i].get('name', '?')}" for i in stack}:
                inclusive[fn] += w
            if stack:
                leaf[keys[stack[-1]]] += w
                if not cat.startswith("model:"):
                    overhead[keys[stack[-1]]] += w

    def share(c: Counter[str], n: int | None = None) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / total, 2)) for k, v in c.most_common(n)] if total else []

    model = sum(v for c, v in cats.items() if c.startswith("model:"))
    return {
        "file": str(path), "samples": sum(len(s) for _, s, _ in profiles), "cpu_s": round(total, 2),
        "model_work_pct": round(100.0 * model / total, 2) if total else None,
        "categories_pct": share(cats), "threads_pct": share(by_thread),
        "categories_by_thread_pct": {th: [(k, round(100.0 * v / total, 2)) for k, v in c.most_common()]
                                     for th, c in cats_by_thread.items()},
        "inclusive_pct": share(inclusive, top), "self_lines_pct": share(leaf, top),
        "not_model_self_lines_pct": share(overhead, top),
    }


def read_task_stat(path: Path) -> dict[int, tuple[str, float]]:
    """`cat /proc/PID/task/*/stat > FILE`: per thread id, its comm and CPU ticks (utime+stime)."""
    out = {}
    for line in path.read_text().splitlines():
        head, _, rest = line.rpartition(")")
        if not rest:
            continue
        tid, _, comm = head.partition(" (")
        f = rest.split()
        out[int(tid)] = (comm, float(int(f[11]) + int(f[12])))
    return out


def thread_cpu(profile: Path, before: Path, after: Path, seconds: float) -> list[tuple[str, float]]:
    """CPU (cores) per thread over a window, exact from /proc, named as the profile names its
    threads (py-spy's ids are the OS thread ids); threads py-spy never saw keep their comm
    (libzmq's ZMQbg/..., native pools).  Contention-proof, unlike sample counts on a busy box."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    names = {}
    for p in json.loads(profile.read_text())["profiles"]:
        m = re.match(r"Thread (\d+)", p.get("name", ""))
        if m:
            names[int(m.group(1))] = _thread(p["name"])
    a, b = read_task_stat(before), read_task_stat(after)
    per: Counter[str] = Counter()
    for tid, (comm, ticks) in b.items():
        per[names.get(tid, f"{comm} (native)")] += (ticks - a.get(tid, (comm, 0.0))[1]) / tick / seconds
    return [(k, round(v, 3)) for k, v in per.most_common()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", type=Path, help="py-spy record --format speedscope output")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json", type=Path, help="also write the summary here")
    ap.add_argument("--task-stat", type=Path, nargs=2, metavar=("BEFORE", "AFTER"),
                    help="/proc/PID/task/*/stat snapshots around the window: exact CPU per thread")
    ap.add_argument("--seconds", type=float, default=20.0, help="the window between the snapshots")
    a = ap.parse_args()
    s = summarise(a.profile, a.top)
    if a.task_stat:
        s["thread_cores"] = thread_cpu(a.profile, *a.task_stat, a.seconds)
        print(f"CPU per thread from /proc over {a.seconds:g} s (cores; total "
              f"{sum(v for _, v in s['thread_cores']):.3f}):")
        for k, v in s["thread_cores"]:
            if v >= 0.001:
                print(f"  {v:6.3f}  {k}")
    print(f"{s['file']}: {s['samples']} samples ({s['cpu_s']} s of CPU), model work {s['model_work_pct']} %")
    for title, key in (("categories (% of all samples)", "categories_pct"), ("threads", "threads_pct"),
                       ("inclusive, by function", "inclusive_pct"), ("self, by line", "self_lines_pct"),
                       ("self, by line, outside the model categories", "not_model_self_lines_pct")):
        print(f"\n{title}:")
        for k, v in s[key]:
            print(f"  {v:6.2f}  {k}")
    print("\ncategories by thread:")
    for th, rows in sorted(s["categories_by_thread_pct"].items(), key=lambda kv: -sum(v for _, v in kv[1])):
        print(f"  {th}: " + ", ".join(f"{k} {v}" for k, v in rows))
    if a.json:
        a.json.write_text(json.dumps(s, indent=2))


if __name__ == "__main__":
    main()
