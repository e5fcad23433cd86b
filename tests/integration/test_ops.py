"""Operations on the real daemon: sd_notify READY/WATCHDOG/STATUS over a real datagram socket,
/healthz and /metrics over HTTP, CURVE on the events and control sockets, the MQTT bridge
against a real Mosquitto broker (restart included).

One daemon serves the module (UDP camera, CURVE on, MQTT on); tests run in file order: the
stall and camera-loss tests come late, SIGTERM last.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import zmq

from perceptd.daemon.control.client import ControlError, send_request
from perceptd.daemon.health.watchdog import PAUSE_FILE_ENV
from perceptd.daemon.security.curve import CurveClient, generate_keys
from tests.rigs.daemon import Collector, DaemonProcess, daemon_config
from tests.rigs.ffmpeg_stream import FfmpegStream, ffmpeg_available
from tests.rigs.mosquitto import Mosquitto, MqttWatcher, mosquitto_available

REPO = Path(__file__).resolve().parents[2]
CAT = REPO / "samples" / "images" / "cat.jpg"
DEVICE = "testhub"
BUFFER = 4

pytestmark = [
    pytest.mark.skipif(not (ffmpeg_available() and mosquitto_available()),
                       reason="needs ffmpeg and mosquitto"),
    # file order kept (one daemon): the stall and camera-loss tests come late, SIGTERM last
    pytest.mark.random_order(disabled=True),
]


class NotifyListener:
    """A stand-in for systemd's NOTIFY_SOCKET: a real AF_UNIX datagram socket, read always."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.lines: list[tuple[float, str]] = []
        self.on_ready: list = []  # callables run the moment READY=1 arrives
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            t = time.monotonic()
            for line in data.decode().splitlines():
                if line == "READY=1":
                    for fn in self.on_ready:
                        fn()
                with self._lock:
                    self.lines.append((t, line))

    def times(self, prefix: str, since: float = 0.0, until: float = float("inf")) -> list[float]:
        with self._lock:
            return [t for t, line in self.lines if line.startswith(prefix) and since <= t <= until]

    def last(self, prefix: str) -> str:
        with self._lock:
            found = [line for _t, line in self.lines if line.startswith(prefix)]
        return found[-1] if found else ""

    def wait_for(self, prefix: str, timeout: float, since: float = 0.0, n: int = 1) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ts = self.times(prefix, since)
            if len(ts) >= n:
                return ts[n - 1]
            time.sleep(0.02)
        raise TimeoutError(f"{n}x {prefix!r} not received within {timeout} s")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ops")
    (tmp / "mqtt").mkdir()
    broker = Mosquitto(tmp / "mqtt").start()
    watcher = MqttWatcher(broker.port, ["perceptd/#", "homeassistant/#"])
    generate_keys(tmp / "keys", ["client", "intruder"])
    (tmp / "keys" / "authorized" / "intruder.key").unlink()  # a key the daemon does not list
    good = CurveClient.from_files(tmp / "keys/client.key_secret", tmp / "keys/server.key")
    intruder = CurveClient.from_files(tmp / "keys/intruder.key_secret", tmp / "keys/server.key")
    stream = FfmpegStream(CAT, kind="udp", log_dir=tmp).start()
    notify = NotifyListener(tmp / "notify.sock")
    cfg = daemon_config(
        tmp,
        sources={"cameras": [{"id": "camera0", "uri": stream.url, "fps": 10, "read_timeout_s": 1.0,
                              "backoff_initial_s": 0.2, "backoff_max_s": 1.0}]},
        health={"interval_s": 1.0, "stall_after_s": 1.0},
        security={"curve": True, "keys_dir": str(tmp / "keys")},
        mqtt={"enabled": True, "port": broker.port, "device_id": DEVICE, "buffer": BUFFER,
              "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
    )
    pause = tmp / "pause"
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000", PAUSE_FILE_ENV: str(pause)}
    daemon = DaemonProcess(cfg, env=env, curve=good)
    at_ready: dict[str, str] = {}
    notify.on_ready.append(lambda: at_ready.setdefault("log", daemon.log(200_000)))
    collectors = [Collector(daemon.events_endpoint, curve=c) for c in (good, intruder, None)]
    try:
        deadline = time.monotonic() + 90
        while not notify.times("READY=1"):
            if daemon.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no READY=1 (exit code {daemon.proc.poll()}):\n{daemon.log()}")
            time.sleep(0.1)
        yield {"daemon": daemon, "notify": notify, "collector": collectors[0],
               "intruder_collector": collectors[1], "plain_collector": collectors[2],
               "good": good, "intruder": intruder, "stream": stream, "broker": broker,
               "watcher": watcher, "pause": pause, "cfg": cfg, "at_ready": at_ready}
    finally:
        daemon.kill()
        for c in collectors:
            c.close()
        notify.close()
        stream.stop()
        watcher.close()
        broker.stop()


# --------------------------------------------------------------------------- helpers


def _get(rig, path: str, accept: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(rig["daemon"].http_endpoint + path,
                                 headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def _healthz(rig) -> tuple[int, dict]:
    status, ctype, body = _get(rig, "/healthz")
    assert ctype == "application/json"
    return status, json.loads(body)


def _wait_healthz(rig, pred, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = _healthz(rig)
        if pred(status, body):
            return body
        time.sleep(0.2)
    raise TimeoutError(f"/healthz never matched within {timeout} s; last {status} {body}")


def _metrics(rig) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    status, ctype, body = _get(rig, "/metrics")
    assert status == 200 and ctype.startswith("text/plain"), (status, ctype)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def _value(m: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in m, f"{name}{labels} missing; have {sorted({k[0] for k in m if k[0].startswith(name)})}"
    return m[key]


def _wait_metric(rig, name: str, pred, timeout: float, **labels: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = _metrics(rig).get((name, tuple(sorted(labels.items()))))
        if v is not None and pred(v):
            return v
        time.sleep(0.2)
    raise TimeoutError(f"{name}{labels} never matched within {timeout} s (last {v})")


def _wire(msg: dict) -> dict:
    return {k: v for k, v in msg.items() if not k.startswith("_")}


def _cli(rig, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perceptd", *args, "-c", str(rig["cfg"])],
                          capture_output=True, text=True, timeout=30)


# --------------------------------------------------------------------------- sd_notify


def test_ready_after_loading_then_watchdog_pings(rig) -> None:
    n = rig["notify"]
    t_ready = n.times("READY=1")[0]
    log = rig["at_ready"]["log"]  # the daemon's log at the moment READY=1 arrived
    assert "event=models_loaded" in log, "READY=1 before the bundle was loaded"
    assert "source=camera0 state=up" in log, "READY=1 before the camera was opened"
    assert "event=http_started" in log
    n.wait_for("WATCHDOG=1", 5, since=t_ready, n=4)
    pings = n.times("WATCHDOG=1", since=t_ready)
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert max(gaps) < 1.0, gaps  # WatchdogSec=1 s: pings every ~0.5 s
    assert "healthy" in n.last("STATUS=") and "model" in n.last("STATUS=")


# --------------------------------------------------------------------------- HTTP


def test_healthz_and_metrics_while_streaming(rig) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

    rig["collector"].wait_for(lambda m: m["topic"] == "vision", 20)
    status, body = _healthz(rig)
    assert status == 200 and body["status"] == "ok" and body["state"] == "running", body
    assert body["sources"]["camera0"]["state"] == "up" and body["model_version"]
    assert set(body["stages"]) >= {"preprocess", "vision", "audio", "text", "fusion"}

    t0 = time.perf_counter()
    first = _metrics(rig)
    scrape_s = time.perf_counter() - t0
    time.sleep(2.0)
    second = _metrics(rig)
    print(f"\n/metrics scrape {scrape_s * 1e3:.1f} ms, {len(second)} samples")
    assert scrape_s < 1.0
    moving = [("perceptd_stage_items_total", {"stage": "vision"}),
              ("perceptd_inference_duration_seconds_count", {"model": "vision", "provider": "CPU"}),
              ("perceptd_capture_to_publish_seconds_count", {"topic": "vision"}),
              ("perceptd_source_captured_total", {"source": "camera0"}),
              ("perceptd_queue_put_total", {"queue": "frames"}),
              ("perceptd_published_total", {"topic": "vision"})]
    for name, labels in moving:
        assert _value(second, name, **labels) > _value(first, name, **labels), (name, labels)
    assert _value(second, "perceptd_stage_fps", stage="vision") > 1.0
    assert _value(second, "perceptd_healthy") == 1.0
    assert _value(second, "perceptd_source_up", source="camera0", kind="camera") == 1.0
    assert _value(second, "perceptd_model_info", version=body["model_version"]) == 1.0
    # the drop counter is exported per queue and reason (_value asserts the series is present)
    # and, being a counter, never goes back between scrapes
    dropped = ("perceptd_queue_dropped_total", {"queue": "frames", "reason": "overflow"})
    assert _value(second, dropped[0], **dropped[1]) >= _value(first, dropped[0], **dropped[1])
    assert _value(second, "perceptd_lifecycle_state", state="running") == 1.0
    assert _value(second, "perceptd_control_requests_total", type="reload") == 0
    assert _value(second, "process_resident_memory_bytes") > 0
    if "samples" in rig["daemon"].request({"type": "status"}):  # a build with the samples logger
        assert ("perceptd_samples_enabled", ()) in second
    # the histogram's +Inf bucket equals its count
    assert (_value(second, "perceptd_capture_to_publish_seconds_bucket", topic="vision", le="+Inf")
            == _value(second, "perceptd_capture_to_publish_seconds_count", topic="vision"))

    status, ctype, text = _get(rig, "/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    assert {f.name for f in om_parse(text)} >= {"perceptd_stage_items", "perceptd_inference_duration_seconds"}
    assert _get(rig, "/nope")[0] == 404


# --------------------------------------------------------------------------- CURVE


def test_curve_only_authorized_clients_get_service(rig) -> None:
    rig["collector"].wait_for(lambda m: m["topic"] == "vision", 10)
    assert len(rig["collector"].snapshot()) > 10
    assert rig["intruder_collector"].snapshot() == []  # a key not on the allowlist
    assert rig["plain_collector"].snapshot() == []  # no key at all
    endpoint = rig["daemon"].control_endpoint
    with pytest.raises(ControlError, match="refused"):
        send_request(endpoint, {"type": "status"}, 3.0)
    with pytest.raises(ControlError, match="refused"):
        send_request(endpoint, {"type": "status"}, 3.0, curve=rig["intruder"])
    # a raw REQ without keys: the request is never delivered, no reply ever comes
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    sock.send(b'{"type": "command", "text": "turn on the lights"}')
    assert sock.poll(1500) == 0
    sock.close()
    ctx.term()
    assert send_request(endpoint, {"type": "status"}, 3.0, curve=rig["good"])["ok"]
    m = _metrics(rig)
    assert _value(m, "perceptd_auth_total", result="denied") >= 2
    assert _value(m, "perceptd_auth_authorized_keys") == 1
    assert _value(m, "perceptd_control_requests_total", type="command") == 0
    # the CLI finds its keys through the config's security section
    r = _cli(rig, "status")
    assert r.returncode == 0 and r.stdout.startswith("healthy"), r.stdout + r.stderr
    keys = rig["cfg"].parent / "keys"
    r = subprocess.run([sys.executable, "-m", "perceptd", "send", "turn off the lights", "--endpoint",
                        endpoint, "--client-key", str(keys / "client.key_secret"),
                        "--server-key", str(keys / "server.key")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


# --------------------------------------------------------------------------- MQTT


def test_mqtt_bridge_republishes_events_with_discovery(rig) -> None:
    w = rig["watcher"]
    names = ["lights_on", "cat_present", "person_present"]
    for name in names:
        topic = f"homeassistant/binary_sensor/perceptd_{DEVICE}/{name}/config"
        msg = w.wait_for(lambda m, t=topic: m.topic == t, 10)
        conf = json.loads(msg.payload)
        assert conf["state_topic"] == f"perceptd/{DEVICE}/event/{name}"
        assert conf["availability_topic"] == f"perceptd/{DEVICE}/availability"
        assert conf["unique_id"] == f"perceptd_{DEVICE}_{name}" and conf["device"]["identifiers"]
    w.wait_for(lambda m: m.topic == f"perceptd/{DEVICE}/availability" and m.payload == b"online", 10)

    since = time.monotonic()
    assert rig["daemon"].request({"type": "command", "text": "turn on the lights"})["ok"]
    ev = rig["collector"].wait_for(
        lambda m: m["topic"] == "event.lights_on" and m["phase"] == "start", 10, since)
    got = w.wait_for(lambda m: m.topic == f"perceptd/{DEVICE}/event/lights_on"
                     and json.loads(m.payload)["seq"] == ev["seq"], 10, since)
    assert json.loads(got.payload) == _wire(ev)  # the same JSON as on the ZeroMQ socket
    # Home Assistant restarted: its birth message makes the bridge re-send discovery
    t_birth = time.monotonic()
    w.client.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
    w.wait_for(lambda m: m.topic.startswith(f"homeassistant/binary_sensor/perceptd_{DEVICE}/"), 10, t_birth)


def test_mqtt_broker_restart_buffers_newest_and_counts_drops(rig) -> None:
    w, col, broker = rig["watcher"], rig["collector"], rig["broker"]
    broker.stop()
    _wait_metric(rig, "perceptd_mqtt_connected", lambda v: v == 0, 10)
    t_down = time.monotonic()
    for text in ("play some music", "stop the music", "turn the volume up", "call mom"):
        rig["daemon"].request({"type": "command", "text": text})
        time.sleep(0.4)
    col.wait_for(lambda m: m["topic"] == "event.call_contact" and m["phase"] == "end", 10, t_down)
    t_restart = time.monotonic()
    outage = [m for m in col.snapshot(lambda m: m["topic"].startswith("event."))
              if t_down <= m["_t_recv"] < t_restart]
    assert len(outage) > BUFFER, [m["topic"] for m in outage]
    broker.start()
    _wait_metric(rig, "perceptd_mqtt_buffered", lambda v: v == 0, 30)
    m = _metrics(rig)
    assert _value(m, "perceptd_mqtt_connected") == 1
    assert _value(m, "perceptd_mqtt_connects_total") >= 2
    assert _value(m, "perceptd_mqtt_dropped_total") >= len(outage) - BUFFER
    w.wait_for(lambda m: m.topic == f"perceptd/{DEVICE}/availability" and m.payload == b"online",
               30, t_restart)
    # The bridge keeps the newest BUFFER events while the broker is away (oldest dropped, counted).
    # Events published after t_restart but before the reconnect may push outage events out of the
    # buffer too, so assert on order and bounds, then that the stream resumed with a fresh event.
    seqs = [m["seq"] for m in outage]
    delivered = [json.loads(m.payload)["seq"] for m in w.snapshot(lambda m: "/event/" in m.topic)
                 if json.loads(m.payload)["seq"] in seqs]
    assert delivered == sorted(delivered) and len(delivered) <= BUFFER, (seqs, delivered)
    assert delivered == seqs[len(seqs) - len(delivered):], (seqs, delivered)  # a newest tail
    since = time.monotonic()
    assert rig["daemon"].request({"type": "command", "text": "turn on the lights"})["ok"]
    ev = col.wait_for(lambda m: m["topic"] == "event.lights_on" and m["phase"] == "start", 15, since)
    got = w.wait_for(lambda m: m.topic == f"perceptd/{DEVICE}/event/lights_on"
                     and json.loads(m.payload)["seq"] == ev["seq"], 30, since)
    assert json.loads(got.payload) == _wire(ev)


def test_mqtt_last_will_marks_a_crashed_bridge_offline(rig) -> None:
    w, port = rig["watcher"], rig["broker"].port
    code = ("import sys, time\nfrom perceptd.daemon.publish.mqtt import MqttBridge, MqttConfig\n"
            "MqttBridge(MqttConfig(enabled=True, port=int(sys.argv[1]), device_id='crashhub', "
            "discovery=False), [], 'test').start()\ntime.sleep(60)\n")
    since = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", code, str(port)])
    try:
        w.wait_for(lambda m: m.topic == "perceptd/crashhub/availability" and m.payload == b"online",
                   15, since)
        t_kill = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        w.wait_for(lambda m: m.topic == "perceptd/crashhub/availability" and m.payload == b"offline",
                   10, t_kill)
    finally:
        proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------- stalls and losses


def test_stalled_stage_stops_watchdog_and_fails_health(rig) -> None:
    n = rig["notify"]
    rig["pause"].write_text("vision\n")  # test hook: the vision worker stops turning
    body = _wait_healthz(rig, lambda s, b: s == 503, 6)
    assert any("stage vision stalled" in p for p in body["problems"]), body
    t_503 = time.monotonic()
    time.sleep(2.5)
    assert n.times("WATCHDOG=1", since=t_503 + 0.5) == [], "pings went on while stalled"
    assert "UNHEALTHY: stage vision stalled" in n.last("STATUS=")
    r = _cli(rig, "status")
    assert r.returncode == 1 and "UNHEALTHY: stage vision stalled" in r.stdout, r.stdout + r.stderr
    m = _metrics(rig)
    assert _value(m, "perceptd_stage_stalled", stage="vision") == 1
    assert _value(m, "perceptd_watchdog_withheld_total") > 0
    rig["pause"].unlink()
    t_resume = time.monotonic()
    n.wait_for("WATCHDOG=1", 3, since=t_resume)
    _wait_healthz(rig, lambda s, b: s == 200, 5)


def test_healthz_503_when_the_only_camera_goes_away(rig) -> None:
    rig["stream"].stop()
    body = _wait_healthz(rig, lambda s, b: s == 503, 15)
    assert body["sources"]["camera0"]["state"] in ("reconnecting", "down"), body
    assert any(p.startswith("source camera0") for p in body["problems"]), body
    assert body["state"] == "degraded"
    assert _value(_metrics(rig), "perceptd_source_up", source="camera0", kind="camera") == 0
    status = rig["daemon"].request({"type": "status"})
    assert status["health"]["healthy"] is False and status["health"]["problems"] == body["problems"]


def test_sigterm_sends_stopping_and_mqtt_offline(rig) -> None:
    since = time.monotonic()
    assert rig["daemon"].terminate(timeout=15) == 0
    rig["notify"].wait_for("STOPPING=1", 2, since=since - 1)
    rig["watcher"].wait_for(
        lambda m: m.topic == f"perceptd/{DEVICE}/availability" and m.payload == b"offline", 5, since)
