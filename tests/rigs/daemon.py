"""Run the real daemon (`perceptd run`) as a child process and watch what it publishes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
import zmq

REPO = Path(__file__).resolve().parents[2]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon_config(tmp: Path, **sections: Any) -> Path:
    """The default config.yaml with free ports, the repo's bundle and `sections` merged in."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["bundle"] = {"dir": str(REPO / "bundle"), "version": "current"}
    cfg["publish"] = {"endpoint": f"tcp://127.0.0.1:{free_tcp_port()}"}
    cfg["control"] = {"endpoint": f"tcp://127.0.0.1:{free_tcp_port()}"}
    cfg["health"] = {"interval_s": 1.0}
    cfg["http"] = {"port": free_tcp_port()}  # never the default 9460: tests run side by side
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = tmp / "perceptd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Collector:
    """Subscribes to everything and keeps (topic, message) pairs, in arrival order."""

    def __init__(self, endpoint: str, curve: Any = None) -> None:
        """`curve`: a CurveClient (perceptd.daemon.security.curve) for a CURVE daemon."""
        self.endpoint = endpoint
        self.curve = curve
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from perceptd.daemon.control.client import subscribe

        # rcvhwm 0: a starved test thread must not drop (seq-gap checks)
        for topic, msg in subscribe(self.endpoint, ctx=self._ctx, curve=self.curve, stop=self._stop,
                                    rcvhwm=0):
            msg["_topic_frame"] = topic
            msg["_t_recv"] = time.monotonic()
            with self._lock:
                self.messages.append(msg)

    def snapshot(self, pred: Callable[[dict[str, Any]], bool] = lambda m: True) -> list[dict]:
        with self._lock:
            return [m for m in self.messages if pred(m)]

    def pop_older(self, t_recv: float) -> list[dict[str, Any]]:
        """Remove and return the messages received before `t_recv` (long runs keep memory flat)."""
        with self._lock:
            old = [m for m in self.messages if m["_t_recv"] < t_recv]
            self.messages = [m for m in self.messages if m["_t_recv"] >= t_recv]
        return old

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float,
                 since: float = 0.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.snapshot():
                if m["_t_recv"] >= since and pred(m):
                    return m
            time.sleep(0.05)
        topics = sorted({m["topic"] for m in self.snapshot()})
        raise TimeoutError(f"no matching message within {timeout} s (topics seen: {topics})")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._ctx.term()


class DaemonProcess:
    """`perceptd run -c CONFIG [args]` in a child process, stopped with SIGTERM."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None,
                 curve: Any = None) -> None:
        """`curve`: the CurveClient that `request` uses (a CURVE daemon refuses others)."""
        self.config = config
        self.curve = curve
        cfg = yaml.safe_load(config.read_text())
        self.events_endpoint = cfg["publish"]["endpoint"]
        self.control_endpoint = cfg["control"]["endpoint"]
        http = cfg.get("http") or {}
        self.http_endpoint = f"http://{http.get('host', '127.0.0.1')}:{http.get('port', 9460)}"
        self.log_path = config.parent / "daemon.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "perceptd", "run", "-c", str(config), *args],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )

    def request(self, payload: Any, timeout: float = 5.0) -> dict[str, Any]:
        from perceptd.daemon.control.client import send_request

        return send_request(self.control_endpoint, payload, timeout_s=timeout, curve=self.curve)

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                reply = self.request({"type": "status"}, timeout=1.0)
                if reply.get("ok"):
                    return reply
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"daemon not ready in {timeout} s ({last}):\n{self.log()}")

    def terminate(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()

    def log(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""
