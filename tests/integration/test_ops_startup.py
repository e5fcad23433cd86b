"""What an operator sees from the first moment of a start (issue 18): the MQTT bridge gets every
published message from seq 0 (bug 2: it used to attach after the pipeline ran, so the first
messages never reached the broker, uncounted), and /healthz answers 503 "starting" while the
bundle loads instead of refusing connections.  An MQTT outage logs one WARNING and one INFO,
and delivery resumes within the 2 s backoff cap of a broker on this host.

Real daemon (`perceptd run`), real Mosquitto, real ZeroMQ subscriber, real HTTP."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.rigs.daemon import Collector, DaemonProcess, daemon_config
from tests.rigs.mosquitto import Mosquitto, MqttWatcher, mosquitto_available

REPO = Path(__file__).resolve().parents[2]
CAT = REPO / "samples" / "images" / "cat.jpg"
DEVICE = "startup"

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")


def _http(url: str) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_mqtt_gets_every_message_from_seq_0_and_healthz_says_starting(tmp_path: Path) -> None:
    (tmp_path / "mqtt").mkdir()
    broker = Mosquitto(tmp_path / "mqtt").start()
    watcher = MqttWatcher(broker.port, [f"perceptd/{DEVICE}/#"])
    cfg = daemon_config(
        tmp_path,
        sources={"cameras": [{"id": "camera0", "uri": str(CAT), "fps": 2, "loop": True}]},
        samples={"enabled": False}, speech={"enabled": False},
        # every topic bridged: the copy must be gapless from the run's first message
        mqtt={"enabled": True, "port": broker.port, "device_id": DEVICE, "topics": [""],
              "discovery": False},
    )
    daemon = DaemonProcess(cfg)
    collector = Collector(daemon.events_endpoint)
    try:
        answers: list[tuple[int, dict]] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and daemon.proc.poll() is None:
            got = _http(f"{daemon.http_endpoint}/healthz")
            if got is not None:
                answers.append(got)
                if got[0] == 200:
                    break
            time.sleep(0.02)
        assert answers, f"/healthz never answered:\n{daemon.log()}"
        first_code, first = answers[0]
        print(f"/healthz answers during start-up: {[(c, b.get('status')) for c, b in answers[:3]]} "
              f"... {len(answers)} in all")
        assert first_code == 503 and first["status"] == "starting" and first["healthy"] is False
        assert answers[-1][0] == 200

        ev = collector.wait_for(lambda m: m["topic"] == "event.cat_present", 60)
        t_mqtt = time.monotonic()
        watcher.wait_for(lambda m: m.topic == f"perceptd/{DEVICE}/event/cat_present"
                         and json.loads(m.payload)["seq"] == ev["seq"], 10)
        print(f"cat_present {ev['phase']} (seq {ev['seq']}) on MQTT "
              f"{(time.monotonic() - t_mqtt) * 1000:.0f} ms after it was seen on ZeroMQ")
        assert daemon.terminate(timeout=15) == 0
        time.sleep(0.5)
        msgs = [json.loads(m.payload)
                for m in watcher.snapshot(lambda m: not m.topic.endswith("availability"))]
        run = msgs[-1]["run_id"]
        seqs = sorted(m["seq"] for m in msgs if m["run_id"] == run)
        assert seqs[0] == 0, f"the first {seqs[0]} messages of the run never reached MQTT"
        assert seqs == list(range(len(seqs))), "gaps in the MQTT copy"
        assert any(m["topic"] == "event.cat_present" and m["phase"] == "start" for m in msgs)
    finally:
        daemon.kill()
        collector.close()
        watcher.close()
        broker.stop()


def test_mqtt_outage_logs_once_and_reconnects_within_the_cap(tmp_path: Path, caplog) -> None:
    from perceptd.daemon.publish.mqtt import MqttBridge, MqttConfig

    broker = Mosquitto(tmp_path).start()
    watcher = MqttWatcher(broker.port, ["perceptd/#"], client_id="outage-watcher")
    cfg = MqttConfig(enabled=True, port=broker.port, device_id="outage", discovery=False)
    assert cfg.backoff_cap_s == 2.0  # a broker on this host; remote ones default to 30 s
    assert MqttConfig(host="192.0.2.1").backoff_cap_s == 30.0
    assert MqttConfig(reconnect_max_s=3).backoff_cap_s == 3.0
    bridge = MqttBridge(cfg, ["cat"], "test")
    caplog.set_level(logging.INFO, logger="perceptd.daemon.publish.mqtt")
    try:
        bridge.start()
        watcher.wait_connected(5)
        deadline = time.monotonic() + 5
        while not bridge.stats().connected and time.monotonic() < deadline:
            time.sleep(0.05)
        broker.stop()
        t_down = time.monotonic()
        i = 0
        while time.monotonic() - t_down < 8:  # long enough for paho's backoff to reach its cap
            bridge.offer("event.cat", json.dumps({"seq": i}).encode())
            i += 1
            time.sleep(0.1)
        broker.start()
        t_up = time.monotonic()
        watcher.wait_connected(10)
        watcher.wait_for(lambda m: m.topic.endswith("event/cat"), 15, since=t_up)
        resumed = time.monotonic() - t_up
        print(f"delivery resumed {resumed:.2f} s after the broker came back")
        assert resumed < 3.5
        time.sleep(1.0)
        got = {json.loads(m.payload)["seq"]
               for m in watcher.snapshot(lambda m: m.topic.endswith("event/cat"))}
        assert got == set(range(i)) and bridge.stats().dropped == 0
    finally:
        bridge.stop()
        watcher.close()
        broker.stop()
    records = [r for r in caplog.records if r.name.startswith("perceptd.daemon.publish.mqtt")]
    assert not [r for r in records if r.levelno >= logging.ERROR], [r.getMessage() for r in records]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "mqtt_unavailable" in warnings[0], warnings
    assert sum("mqtt_reconnected" in r.getMessage() for r in records if r.levelno == logging.INFO) == 1
