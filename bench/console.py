"""`perceptd bench --console`: what the web console costs the daemon, A/B in one run.

One daemon (one 15 fps camera of the sample video + the looped speech WAV + 1 command/s, the
repo's config otherwise) runs throughout; the measurement alternates windows with no page
connected (A) and with one real Chromium page on the Live view (B: the SSE stream, the live
numbers every second, a camera thumbnail every 0.5 s).  The daemon's CPU (utime + stime of its
process, all threads) per window gives the console's cost as B - A in % of one core, next to
the spread between windows of the same kind (the noise floor of this machine at that moment).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from perceptd.bench import rig
from perceptd.bench.common import environment, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def _window(d: rig.DaemonRun, seconds: float) -> float:
    w = rig.CpuWindow(d.pid)
    time.sleep(seconds)
    return w.read()["daemon_cores"]


def measure(bundle_dir: Path, seconds: float, rounds: int, warmup: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    sc = rig.Scenario("console", streams=1, realtime=True, fps=15.0)
    cfg = rig.scenario_config(sc, bundle_dir)
    port = rig.free_port()
    cfg["http"] = {**(cfg.get("http") or {}), "enabled": True, "port": port}
    url = f"http://127.0.0.1:{port}/"
    a: list[float] = []
    b: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = rig.DaemonRun(cfg, Path(tmp))
        try:
            d.wait_ready(180)
            d.start_commands(sc.commands_per_s)
            time.sleep(warmup)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
                try:
                    for _ in range(rounds):
                        a.append(_window(d, seconds))
                        page = browser.new_page()
                        page.goto(url)
                        page.wait_for_selector("#conn.ok", timeout=20_000)
                        page.wait_for_selector("#thumbs img.thumb", timeout=20_000)
                        time.sleep(1.0)  # the first thumbnail and live snapshot
                        b.append(_window(d, seconds))
                        page.close()
                        time.sleep(1.0)  # the SSE stream closes: no watcher left
                finally:
                    browser.close()
        finally:
            d.stop()
    cost = statistics.mean(b) - statistics.mean(a)
    noise = max(statistics.pstdev(a), statistics.pstdev(b))
    return {"seconds": seconds, "rounds": rounds, "no_page_cores": a, "one_page_cores": b,
            "cost_pct_of_core": round(100 * cost, 2), "noise_pct_of_core": round(100 * noise, 2),
            "target_pct_of_core": 2.0, "scenario": "1 camera 15 fps + speech WAV + 1 command/s"}


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = data["console"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = range(1, c["rounds"] + 1)
    ax.plot(xs, [100 * v for v in c["no_page_cores"]], "o-", label="no page (A)")
    ax.plot(xs, [100 * v for v in c["one_page_cores"]], "s-", label="one page on Live (B)")
    ax.set_xlabel("round (A then B)")
    ax.set_ylabel("daemon CPU, % of one core")
    ax.set_title(f"web console cost: {c['cost_pct_of_core']:+.2f} % of a core "
                 f"(noise {c['noise_pct_of_core']:.2f} %)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(bundle_dir: Path, args) -> Path:
    seconds = float(getattr(args, "seconds", 20.0))
    data = {"kind": "console", **environment(),
            "command": f"perceptd bench --console --seconds {seconds:g}",
            "console": measure(bundle_dir, seconds, rounds=3, warmup=float(getattr(args, "warmup", 5.0)))}
    path = write_json("console", data, getattr(args, "json_out", None))
    plot(data, path.with_suffix(".png"))
    c = data["console"]
    print(f"web console: daemon CPU {100 * statistics.mean(c['no_page_cores']):.1f} % of a core with no "
          f"page, {100 * statistics.mean(c['one_page_cores']):.1f} % with one page: cost "
          f"{c['cost_pct_of_core']:+.2f} % of a core (noise {c['noise_pct_of_core']:.2f} %; target < 2 %)")
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return path
