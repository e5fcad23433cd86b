"""Prometheus exposition of the daemon's own counters, read at scrape time.

A private CollectorRegistry with one custom collector: nothing is registered globally,
nothing is counted twice, and a scrape costs a walk over a few dozen objects.  Names follow
Prometheus conventions (base units: seconds; `_total` counters), so the "inference ms"
histogram is `perceptd_inference_duration_seconds` and fps are `rate(..._total[1m])` or the
ready-made `perceptd_stage_fps` gauge (10 s window).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from perceptd.daemon import __version__
from perceptd.daemon.control.requests import REQUEST_TYPES
from perceptd.daemon.health.stats import HistogramSnapshot

if TYPE_CHECKING:
    from perceptd.daemon.health.view import OperationsView, PipelineView
    from perceptd.daemon.sources.base import SourceStats

log = logging.getLogger(__name__)

_STATES = ("initializing", "starting", "running", "degraded", "stopping", "stopped")
_SOURCE_STATES = ("up", "reconnecting", "down")


def _counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(f"perceptd_{name}", doc, labels=labels or [])


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"perceptd_{name}", doc, labels=labels or [])


def _histogram(fam: HistogramMetricFamily, labels: list[str], s: HistogramSnapshot) -> None:
    buckets = [(repr(float(b)), c) for b, c in zip(s.bounds, s.cumulative, strict=False)]
    buckets.append(("+Inf", s.count))
    fam.add_metric(labels, buckets, sum_value=s.sum)


class DaemonCollector:
    """Reads a running daemon (and its Operations) on every collect()."""

    def __init__(self, daemon: PipelineView, ops: OperationsView) -> None:
        self.daemon = daemon
        self.ops = ops

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration time: the daemon may not be started yet

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        for part in (self._info, self._stages, self._queues, self._inference, self._latency,
                     self._sources, self._publisher, self._control, self._fusion, self._ops,
                     self._samples):
            try:
                yield from part(d)
            except Exception:  # noqa: BLE001 - one broken part must not blank the scrape
                log.exception("event=metrics_part_failed part=%s", part.__name__)

    # ------------------------------------------------------------------ parts

    def _info(self, d: PipelineView) -> Iterator[Metric]:
        ops = self.ops
        health = ops.health()
        m = d.current_models()
        info = _gauge("build_info", "perceptd package version", ["version"])
        info.add_metric([__version__], 1)
        model = _gauge("model_info", "active model bundle", ["version"])
        model.add_metric([m.version], 1)
        prov = _gauge("model_provider_info", "execution provider of each model", ["model", "provider"])
        for name, p in m.providers().items():
            prov.add_metric([name, p.removesuffix("ExecutionProvider")], 1)
        swaps = _counter("model_swaps", "hot swaps to a new bundle since start")
        swaps.add_metric([], d.bundles.swaps)
        state = _gauge("lifecycle_state", "1 for the current lifecycle state", ["state"])
        for s in _STATES:
            state.add_metric([s], 1.0 if s == health.state else 0.0)
        healthy = _gauge("healthy", "1 when /healthz answers 200")
        healthy.add_metric([], 1.0 if health.healthy else 0.0)
        up = _gauge("uptime_seconds", "seconds since the daemon object was created")
        up.add_metric([], d.lifecycle.uptime_s())
        yield from (info, model, prov, swaps, state, healthy, up)

    def _stages(self, d: PipelineView) -> Iterator[Metric]:
        ops = self.ops
        items = _counter("stage_items", "items processed per stage", ["stage"])
        errors = _counter("stage_errors", "items that raised (logged, skipped) per stage", ["stage"])
        busy = _counter("stage_busy_seconds", "time spent processing per stage", ["stage"])
        fps = _gauge("stage_fps", "items per second per stage over the last 10 s", ["stage"])
        age = _gauge("stage_heartbeat_age_seconds", "time since the stage loop last turned", ["stage"])
        stalled = _gauge("stage_stalled", "1 when the heartbeat is older than stall_after_s", ["stage"])
        extra = {
            "vision_batches": _counter("vision_batches", "encoder calls of the vision stage"),
            "deadline_misses": _counter("vision_deadline_misses",
                                        "frames published later than vision.deadline_ms after capture"),
            "motion_gated": _counter("motion_gated_frames", "frames skipped by the motion gate"),
            "segments": _counter("speech_segments", "speech segments closed by the VAD"),
            "windows": _counter("audio_windows", "audio tagger windows"),
        }
        health = ops.health()
        for st in d.stages:
            s = st.stats()
            items.add_metric([st.name], s.get("items", st.items))
            errors.add_metric([st.name], s.get("errors", st.errors))
            busy.add_metric([st.name], st.busy_s)
            fps.add_metric([st.name], ops.rates.get(f"stage.{st.name}"))
            if "batches" in s:
                extra["vision_batches"].add_metric([], s["batches"])
            for key in ("motion_gated", "segments", "windows", "deadline_misses"):
                if key in s:
                    extra[key].add_metric([], s[key])
        fs = d.fusion.stats
        items.add_metric(["fusion"], fs.evaluations)
        fps.add_metric(["fusion"], ops.rates.get("stage.fusion"))
        for name, sh in health.stages.items():
            age.add_metric([name], sh.heartbeat_age_s)
            stalled.add_metric([name], 1.0 if sh.stalled else 0.0)
        yield from (items, errors, busy, fps, age, stalled, *extra.values())

    def _queues(self, d: PipelineView) -> Iterator[Metric]:
        depth = _gauge("queue_depth", "items waiting in a stage queue", ["queue"])
        cap = _gauge("queue_capacity", "bound of a stage queue", ["queue", "policy"])
        put = _counter("queue_put", "items offered to a queue", ["queue"])
        got = _counter("queue_get", "items taken from a queue", ["queue"])
        dropped = _counter("queue_dropped", "items dropped per queue and reason", ["queue", "reason"])
        for q in d.queues:
            st = q.stats()
            depth.add_metric([q.name], st.depth)
            cap.add_metric([q.name, st.policy], st.maxsize)
            put.add_metric([q.name], st.put_total)
            got.add_metric([q.name], st.get_total)
            for reason, n in st.dropped_total.items():
                dropped.add_metric([q.name, reason], n)
        yield from (depth, cap, put, got, dropped)

    def _inference(self, d: PipelineView) -> Iterator[Metric]:
        fam = HistogramMetricFamily(
            "perceptd_inference_duration_seconds",
            "time of one model call (one batch) per model and execution provider",
            labels=["model", "provider"],
        )
        merged: dict[tuple[str, ...], HistogramSnapshot] = {}
        for timings in [*(st.timings for st in d.stages), d.fusion.timings]:
            for key, snap in timings.histograms.snapshots().items():
                prev = merged.get(key)
                merged[key] = snap if prev is None else HistogramSnapshot(
                    snap.bounds, tuple(a + b for a, b in zip(prev.cumulative, snap.cumulative, strict=True)),
                    prev.sum + snap.sum, prev.count + snap.count)
        for key, snap in sorted(merged.items()):
            _histogram(fam, list(key), snap)
        yield fam

    def _latency(self, d: PipelineView) -> Iterator[Metric]:
        fam = HistogramMetricFamily(
            "perceptd_capture_to_publish_seconds",
            "monotonic capture time of the newest contributing sample to publish time, per topic",
            labels=["topic"],
        )
        for key, snap in sorted(self.ops.latency.snapshots().items()):
            _histogram(fam, list(key), snap)
        yield fam

    def _sources(self, d: PipelineView) -> Iterator[Metric]:
        now = time.monotonic_ns()
        up = _gauge("source_up", "1 when the source delivers", ["source", "kind"])
        state = _gauge("source_state", "1 for the current state of each source", ["source", "state"])
        fps = _gauge("source_fps", "items captured per second over the last 10 s", ["source"])
        age = _gauge("source_last_capture_age_seconds", "time since the newest captured item",
                     ["source"])
        counters: dict[str, tuple[CounterMetricFamily, Callable[[SourceStats], int]]] = {
            "captured": (_counter("source_captured", "frames or audio chunks captured", ["source"]),
                         lambda st: st.captured),
            "reconnects": (_counter("source_reconnects", "successful re-opens after a failure",
                                    ["source"]), lambda st: st.reconnects),
            "open_failures": (_counter("source_open_failures", "failed opens", ["source"]),
                              lambda st: st.open_failures),
            "read_errors": (_counter("source_read_errors", "failed or timed-out reads", ["source"]),
                            lambda st: st.read_errors),
            "overflows": (_counter("source_overflows", "device-side overflows", ["source"]),
                          lambda st: st.overflows),
            "skipped_rate": (_counter("source_rate_skipped", "frames skipped by the fps limit",
                                      ["source"]), lambda st: st.skipped_rate),
        }
        for src in d.sources:
            st = src.stats
            sid = src.source_id
            up.add_metric([sid, src.kind], 1.0 if str(st.state) == "up" else 0.0)
            for s in _SOURCE_STATES:
                state.add_metric([sid, s], 1.0 if str(st.state) == s else 0.0)
            fps.add_metric([sid], self.ops.rates.get(f"source.{sid}"))
            if st.last_capture_ns:
                age.add_metric([sid], (now - st.last_capture_ns) / 1e9)
            for fam, value in counters.values():
                fam.add_metric([sid], value(st))
        yield from (up, state, fps, age, *(fam for fam, _ in counters.values()))

    def _publisher(self, d: PipelineView) -> Iterator[Metric]:
        st = d.publisher.stats()
        pub = _counter("published", "messages published per topic", ["topic"])
        for topic, n in sorted(st.published.items()):
            pub.add_metric([topic], n)
        dropped = _counter("publish_dropped", "messages the PUB socket refused as a whole")
        dropped.add_metric([], st.dropped)
        invalid = _counter("publish_invalid", "items that could not be serialised (bugs)")
        invalid.add_metric([], st.invalid)
        seq = _gauge("publish_next_seq", "seq the next message will carry")
        seq.add_metric([], st.next_seq)
        yield from (pub, dropped, invalid, seq)

    def _control(self, d: PipelineView) -> Iterator[Metric]:
        st = d.control.stats()
        req = _counter("control_requests", "control requests served per type", ["type"])
        for t in sorted(set(REQUEST_TYPES) | set(st.requests)):  # every series exists from start
            req.add_metric([t], st.requests.get(t, 0))
        err = _counter("control_errors", "control error replies per reason", ["reason"])
        for r, n in sorted(st.errors.items()):
            err.add_metric([r], n)
        rec = _counter("control_received", "control frames received")
        rec.add_metric([], st.received)
        rd = _counter("control_replies_dropped", "replies that could not be sent")
        rd.add_metric([], st.replies_dropped)
        yield from (req, err, rec, rd)

    def _fusion(self, d: PipelineView) -> Iterator[Metric]:
        fs = d.fusion.stats
        ev = _counter("events", "fused event messages (start, update, end)")
        ev.add_metric([], fs.events_published)
        cmd = _counter("commands", "command verdicts", ["verdict"])
        cmd.add_metric(["accepted"], fs.commands_accepted)
        cmd.add_metric(["rejected"], fs.commands_rejected)
        last = _gauge("fusion_last_eval_seconds", "duration of the latest fusion evaluation")
        last.add_metric([], fs.last_eval_ms / 1e3)
        yield from (ev, cmd, last)

    def _ops(self, d: PipelineView) -> Iterator[Metric]:
        ops = self.ops
        if ops.watchdog is not None:
            w = ops.watchdog
            pings = _counter("watchdog_pings", "WATCHDOG=1 notifications sent")
            pings.add_metric([], w.pings)
            held = _counter("watchdog_withheld", "pings withheld because the pipeline stalled")
            held.add_metric([], w.withheld)
            yield from (pings, held)
        if ops.curve is not None:
            st = ops.curve.stats()
            auth = _counter("auth", "CURVE handshakes by result", ["result"])
            auth.add_metric(["allowed"], st["allowed"])
            auth.add_metric(["denied"], st["denied"])
            keys = _gauge("auth_authorized_keys", "client public keys on the allowlist")
            keys.add_metric([], st["authorized_keys"])
            yield from (auth, keys)
        if ops.mqtt is not None:
            st = ops.mqtt.stats()
            conn = _gauge("mqtt_connected", "1 while connected to the MQTT broker")
            conn.add_metric([], 1.0 if st.connected else 0.0)
            connects = _counter("mqtt_connects", "successful connections to the broker")
            connects.add_metric([], st.connects)
            pub = _counter("mqtt_published", "messages handed to the broker")
            pub.add_metric([], st.published)
            dropped = _counter("mqtt_dropped", "messages dropped by the outage buffer (oldest first)")
            dropped.add_metric([], st.dropped)
            buf = _gauge("mqtt_buffered", "messages waiting for the broker")
            buf.add_metric([], st.buffered)
            yield from (conn, connects, pub, dropped, buf)
        scrape = _gauge("scrape_duration_seconds", "time the previous /metrics scrape took")
        scrape.add_metric([], ops.last_scrape_s)
        yield scrape

    def _samples(self, d: PipelineView) -> Iterator[Metric]:
        st = d.samples.stats()
        per_label = {  # dict-valued stats: one series per trigger or reason
            "logged": ("samples_logged", "samples logged per trigger", "trigger"),
            "dropped": ("samples_dropped", "samples not logged per reason", "reason"),
            "capped": ("samples_capped", "samples refused by rate caps per trigger", "trigger"),
        }
        for key, (name, doc, label) in per_label.items():
            v = st.get(key)
            fam = _counter(name, doc, [label])
            if isinstance(v, dict):
                for k, n in sorted(v.items()):
                    if isinstance(n, int | float):
                        fam.add_metric([str(k)], n)
            elif isinstance(v, int | float) and not isinstance(v, bool):
                fam.add_metric(["all"], v)
            else:
                continue
            yield fam
        if isinstance(st.get("written"), int | float):
            fam = _counter("samples_written", "samples written to the store")
            fam.add_metric([], st["written"])
            yield fam
        gauges = {"bytes": ("samples_store_bytes", "bytes held by the samples store"),
                  "quota_bytes": ("samples_store_quota_bytes", "samples store quota (0: none)"),
                  "queued": ("samples_queued", "samples waiting for the disk writer")}
        for key, (name, doc) in gauges.items():
            v = st.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool):
                fam = _gauge(name, doc)
                fam.add_metric([], v)
                yield fam
        if "enabled" in st:
            fam = _gauge("samples_enabled", "1 when sample logging is on")
            fam.add_metric([], 1.0 if st["enabled"] and not st.get("error") else 0.0)
            yield fam


def build_registry(daemon: PipelineView, ops: OperationsView) -> CollectorRegistry:
    """A private registry: the daemon's collector plus this process's CPU, memory and GC."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DaemonCollector(daemon, ops))
    ProcessCollector(registry=reg)
    GCCollector(registry=reg)
    return reg


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """Text format 0.0.4, or OpenMetrics when the scraper asks for it."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
