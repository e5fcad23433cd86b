"""`perceptd demo`: the real daemon on bundled sample media, with a live terminal view.

It builds a looped video from the sample photos and a looped soundtrack from the sample
speech, starts the daemon in this process on free loopback ports, sends scripted text
commands over the real control socket, and shows what a subscriber receives.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
import zmq

from perceptd.daemon.config import Config, load_config
from perceptd.daemon.control.client import send_request, subscribe
from perceptd.daemon.publish.zmq_pub import PublisherConfig
from perceptd.daemon.sources.camera import CameraConfig
from perceptd.daemon.sources.wavfile import WavFileConfig, load_audio

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
PHOTOS = ["cat.jpg", "coffee.jpg", "astronaut.jpg", "motorcycle.jpg"]
SPEECH = ["turn_on_the_kitchen_lights.wav", "play_some_music.wav", "switch_the_lamp_off.wav"]
SCRIPT = [(4.0, "turn on the lights"), (11.0, "play some music"),
          (18.0, "take me to the nearest gas station"), (24.0, "switch the lamp off")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_video(out: Path, seconds_per_photo: float = 5.0, fps: int = 15) -> Path:
    """A 640x480 MP4 showing each sample photo in turn (OpenCV's bundled FFmpeg encodes)."""
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))  # pyright: ignore[reportAttributeAccessIssue]
    for name in PHOTOS:
        img = cv2.imread(str(SAMPLES / "images" / name))
        assert img is not None, name  # the sample photos ship with the repository
        frame = cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA)
        for _ in range(int(seconds_per_photo * fps)):
            writer.write(frame)
    writer.release()
    return out


def make_soundtrack(out: Path) -> Path:
    parts = [load_audio(SAMPLES / "audio" / n) for n in SPEECH]
    gap = np.zeros(16_000 * 3, np.float32)
    sf.write(str(out), np.concatenate([p for part in parts for p in (part, gap)]), 16_000)
    return out


def demo_config(base: Config, media: Path) -> Config:
    sources = base.sources.model_copy(update={
        "cameras": [CameraConfig(id="camera0", uri=str(make_video(media / "demo.mp4")), loop=True,
                                 fps=10)],
        "audio_files": [WavFileConfig(id="speaker", path=make_soundtrack(media / "demo.wav"),
                                      loop=True)],
        "microphone": None,
    })
    return base.model_copy(update={
        "sources": sources,
        "publish": PublisherConfig(endpoint=f"tcp://127.0.0.1:{_free_port()}"),
        "control": base.control.model_copy(update={"endpoint": f"tcp://127.0.0.1:{_free_port()}"}),
        # a demo never collides with an installed daemon, nor talks to its broker or keys
        "http": base.http.model_copy(update={"port": 0}),
        "security": base.security.model_copy(update={"curve": False}),
        "mqtt": base.mqtt.model_copy(update={"enabled": False}),
    })


class View:
    """What the subscriber saw: recent events, per-topic rates, capture-to-publish latency."""

    def __init__(self) -> None:
        self.events: deque[dict] = deque(maxlen=14)
        self.latest: dict[str, dict] = {}
        self.counts: dict[str, int] = {}
        self.latency_ms: deque[float] = deque(maxlen=2000)
        self.lock = threading.Lock()

    def add(self, msg: dict) -> None:
        with self.lock:
            t = msg["topic"]
            self.counts[t] = self.counts.get(t, 0) + 1
            self.latency_ms.append((msg["t_publish_ns"] - msg["t_capture_ns"]) / 1e6)
            if t.startswith("event.") or t in ("command", "speech"):
                self.events.appendleft(msg)
            self.latest[t if not t.startswith("event.") else "event"] = msg


def _subscribe(endpoint: str, view: View, stop: threading.Event, echo) -> None:
    for _topic, msg in subscribe(endpoint, ctx=zmq.Context.instance(), stop=stop):
        view.add(msg)
        if echo is not None:
            echo(msg)


def _render(view: View, daemon, t0: float):
    from rich.console import Group
    from rich.table import Table

    from perceptd.daemon.control.client import format_message

    ev = Table(title=f"perceptd demo — {time.monotonic() - t0:4.0f} s — events (newest first)",
               expand=True, show_lines=False)
    ev.add_column("message", overflow="fold")
    with view.lock:
        for m in list(view.events):
            ev.add_row(format_message(m))
        lat = np.array(view.latency_ms) if view.latency_ms else np.zeros(1)
        vision = view.latest.get("vision")
    st = daemon.status()
    up = max(1e-9, st["uptime_s"])
    stages = Table(title="pipeline", expand=True)
    for col in ("stage", "items", "per s", "errors"):
        stages.add_column(col)
    for name, s in st["stages"].items():
        stages.add_row(name, str(s["items"]), f"{s['items'] / up:.1f}", str(s["errors"]))
    queues = Table(title="queues", expand=True)
    for col in ("queue", "depth", "dropped", "policy"):
        queues.add_column(col)
    for name, q in st["queues"].items():
        queues.add_row(name, f"{q['depth']}/{q['maxsize']}", str(q["dropped"]), q["policy"])
    top = ", ".join(f"{lab} {p:.2f}" for lab, p in (vision or {}).get("top", [])[:3])
    footer = (f"camera: {top}\ncapture->publish latency p50 {np.percentile(lat, 50):.1f} ms, "
              f"p99 {np.percentile(lat, 99):.1f} ms   model {st['model_version']}   "
              f"providers {sorted(set(st['providers'].values()))}")
    return Group(ev, stages, queues, footer)


def demo_main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from perceptd.daemon.app import Daemon
    from perceptd.run_cli import setup_logging

    console = Console()
    setup_logging(args.debug) if args.debug else None
    base = load_config(args.config)
    with tempfile.TemporaryDirectory(prefix="perceptd-demo-") as tmp:
        cfg = demo_config(base, Path(tmp))
        console.print("[bold]perceptd demo[/]: loading the bundle and starting the daemon ...")
        daemon = Daemon(cfg)
        daemon.start()
        if daemon.ops.http is not None and daemon.ops.console is not None:
            console.print(f"web console: [bold]{daemon.ops.http.endpoint}/[/] (open it in a browser)")
        view = View()
        stop = threading.Event()
        echo = None if console.is_terminal else _echo_events
        threading.Thread(target=_subscribe, args=(daemon.publisher.endpoint, view, stop, echo),
                         daemon=True).start()
        t0 = time.monotonic()
        script = list(SCRIPT)
        try:
            with Live(_render(view, daemon, t0), console=console, refresh_per_second=4,
                      transient=False, auto_refresh=False) if console.is_terminal else _Null() as live:
                while args.forever or time.monotonic() - t0 < args.seconds:
                    elapsed = time.monotonic() - t0
                    while script and elapsed >= script[0][0]:
                        _t, text = script.pop(0)
                        send_request(daemon.control.endpoint, {"type": "command", "text": text})
                    if live is not None:
                        live.update(_render(view, daemon, t0), refresh=True)
                    time.sleep(0.25)
        except KeyboardInterrupt:
            pass
        finally:
            daemon.stop()
            stop.set()
        _summary(console, view, daemon)
    return 0


def _echo_events(msg: dict) -> None:
    """Without a terminal (CI, pipes) print the interesting messages, one line each."""
    from perceptd.daemon.control.client import format_message

    if msg["topic"] not in ("vision", "audio"):
        print(format_message(msg), flush=True)


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _summary(console, view: View, daemon) -> None:
    lat = np.array(view.latency_ms) if view.latency_ms else np.zeros(1)
    fired = sorted({t.removeprefix("event.") for t in view.counts if t.startswith("event.")})
    console.print(f"[bold]demo done[/]: {sum(view.counts.values())} messages, events seen: "
                  f"{', '.join(fired) or 'none'}; latency p50 {np.percentile(lat, 50):.1f} ms, "
                  f"p99 {np.percentile(lat, 99):.1f} ms")
