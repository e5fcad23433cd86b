"""The operator-facing side of a Daemon: watchdog, /healthz + /metrics, CURVE, MQTT bridge.

Owned by the Daemon and driven by calls from its lifecycle: `start_http()` first (so that
/healthz answers 503 "starting" while the bundle loads), `start_security()` before any socket
binds, `start_consumers()` before the publisher starts (every consumer of published messages,
the MQTT bridge included, is attached before the first message, so none is missed uncounted),
`start()` just before READY=1, `stop_watchdog()` first thing in stop(), and `stop()` after the
publisher flushed (so the bridge still sees the final `end` events).  The publisher reports
each sent message to `on_published` (latency histogram, MQTT bridge); the sockets call
`secure` before binding.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import zmq

from perceptd.daemon import __version__
from perceptd.daemon.health.http import HttpServer, json_body
from perceptd.daemon.health.report import LIVE_STATES, HasHeartbeat, HealthReport, evaluate
from perceptd.daemon.health.stats import LATENCY_BUCKETS_S, HistogramSet, Rates
from perceptd.daemon.health.status import summary
from perceptd.daemon.health.watchdog import PAUSE_FILE_ENV, Watchdog
from perceptd.daemon.messages import Envelope
from perceptd.daemon.sockets import is_loopback_endpoint

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from perceptd.daemon.console.app import Console
    from perceptd.daemon.console.host import DaemonView
    from perceptd.daemon.health.view import PipelineView
    from perceptd.daemon.publish.mqtt import MqttBridge
    from perceptd.daemon.security.curve import CurveServer

log = logging.getLogger(__name__)


def topic_family(topic: str) -> str:
    """Bounded label values: every `event.<name>` is one family, every `shadow.event.<name>`
    another."""
    if topic.startswith("shadow.event."):
        return "shadow"
    return "event" if topic.startswith("event.") else topic


class Operations:
    """Reads the daemon through `PipelineView` (health/view.py); `console_view` builds what
    the web console reads (called only when the console is enabled)."""

    def __init__(self, daemon: PipelineView, console_view: Callable[[], DaemonView]) -> None:
        self.daemon = daemon
        self.cfg = daemon.cfg
        self._console_view = console_view
        self.latency = HistogramSet(LATENCY_BUCKETS_S)
        self.rates = Rates(window_s=10.0)
        self.curve: CurveServer | None = None
        self.mqtt: MqttBridge | None = None
        self.http: HttpServer | None = None
        self.console: Console | None = None  # daemon/console: the web page at / of the HTTP port
        self.watchdog: Watchdog | None = None
        self.registry: CollectorRegistry | None = None
        self.last_scrape_s = 0.0
        self.ready = False  # /healthz and /metrics answer 503 "starting" until start() ran

    # ------------------------------------------------------------------ hooks

    def secure(self, sock: zmq.Socket) -> None:
        """Socket setup hook for the events and control sockets (CURVE server when enabled)."""
        if self.curve is not None:
            self.curve.apply(sock)

    def on_published(self, env: Envelope, body: bytes) -> None:
        """Publisher thread, after each send: latency histogram and the MQTT bridge."""
        if env.topic != "health":
            self.latency.observe((topic_family(env.topic),), (env.t_publish_ns - env.t_capture_ns) / 1e9)
        if self.mqtt is not None:
            self.mqtt.offer(env.topic, body)
        if self.console is not None:
            self.console.feed.offer(env.topic, body)

    # ------------------------------------------------------------------ lifecycle

    def start_security(self) -> None:
        if not self.cfg.security.curve:
            return
        from perceptd.daemon.security.curve import CurveServer

        self.curve = CurveServer(self.daemon.ctx, self.cfg.security)
        self.curve.start()

    def start_http(self) -> None:
        """/healthz and /metrics from the first moment of a start: 503 until the daemon runs."""
        if self.cfg.http.enabled and self.http is None:
            routes = {"/healthz": self._healthz, "/metrics": self._metrics, "/": self._index}
            if self.cfg.console.enabled:
                from perceptd.daemon.console.app import Console
                from perceptd.daemon.console.config import check_console_auth

                check_console_auth(self.cfg.http.host, self.cfg.console)  # refuses to start
                self.console = Console(self.cfg.console, self._console_view())
                del routes["/"]
            self.http = HttpServer(self.cfg.http, routes,
                                   app=self.console.wsgi if self.console else None,
                                   authorize=self.console.authorized if self.console else None)
            self.http.start()

    def start_consumers(self) -> None:
        """Consumers of published messages (the MQTT bridge): before the publisher's first message."""
        if self.cfg.mqtt.enabled and self.mqtt is None:
            from perceptd.daemon.publish.mqtt import MqttBridge

            self.mqtt = MqttBridge(self.cfg.mqtt, [e.name for e in self.cfg.events], __version__)
            self.mqtt.start()

    def start(self) -> None:
        """Metrics registry and watchdog; called once the pipeline runs, before READY=1."""
        self._warn_insecure_binds()
        self.start_http()
        self.start_consumers()
        if self.http is not None:
            from perceptd.daemon.health.metrics import build_registry

            self.registry = build_registry(self.daemon, self)
        self.ready = True
        pause = os.environ.get(PAUSE_FILE_ENV)
        self.watchdog = Watchdog(
            self._workers, self.daemon.notify, interval_s=self.daemon.watchdog_interval_s(),
            stall_after_s=self.cfg.health.stall_after_s,
            alive=self._threads_alive, status=self.status_line, on_tick=self._sample_rates,
            pause_file=Path(pause) if pause else None,
        )
        self.watchdog.start()

    def stop_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()

    def stop(self) -> None:
        if self.mqtt is not None:
            self.mqtt.stop()
        if self.console is not None:
            self.console.stop()
        if self.http is not None:
            self.http.stop()
        if self.curve is not None:
            self.curve.stop()

    # ------------------------------------------------------------------ health

    def health(self) -> HealthReport:
        report = evaluate(self.daemon, self.cfg.http.required_sources, self.cfg.health.stall_after_s)
        if self.mqtt is not None and not self.mqtt.stats().connected:  # optional: a warning only
            report = dataclasses.replace(report, warnings=[*report.warnings, "mqtt broker unreachable"])
        return report

    def status_line(self) -> str:
        """STATUS= for systemd: the daemon's summary plus the health verdict."""
        try:
            return f"{summary(self.daemon)}; {self.health().line()}"
        except Exception as exc:  # noqa: BLE001 - a status line must never raise
            return f"status unavailable: {exc}"

    def endpoints(self) -> dict[str, str | bool | None]:
        return {"http_endpoint": self.http.endpoint if self.http else None,
                "curve": self.curve is not None,
                "mqtt_connected": self.mqtt.stats().connected if self.mqtt else None}

    def _workers(self) -> list[HasHeartbeat]:
        return [*self.daemon.stages, self.daemon.fusion]

    def _threads_alive(self) -> bool:
        return self.daemon.publisher.is_alive() and self.daemon.control.is_alive()

    def _sample_rates(self, now: float) -> None:
        d = self.daemon
        values: dict[str, float] = {f"stage.{st.name}": st.items for st in d.stages}
        values["stage.fusion"] = d.fusion.stats.evaluations
        for src in d.sources:
            values[f"source.{src.source_id}"] = src.stats.captured
        self.rates.sample(now, values)

    def _warn_insecure_binds(self) -> None:
        if self.curve is not None:
            return
        for name, endpoint in (("publish", self.daemon.publisher.endpoint),
                               ("control", self.daemon.control.endpoint)):
            if not is_loopback_endpoint(endpoint):
                log.warning("event=insecure_bind socket=%s endpoint=%s detail='beyond loopback "
                            "without CURVE: anyone on the network can %s'", name, endpoint,
                            "subscribe" if name == "publish" else "send commands")
        if self.cfg.http.enabled and self.cfg.http.allow_insecure:
            log.warning("event=insecure_bind socket=http host=%s port=%d", self.cfg.http.host,
                        self.cfg.http.port)

    # ------------------------------------------------------------------ routes

    def _starting(self) -> tuple[int, str, bytes]:
        d = self.daemon
        return json_body(503, {"status": "starting", "healthy": False, "state": str(d.lifecycle.state),
                               "problems": ["starting: loading the model bundle and opening sources"],
                               "uptime_s": round(d.lifecycle.uptime_s(), 3)})

    def _healthz(self, _headers: dict[str, str]) -> tuple[int, str, bytes]:
        # "starting" only while nothing runs yet: once the pipeline runs (while sources settle
        # before READY=1) a probe sees the real verdict, e.g. a degraded source
        if not self.ready and str(self.daemon.lifecycle.state) not in LIVE_STATES:
            return self._starting()
        report = self.health()
        body = {**report.to_dict(), **self.endpoints()}
        return json_body(200 if report.healthy else 503, body)

    def _metrics(self, headers: dict[str, str]) -> tuple[int, str, bytes]:
        from perceptd.daemon.health.metrics import render

        if not self.ready or self.registry is None:
            return self._starting()
        t0 = time.perf_counter()
        body, ctype = render(self.registry, headers.get("accept"))
        self.last_scrape_s = time.perf_counter() - t0
        return 200, ctype, body

    def _index(self, _headers: dict[str, str]) -> tuple[int, str, bytes]:
        return json_body(200, {"service": "perceptd", "version": __version__,
                               "paths": ["/healthz", "/metrics"]})
