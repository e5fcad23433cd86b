"""What every benchmark result records: machine, versions, providers, date, exact command."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

# PERCEPTD_BENCH_RESULTS moves results elsewhere (dry runs, the GPU machine's scratch space)
RESULTS = Path(os.environ.get("PERCEPTD_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def environment() -> dict[str, Any]:
    import onnxruntime as ort

    def ver(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "command": " ".join(["perceptd", *sys.argv[1:]]) if sys.argv else "",
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()},
        "python": platform.python_version(),
        "versions": {p: ver(p) for p in ("onnxruntime-gpu", "onnxruntime", "torch", "numpy",
                                          "opencv-python-headless", "pyzmq")},
        "ort_available_providers": ort.get_available_providers(),
    }


def time_call(fn: Callable[[], Any], repeat: int, warmup: int = 3) -> dict[str, float]:
    """Median and p90 wall time in ms (median: robust to a noisy neighbour on 2 cores)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    return {
        "median_ms": statistics.median(samples),
        "p90_ms": samples[min(len(samples) - 1, int(0.9 * len(samples)))],
        "n": repeat,
    }


def write_json(name: str, data: dict[str, Any], extra_path: str | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{name}-{stamp}.json"
    text = json.dumps(data, indent=2)
    path.write_text(text)
    if extra_path:
        Path(extra_path).write_text(text)
    return path
