"""Optional MQTT bridge: fused events to a broker, for Home Assistant and fleet fan-in.

Fed from inside the daemon: the events publisher hands every sent message (its exact JSON
frame) to `offer()`, in the publisher's thread, which only appends to a bounded buffer.
Being fed after the PUB send means the MQTT copy is byte-for-byte the ZeroMQ message, with
its seq, and needs no subscriber socket (nor CURVE keys) of its own.  A sender thread moves
the buffer to paho-mqtt while connected; during an outage the buffer keeps the newest
`buffer` messages and counts what it drops.  paho's network thread reconnects with
exponential backoff capped at `reconnect_max_s` (default 2 s for a broker on this host, 30 s
for a remote one), logging one WARNING per outage and one INFO on reconnect (paho's own log
lines only with --debug); each (re)connect publishes the retained availability `online` (the last
will says `offline`) and the Home Assistant discovery configs, and re-sends them when Home
Assistant announces itself on `<discovery_prefix>/status`.

Topics: `<prefix>/<device>/event/<name>` for `event.<name>`, `<prefix>/<device>/<topic>`
for any other bridged topic, `<prefix>/<device>/availability`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

_ONLINE, _OFFLINE = "online", "offline"
_OK, _NO_CONN, _QUEUE_FULL = 0, 4, 15  # paho MQTTErrorCode values (not imported at module load)


def default_device_id() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "perceptd"


class MqttConfig(BaseModel):
    """Republish fused events to an MQTT broker (off by default)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="run the MQTT bridge")
    host: str = Field(default="127.0.0.1", min_length=1, description="broker host")
    port: int = Field(default=1883, ge=1, le=65535, description="broker port (8883 usual with TLS)")
    device_id: str = Field(
        default_factory=default_device_id, pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="this device's name in topics (default: host name)",
    )
    topic_prefix: str = Field(default="perceptd", pattern=r"^[^#+]+$", description="first topic level")
    topics: list[str] = Field(
        default_factory=lambda: ["event."],
        description="daemon topic prefixes to bridge (event., command, health, ...)",
    )
    qos: Literal[0, 1, 2] = Field(default=1, description="QoS of bridged messages")
    retain_events: bool = Field(default=False, description="retain the latest message per topic")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive")
    reconnect_min_s: float = Field(default=1.0, gt=0, le=60, description="first reconnect delay")
    reconnect_max_s: float | None = Field(
        default=None, gt=0, le=3600,
        description="reconnect delay cap (default: 2 s for a broker on this host, 30 s otherwise)",
    )
    buffer: int = Field(
        default=1000, ge=1, le=1_000_000,
        description="messages kept while the broker is away; the oldest are dropped (counted)",
    )
    discovery: bool = Field(default=True, description="publish Home Assistant discovery configs")
    discovery_prefix: str = Field(default="homeassistant", pattern=r"^[^#+]+$")
    username: str | None = Field(default=None, description="broker user name")
    password_file: Path | None = Field(
        default=None, description="file holding the broker password (e.g. a systemd credential)"
    )
    tls: bool = Field(default=False, description="connect with TLS")
    ca_file: Path | None = Field(default=None, description="CA bundle for TLS (default: system CAs)")
    cert_file: Path | None = Field(default=None, description="client certificate for TLS")
    key_file: Path | None = Field(default=None, description="client key for TLS")

    @model_validator(mode="after")
    def _check_backoff(self) -> MqttConfig:
        if self.reconnect_max_s is not None and self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(f"reconnect_max_s ({self.reconnect_max_s}) must be >= "
                             f"reconnect_min_s ({self.reconnect_min_s})")
        return self

    @property
    def backoff_cap_s(self) -> float:
        if self.reconnect_max_s is not None:
            return self.reconnect_max_s
        return max(self.reconnect_min_s, 2.0 if _loopback(self.host) else 30.0)

    def resolved(self, base: Path) -> MqttConfig:
        fix = {k: (base / v).resolve() for k in ("password_file", "ca_file", "cert_file", "key_file")
               if (v := getattr(self, k)) is not None and not v.is_absolute()}
        return self.model_copy(update=fix)


@dataclass(frozen=True)
class MqttStats:
    connected: bool
    connects: int
    disconnects: int
    published: int
    dropped: int
    buffered: int
    last_error: str


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MqttBridge:
    def __init__(self, cfg: MqttConfig, event_names: list[str], sw_version: str,
                 client_id: str | None = None) -> None:
        self.cfg = cfg
        self.event_names = list(event_names)
        self.sw_version = sw_version
        self.client_id = client_id or f"perceptd-{cfg.device_id}"
        self.base = f"{cfg.topic_prefix}/{cfg.device_id}"
        self.availability_topic = f"{self.base}/availability"
        self._buf: deque[tuple[str, bytes]] = deque()
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._client: Any = None
        self._sender: threading.Thread | None = None
        self.connects = self.disconnects = self.published = self.dropped = 0
        self.last_error = ""
        self._outage_since: float | None = None  # monotonic start of the current outage
        self._failed_attempts = 0  # connection attempts that failed in this outage

    # ------------------------------------------------------------------ topics

    def mqtt_topic(self, topic: str) -> str:
        if topic.startswith("event."):
            return f"{self.base}/event/{topic[len('event.'):]}"
        return f"{self.base}/{topic.replace('.', '/')}"

    def wants(self, topic: str) -> bool:
        return any(topic.startswith(p) for p in self.cfg.topics)

    def discovery_messages(self) -> list[tuple[str, bytes]]:
        """Home Assistant MQTT discovery: one binary_sensor per event (ON until its end)."""
        node = f"perceptd_{self.cfg.device_id}"
        device = {"identifiers": [node], "name": f"perceptd {self.cfg.device_id}",
                  "manufacturer": "perceptd", "model": "perceptd", "sw_version": self.sw_version}
        out = []
        for name in self.event_names:
            state = self.mqtt_topic(f"event.{name}")
            cfg = {
                "name": name.replace("_", " "),
                "unique_id": f"{node}_{name}",
                "object_id": f"{node}_{name}",
                "state_topic": state,
                "value_template": "{{ 'OFF' if value_json.phase == 'end' else 'ON' }}",
                "payload_on": "ON",
                "payload_off": "OFF",
                "json_attributes_topic": state,
                "json_attributes_template":
                    "{{ {'score': value_json.score, 'phase': value_json.phase, "
                    "'modalities': value_json.modalities} | tojson }}",
                "availability_topic": self.availability_topic,
                "payload_available": _ONLINE,
                "payload_not_available": _OFFLINE,
                "device": device,
                "origin": {"name": "perceptd", "sw_version": self.sw_version},
            }
            topic = f"{self.cfg.discovery_prefix}/binary_sensor/{node}/{name}/config"
            out.append((topic, json.dumps(cfg, separators=(",", ":")).encode()))
        return out

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv311, clean_session=True)
        if log.isEnabledFor(logging.DEBUG):  # paho logs every failed attempt at ERROR: --debug only
            c.enable_logger(logging.getLogger(f"{__name__}.paho"))
        c.will_set(self.availability_topic, _OFFLINE, qos=1, retain=True)
        c.reconnect_delay_set(self.cfg.reconnect_min_s, self.cfg.backoff_cap_s)  # type: ignore[arg-type]
        # paho's own queue (in flight + waiting) is backpressure for the sender thread; room for
        # the discovery burst on every connect comes on top
        c.max_queued_messages_set(64 + 2 * len(self.event_names))
        if self.cfg.username:
            c.username_pw_set(self.cfg.username, self._password())
        if self.cfg.tls:
            c.tls_set(ca_certs=_s(self.cfg.ca_file), certfile=_s(self.cfg.cert_file),
                      keyfile=_s(self.cfg.key_file))
        elif not _loopback(self.cfg.host):
            log.warning("event=mqtt_insecure host=%s detail='broker beyond loopback without TLS'",
                        self.cfg.host)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self._client = c
        c.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        c.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()
        log.info("event=mqtt_started broker=%s:%d base=%s backoff_s=%g..%g", self.cfg.host,
                 self.cfg.port, self.base, self.cfg.reconnect_min_s, self.cfg.backoff_cap_s)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Flush what is buffered (bounded), announce offline, disconnect."""
        with self._cond:
            self._stopping.set()
            self._cond.notify_all()
        if self._sender is not None:
            self._sender.join(timeout_s)
        c = self._client
        if c is None:
            return
        if self._connected.is_set():
            info = c.publish(self.availability_topic, _OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=min(1.0, timeout_s))
            except (RuntimeError, ValueError):
                pass
        c.disconnect()
        c.loop_stop()
        self._client = None
        log.info("event=mqtt_stopped published=%d dropped=%d buffered=%d", self.published,
                 self.dropped, len(self._buf))

    def is_alive(self) -> bool:
        return self._sender is not None and self._sender.is_alive()

    def stats(self) -> MqttStats:
        with self._cond:
            buffered = len(self._buf)
        return MqttStats(self._connected.is_set(), self.connects, self.disconnects,
                         self.published, self.dropped, buffered, self.last_error)

    # ------------------------------------------------------------------ feeding

    def offer(self, topic: str, body: bytes) -> None:
        """Called for every published message (publisher thread): never blocks."""
        if not self.wants(topic):
            return
        with self._cond:
            if len(self._buf) >= self.cfg.buffer:
                self._buf.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("event=mqtt_buffer_full dropped_total=%d buffer=%d",
                                self.dropped, self.cfg.buffer)
            self._buf.append((self.mqtt_topic(topic), body))
            self._cond.notify()

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._buf or not self._connected.is_set():
                    if self._stopping.is_set():
                        return
                    self._cond.wait(0.5)
                topic, body = self._buf[0]
            rc = self._client.publish(topic, body, qos=self.cfg.qos, retain=self.cfg.retain_events).rc
            # QoS>0 and not connected: paho queued it and sends it after the reconnect
            sent = rc == _OK or (rc == _NO_CONN and self.cfg.qos > 0)
            if sent or rc not in (_NO_CONN, _QUEUE_FULL):
                with self._cond:
                    if self._buf and self._buf[0][1] is body:
                        self._buf.popleft()
                    if sent:
                        self.published += 1
                    else:
                        self.dropped += 1
                        self.last_error = f"publish failed rc={rc}"
            else:  # keep it: wait for the connection (or paho's queue) to come back
                self._stopping.wait(0.2)

    # ------------------------------------------------------------------ paho callbacks

    def _outage(self, error: str) -> None:
        """One WARNING when an outage begins; later failed attempts only count (DEBUG)."""
        self.last_error = error
        self._failed_attempts += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("event=mqtt_unavailable broker=%s:%d error=%r detail='retrying every %g..%g s; "
                        "messages are buffered (up to %d)'", self.cfg.host, self.cfg.port, error,
                        self.cfg.reconnect_min_s, self.cfg.backoff_cap_s, self.cfg.buffer)
        else:
            log.debug("event=mqtt_attempt_failed attempts=%d error=%r", self._failed_attempts, error)

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        if not self._stopping.is_set():
            self._outage("cannot connect")

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._outage(f"connect refused: {reason}")
            return
        self.connects += 1
        if self._outage_since is not None:
            log.info("event=mqtt_reconnected broker=%s:%d outage_s=%.1f failed_attempts=%d buffered=%d",
                     self.cfg.host, self.cfg.port, time.monotonic() - self._outage_since,
                     self._failed_attempts, len(self._buf))
        self._outage_since, self._failed_attempts = None, 0
        client.publish(self.availability_topic, _ONLINE, qos=1, retain=True)
        if self.cfg.discovery:
            client.subscribe(f"{self.cfg.discovery_prefix}/status", qos=1)
            self._publish_discovery(client)
        log.debug("event=mqtt_connected broker=%s:%d connects=%d buffered=%d", self.cfg.host,
                  self.cfg.port, self.connects, len(self._buf))
        if self.connects == 1:
            log.info("event=mqtt_connected broker=%s:%d", self.cfg.host, self.cfg.port)
        with self._cond:
            self._connected.set()
            self._cond.notify_all()

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any,
                       _props: Any) -> None:
        self._connected.clear()
        self.disconnects += 1
        if not self._stopping.is_set():
            self._outage(f"disconnected: {reason}")

    def _on_message(self, client: Any, _userdata: Any, msg: Any) -> None:
        if msg.topic == f"{self.cfg.discovery_prefix}/status" and msg.payload == b"online":
            log.info("event=mqtt_ha_birth detail='re-sending discovery'")
            self._publish_discovery(client)

    def _publish_discovery(self, client: Any) -> None:
        for topic, payload in self.discovery_messages():
            rc = client.publish(topic, payload, qos=1, retain=True).rc
            if rc != _OK:
                log.warning("event=mqtt_discovery_failed topic=%s rc=%s", topic, rc)

    def _password(self) -> str | None:
        if self.cfg.password_file is None:
            return None
        try:
            return self.cfg.password_file.read_text().strip()
        except OSError as exc:
            raise RuntimeError(f"cannot read mqtt.password_file {self.cfg.password_file}: {exc}") from None


def _s(p: Path | None) -> str | None:
    return None if p is None else str(p)
