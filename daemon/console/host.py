"""What the console reads from the daemon: a typed Protocol, and the adapter over a Daemon.

The console is a client of the same interfaces as /metrics and the control socket (status,
the rate meters and latency histograms, the sample logger's label call) plus the fusion
stage's `latest_rows()`; it never holds a lock of the pipeline nor waits for a stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from perceptd.daemon.fusion.timeline import Row

if TYPE_CHECKING:
    from perceptd.daemon.health.view import PipelineView


class DaemonView(Protocol):
    def ready(self) -> bool: ...
    def status(self) -> dict[str, Any]: ...
    def live(self) -> dict[str, Any]: ...
    def models(self) -> Any: ...
    def latest_rows(self) -> Sequence[Row]: ...
    def event_names(self) -> list[str]: ...
    def samples(self, limit: int, trigger: str | None, event: str | None) -> list[dict[str, Any]]: ...
    def label(self, sample_id: str, event: str) -> None: ...
    def config(self) -> Any: ...
    def camera_image(self, camera_id: str) -> Any: ...
    def config_path(self) -> Path | None: ...
    def snapshot_meta(self, snapshot_id: str) -> dict[str, Any] | None: ...
    def sample_detail(self, sample_id: str) -> dict[str, Any] | None: ...
    def sample_frame(self, sample_id: str) -> bytes | None: ...
    def delete_samples(self, sample_ids: list[str]) -> int: ...
    def snapshot_image(self, snapshot_id: str, camera: str) -> bytes | None: ...


class LabelRefused(Exception):
    pass


def _q(snap: Any, q: float) -> float | None:
    v = snap.quantile(q)
    return None if v is None else round(v * 1e3, 1)


class DaemonAdapter:
    """A DaemonView over the real Daemon, read through health/view.PipelineView (built lazily: the
    HTTP port opens before the pipeline)."""

    def __init__(self, daemon: PipelineView) -> None:
        self._d = daemon

    def ready(self) -> bool:
        return bool(self._d.ops.ready)

    def status(self) -> dict[str, Any]:
        return self._d.status()

    def live(self) -> dict[str, Any]:
        """The Live view's numbers: sources, stages (fps), queues, capture->publish p50/p99."""
        st = self._d.status()
        rates = self._d.ops.rates
        lat = self._d.ops.latency.snapshots()
        return {
            "state": st["state"], "model_version": st["model_version"], "uptime_s": st["uptime_s"],
            "sources": {k: {"kind": v["kind"], "state": v["state"], "reconnects": v["reconnects"],
                            "captured": v["captured"], "last_error": v["last_error"]}
                        for k, v in st["sources"].items()},
            "stages": {**{k: {"fps": round(rates.get(f"stage.{k}"), 1), "items": v["items"],
                              "errors": v["errors"]} for k, v in st["stages"].items()},
                       "fusion": {"fps": round(rates.get("stage.fusion"), 1),
                                  "items": st["fusion"]["evaluations"], "errors": 0}},
            "queues": {k: {"depth": v["depth"], "maxsize": v["maxsize"], "dropped": v["dropped"]}
                       for k, v in st["queues"].items()},
            "latency_ms": {k[0]: {"p50": _q(s, 0.5), "p99": _q(s, 0.99), "count": s.count}
                           for k, s in sorted(lat.items())},
            "speech": st["speech"], "errors": st["errors"],
            "audio_levels": dict(self._d.audio.levels),  # dBFS per audio source
            "snapshots": st.get("snapshots"),
        }

    def models(self) -> Any:
        return self._d.current_models()

    def latest_rows(self) -> Sequence[Row]:
        return self._d.fusion.latest_rows()

    def event_names(self) -> list[str]:
        return [e.name for e in self._d.cfg.events]

    def samples(self, limit: int, trigger: str | None, event: str | None) -> list[dict[str, Any]]:
        store = self._d.samples.store
        if store is None:
            return []
        infos = store.list(trigger=trigger, limit=None if event else limit, newest_first=True)
        if event:
            infos = [i for i in infos if i.event == event or i.labels.get(event)][:limit]
        return [i.to_json() for i in infos]

    def label(self, sample_id: str, event: str) -> None:
        from perceptd.daemon.samples.logger import LabelError

        logger = self._d.samples
        if not logger.known_label(event):
            raise LabelRefused(f"unknown event {event!r} (not in the configuration)")
        try:
            logger.label(sample_id, event, source="console")
        except LabelError as exc:
            raise LabelRefused(str(exc)) from None

    def config(self) -> Any:
        return self._d.cfg

    def config_path(self) -> Path | None:
        """The file `perceptd run -c` read (None for the demo's generated config)."""
        return self._d.config_path

    def camera_image(self, camera_id: str) -> Any:
        """The newest frame a camera emitted (BGR array), or None; never waits."""
        from perceptd.daemon.sources.camera import CameraSource

        for src in self._d.sources:
            if src.source_id == camera_id and isinstance(src, CameraSource):
                return src.last_image  # None before its first frame
        return None

    def snapshot_meta(self, snapshot_id: str) -> dict[str, Any] | None:
        store = self._d.snapshots
        return None if store is None else store.meta(snapshot_id)

    def snapshot_image(self, snapshot_id: str, camera: str) -> bytes | None:
        store = self._d.snapshots
        return None if store is None else store.image(snapshot_id, camera)

    def sample_detail(self, sample_id: str) -> dict[str, Any] | None:
        """What a sample saw: top labels per modality, scores per event, media kept (the file is
        decoded, so a page asks per sample, on a click)."""
        try:
            s = self._stored(sample_id)
        except Exception as exc:  # noqa: BLE001 - a damaged file is reported, not raised
            return {"id": sample_id, "error": f"{type(exc).__name__}: {exc}"}
        if s is None:
            return None
        scores = sorted(zip(s.events, (float(v) for v in s.scores), strict=True), key=lambda p: -p[1])
        return {"id": s.id, "trigger": s.trigger, "event": s.event, "score": s.score,
                "model_version": s.model_version, "modalities": list(s.modalities), "tops": s.tops,
                "scores": [[e, round(v, 4)] for e, v in scores[:5]], "text": s.text,
                "media": s.media, "labels": s.labels}

    def sample_frame(self, sample_id: str) -> bytes | None:
        try:
            s = self._stored(sample_id)
        except Exception:  # noqa: BLE001 - missing or damaged: no image
            return None
        return None if s is None else s.jpeg

    def _stored(self, sample_id: str) -> Any:
        """The stored sample (decoded), or None: logging off, not a sample id (checked before
        any path is built), or not in the store. A damaged file raises."""
        from perceptd.daemon.samples.record import SAMPLE_ID_RE

        store = self._d.samples.store
        if store is None or not SAMPLE_ID_RE.fullmatch(sample_id) or not store.exists(sample_id):
            return None
        return store.get(sample_id)

    def delete_samples(self, sample_ids: list[str]) -> int:
        from perceptd.daemon.samples.record import SAMPLE_ID_RE

        store = self._d.samples.store
        if store is None:
            raise LabelRefused("sample logging is off")
        bad = [i for i in sample_ids if not SAMPLE_ID_RE.fullmatch(i)]
        if bad:
            raise LabelRefused(f"not a sample id: {bad[0][:80]!r}")
        return store.delete([i for i in sample_ids if store.exists(i)])
