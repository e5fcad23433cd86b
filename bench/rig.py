"""The daemon under test, run as `perceptd run` in its own process, and what watches it.

A child process is the honest setting: the daemon has its own interpreter (its own GIL), as
deployed, and the watchers here (a SUB socket, a command sender, a /proc sampler) cost it
nothing but the CPU they take, which is measured and reported beside the figures.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
import zmq

from perceptd.bench import media

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Scenario:
    """One end-to-end configuration: N file-fed cameras (+ a WAV, + commands)."""

    name: str
    streams: int
    realtime: bool  # False: max rate (240 fps files, `block` queues); True: live-like
    fps: float = 30.0  # realtime only: the source rate (15 reads a 30 fps file at 15)
    file_fps: float | None = None  # realtime only: the file's own rate (None: 30; a faster source needs it)
    media_dir: Path | None = None  # where videos of a one-off file_fps are muxed (None: bench/.cache)
    audio: bool = True
    commands_per_s: float = 1.0
    device: str = "cpu"


def scenario_config(sc: Scenario, bundle_dir: Path, threads: int = 1,
                    vision: dict[str, Any] | None = None, base: Path | None = None,
                    runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config (default: the repo's config.yaml) with the scenario's sources, queues, bundle
    and free ports; everything else (events, vision, audio, speech) as configured."""
    cfg = yaml.safe_load((base or REPO / "config.yaml").read_text()) or {}
    file_fps = (sc.file_fps or 30) if sc.realtime else 240
    videos = sc.media_dir or media.CACHE
    cams = [{"id": f"cam{i}", "uri": str(media.video(i, file_fps, cache=videos)), "loop": True,
             "fps": sc.fps if sc.realtime else None} for i in range(sc.streams)]
    cfg["sources"] = {"cameras": cams, "audio_files": (
        [{"id": "wav0", "path": str(media.speech_wav()), "loop": True, "realtime": True}]
        if sc.audio else [])}
    # paced files stand in for live cameras: the daemon's live policy (the newest frame per
    # camera); queues hold ~2 frames per stream (at least 8 and 16): 64 live cameras need more
    # room than 8 frames to ride out one slow batch
    live = "latest" if sc.realtime else "block"
    cfg["pipeline"] = {**(cfg.get("pipeline") or {}),
                       "frames": {"size": max(8, 2 * sc.streams), "policy": live},
                       "prepared": {"size": max(16, 2 * sc.streams), "policy": live}}
    cfg["bundle"] = {"dir": str(bundle_dir.parent), "version": bundle_dir.name}
    cfg["runtime"] = {**(cfg.get("runtime") or {}), "device": sc.device, "intra_op_threads": threads,
                      **(runtime or {})}
    cfg["publish"] = {"endpoint": f"tcp://127.0.0.1:{free_port()}", "sndhwm": 100_000}
    cfg["control"] = {"endpoint": f"tcp://127.0.0.1:{free_port()}"}
    cfg["health"] = {"interval_s": 1.0}
    # /healthz, /metrics and the console stay as configured, on a free port: two daemons (two
    # benchmarks, or a benchmark beside a test run) must not both want the default 9460
    cfg["http"] = {**(cfg.get("http") or {}), "port": free_port()}
    if vision:
        cfg["vision"] = {**cfg.get("vision", {}), **vision}
    return cfg


# --------------------------------------------------------------------------- /proc


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def system_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (user+nice+system+irq+softirq+steal)."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    v = [int(x) for x in parts]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK


class CpuWindow:
    """CPU used by the daemon, by this process and by everything else, over a window."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0 = time.monotonic()
        self.d0 = proc_cpu_s(pid)
        self.m0 = time.process_time()
        self.s0 = system_busy_s()

    def read(self) -> dict[str, float]:
        dt = time.monotonic() - self.t0
        daemon = (proc_cpu_s(self.pid) - self.d0) / dt
        bench = (time.process_time() - self.m0) / dt
        total = (system_busy_s() - self.s0) / dt
        return {"wall_s": dt, "daemon_cores": daemon, "bench_cores": bench,
                "other_cores": max(0.0, total - daemon - bench), "system_cores": total}


# --------------------------------------------------------------------------- watchers


class Collector:
    """SUB to every topic; keeps per message (topic, seq, t_capture, t_publish, t_recv)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.rows: list[tuple[str, int, int, int, int, str | None]] = []
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from perceptd.daemon.control.client import subscribe

        for topic, msg in subscribe(self.endpoint, ctx=self._ctx, stop=self._stop, rcvhwm=100_000):
            # a command's origin rides along: typed (control) and spoken (speech) commands have
            # different clocks (a spoken one is stamped at the end of speech, before recognition)
            row = (topic, msg["seq"], msg["t_capture_ns"], msg["t_publish_ns"], time.monotonic_ns(),
                   msg.get("source") if topic == "command" else None)
            with self._lock:
                self.rows.append(row)
                if topic.startswith("event.") or topic == "command":
                    self.events.append(msg)

    def mark(self) -> int:
        with self._lock:
            return len(self.rows)

    def since(self, mark: int) -> list[tuple[str, int, int, int, int, str | None]]:
        with self._lock:
            return self.rows[mark:]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._ctx.term()


class CommandSender:
    """A text command over the control socket every 1/rate s (what a user or app would do)."""

    def __init__(self, endpoint: str, rate: float) -> None:
        self.endpoint = endpoint
        self.period = 1.0 / rate if rate > 0 else 0.0
        self.sent = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commands", daemon=True)
        if self.period:
            self._thread.start()

    def _run(self) -> None:
        from perceptd.daemon.control.client import ControlError, send_request

        ctx = zmq.Context()
        k = 0
        due = time.monotonic()
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            due += self.period
            try:
                reply = send_request(self.endpoint, {"type": "command",
                                                     "text": media.COMMANDS[k % len(media.COMMANDS)]},
                                     timeout_s=2.0, ctx=ctx)
                self.sent += bool(reply.get("ok"))
                self.failed += not reply.get("ok")
            except ControlError:
                self.failed += 1
            k += 1
        ctx.term()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(3)


@dataclass
class Samples:
    t: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)


class ProcSampler:
    """RSS, open fds and threads of the daemon every `period` s (the soak figures)."""

    def __init__(self, pid: int, period: float) -> None:
        self.pid = pid
        self.period = period
        self.samples = Samples()
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                n_threads = len(os.listdir(f"/proc/{self.pid}/task"))
                self.samples.rss_mb.append(proc_rss_mb(self.pid))
                self.samples.fds.append(proc_fds(self.pid))
                self.samples.threads.append(n_threads)
                self.samples.t.append(time.monotonic() - self._t0)
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


class GpuSampler:
    """GPU utilisation (%) and memory used (MiB) every 0.5 s through nvidia-smi, for a window.

    The GPU machine is exclusive to the benchmark, so the whole device's figures are the
    daemon's.  Without nvidia-smi it records nothing and `summary()` is None."""

    def __init__(self) -> None:
        self.util: list[float] = []
        self.mem_mb: list[float] = []
        self._proc: subprocess.Popen | None = None
        try:
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", "500"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return
        self._thread = threading.Thread(target=self._read, name="gpu-sampler", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                u, m = (float(v) for v in line.split(",")[:2])
            except ValueError:
                continue
            self.util.append(u)
            self.mem_mb.append(m)

    def summary(self) -> dict[str, float] | None:
        if self._proc is None:
            return None
        self._proc.terminate()
        try:
            self._proc.wait(2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._thread.join(2)
        if not self.util:
            return None
        return {"util_mean_pct": round(float(np.mean(self.util)), 1), "util_max_pct": max(self.util),
                "mem_used_max_mb": max(self.mem_mb), "samples": len(self.util)}


# --------------------------------------------------------------------------- the daemon


class DaemonRun:
    """`python -m perceptd run -c CONFIG` with a SUB collector and a command sender."""

    def __init__(self, cfg: dict[str, Any], workdir: Path, env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.path = workdir / "perceptd.yaml"
        self.path.write_text(yaml.safe_dump(cfg))
        self.log_path = workdir / "daemon.log"
        self.events_endpoint = cfg["publish"]["endpoint"]
        self.control_endpoint = cfg["control"]["endpoint"]
        self._log = self.log_path.open("wb")
        self.collector = Collector(self.events_endpoint)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "perceptd", "run", "-c", str(self.path)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO),
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.commands: CommandSender | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self, timeout: float = 3.0) -> dict[str, Any]:
        from perceptd.daemon.control.client import send_request

        return send_request(self.control_endpoint, {"type": "status"}, timeout_s=timeout)

    def wait_ready(self, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            try:
                reply = self.status(timeout=1.0)
                if reply.get("ok"):
                    return reply
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.2)
        raise TimeoutError(f"daemon not ready in {timeout} s:\n{self.log()}")

    def start_commands(self, rate: float) -> None:
        self.commands = CommandSender(self.control_endpoint, rate)

    def stop(self, timeout: float = 15.0) -> int:
        if self.commands is not None:
            self.commands.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self.collector.close()
        self._log.close()
        return rc

    def log(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def percentiles(values_ms: list[float] | np.ndarray) -> dict[str, float | int | None]:
    v = np.asarray(values_ms, dtype=np.float64)
    if v.size == 0:
        return {"p50": None, "p90": None, "p99": None, "max": None, "n": 0}
    p50, p90, p99 = np.percentile(v, [50, 90, 99])
    return {"p50": round(float(p50), 2), "p90": round(float(p90), 2), "p99": round(float(p99), 2),
            "max": round(float(v.max()), 2), "n": int(v.size)}
