"""A real Mosquitto broker on loopback (Debian package `mosquitto`) and a real MQTT client.

The broker runs in the foreground as a child of the test, with persistence in its own
folder, so `restart()` (SIGTERM, then start again) behaves like a broker upgrade: retained
messages and persistent sessions survive.  `MqttWatcher` is a paho client with a persistent
session (clean_session=False, QoS 1) that records everything under the given filters.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.rigs.daemon import free_tcp_port


def mosquitto_available() -> bool:
    return shutil.which("mosquitto") is not None


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Mosquitto:
    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.port = port or free_tcp_port()
        self.dir = tmp
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {tmp}/\nautosave_interval 1\n"
        )
        self.log_path = tmp / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 5.0) -> Mosquitto:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start: {self.log_path.read_text()[-500:]}")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (it saves its persistence file), then reap."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass(frozen=True)
class Received:
    t: float
    topic: str
    payload: bytes
    retain: bool


class MqttWatcher:
    """A real MQTT client that records (topic, payload) for the given filters."""

    def __init__(self, port: int, filters: list[str], client_id: str = "perceptd-test-watcher") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        c.reconnect_delay_set(0.1, 0.5)
        c.on_connect = lambda cl, _u, _f, _rc, _p: (cl.subscribe([(f, 1) for f in filters]),
                                                     self._connected.set())
        c.on_disconnect = lambda *_a: self._connected.clear()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port, keepalive=10)
        c.loop_start()
        self.client = c
        if not self._connected.wait(5):
            raise TimeoutError("MQTT watcher could not connect")

    def _on_message(self, _c, _u, msg) -> None:
        with self._lock:
            self.messages.append(Received(time.monotonic(), msg.topic, msg.payload, bool(msg.retain)))

    def snapshot(self, pred: Callable[[Received], bool] = lambda m: True) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if pred(m)]

    def wait_for(self, pred: Callable[[Received], bool], timeout: float, since: float = 0.0) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.snapshot():
                if m.t >= since and pred(m):
                    return m
            time.sleep(0.05)
        topics = sorted({m.topic for m in self.snapshot()})
        raise TimeoutError(f"no matching MQTT message within {timeout} s (topics seen: {topics})")

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
