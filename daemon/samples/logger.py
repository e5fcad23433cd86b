"""The daemon side of samples: fused events and rows -> triggers -> a background disk writer.

What fusion hands downstream reaches the logger one way: each fused event phase through the
sample tap (samples/tap.py, `take_event`), each evaluation's best rows through `on_evaluate`;
the types are fusion's (fusion/fused.py), never the pipeline's.  On the fusion thread the logger
only decides and copies a few small arrays (microseconds); encoding, JPEG/WAV, encryption, fsync
and SQLite happen on the writer thread, so a slow SD card never delays an event.  A sample id is
assigned when the sample is taken (the tap stamps it on the event message); a label for a sample
still waiting for the disk is kept and applied when it is written.
Nothing here raises into the daemon: failures are counted, logged and the sample dropped.
"""

from __future__ import annotations

import io
import logging
import queue
import random
import threading
import time
import wave
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perceptd.daemon.errors import Refused
from perceptd.daemon.events.config import EventConfig
from perceptd.daemon.fusion.fused import FusedRow
from perceptd.daemon.fusion.space import MODALITIES
from perceptd.daemon.messages import EventMessage
from perceptd.daemon.samples import crypto
from perceptd.daemon.samples.config import SamplesConfig
from perceptd.daemon.samples.record import Sample, check_sample_id, encoder_fingerprint, new_sample_id
from perceptd.daemon.samples.store import NONE_LABEL, Limits, SampleNotFound, SampleStore, StoreError
from perceptd.daemon.samples.triggers import Candidate, TriggerPolicy

log = logging.getLogger(__name__)
NS = 1_000_000_000
SR = 16_000


class LabelError(Refused):
    """A label request that cannot be served; str() is the reply."""


@dataclass
class _Pending:
    """A sample between the fusion thread and the disk, with raw media still unencoded."""

    sample: Sample
    frame: np.ndarray | None = None
    pcm: np.ndarray | None = None
    late_labels: dict[str, int] = field(default_factory=dict)


@dataclass
class _Capture:
    """An explicit `label` request for 'now': its sample id is decided (and answered) at once;
    the fusion thread's next evaluation writes the sample under that id."""

    event: str
    sample_id: str
    queued_s: float  # monotonic time of the request (a capture no evaluation serves expires)
    late_labels: dict[str, int] = field(default_factory=dict)  # labelled before it was taken


MAX_CAPTURES = 16  # label-now requests waiting for the next fusion evaluation
CAPTURE_TTL_S = 5.0  # one not served by then (fusion idle: nothing observed) is dropped


def limits_of(cfg: SamplesConfig) -> Limits:
    r = cfg.retention
    return Limits(max_bytes=r.max_bytes, rotate=r.rotate, keep_labelled=r.keep_labelled,
                  min_free_bytes=int(r.min_free_mb * 1024 * 1024), max_age_s=r.max_age_days * 86400)


def open_store(cfg: SamplesConfig, *, writer: bool, create: bool) -> SampleStore:
    """The configured store with its cipher: made (0600) by the writer when encryption is on;
    an existing key is loaded anyway, so samples sealed earlier stay readable."""
    cipher = None
    key_file = cfg.encryption.key_file
    if (writer and cfg.encryption.enabled) or key_file.exists():
        # a reader without the key can still list, label and purge; reading content then
        # fails with "the key is needed" (a key others may read is refused either way)
        cipher = crypto.Cipher(crypto.load_key(key_file, create=writer and cfg.encryption.enabled))
    return SampleStore(cfg.dir, cipher=cipher, encrypt=writer and cfg.encryption.enabled,
                       limits=limits_of(cfg), writer=writer, create=create)


def jpeg_bytes(frame: np.ndarray, quality: int) -> bytes | None:
    import cv2

    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return buf.tobytes() if ok else None


def wav_bytes(pcm: np.ndarray, rate: int = SR) -> bytes:
    pcm16 = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16.tobytes())
    return buf.getvalue()


class SampleLogger:
    """Owns the trigger policy, the store and the writer thread of one daemon."""

    def __init__(self, cfg: SamplesConfig, events: list[EventConfig], models: Callable[[], Any], *,
                 clock_ns: Callable[[], int] = time.monotonic_ns, rng: random.Random | None = None
                 ) -> None:
        self.cfg = cfg
        self.events = {e.name: e for e in events}
        self.models = models
        self.clock_ns = clock_ns
        self.policy = TriggerPolicy(cfg.triggers, cfg.caps, events, rng or random.Random())
        self.store: SampleStore | None = None
        self.enabled = False
        self.error = ""
        self._q: queue.Queue[_Pending | None] = queue.Queue(maxsize=cfg.queue_size)
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._captures: dict[str, _Capture] = {}  # by sample id, in request order
        self._thread: threading.Thread | None = None
        self._fp_cache: tuple[str, str] = ("", "")
        self.logged: Counter[str] = Counter()  # per trigger, taken by the fusion thread
        self.dropped: Counter[str] = Counter()  # backlog + store drops
        self._persisted: Counter[str] = Counter()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> bool:
        """Open the store and start the writer; on failure sample logging is off, daemon fine."""
        if not self.cfg.enabled:
            return False
        try:
            self.store = open_store(self.cfg, writer=True, create=True)
        except (StoreError, crypto.SampleCryptoError, OSError) as exc:
            self.error = str(exc)
            log.error("event=samples_disabled error=%s", exc)
            return False
        self.enabled = True
        self._thread = threading.Thread(target=self._writer, name="samples", daemon=True)
        self._thread.start()
        log.info("event=samples_enabled dir=%s encrypted=%s bytes=%d", self.cfg.dir,
                 self.cfg.encryption.enabled, self.store.total_bytes)
        return True

    def close(self, timeout_s: float = 2.0) -> None:
        """Flush what is queued (bounded), then close the index."""
        if not self.enabled:
            return
        self.enabled = False
        try:
            self._q.put(None, timeout=max(0.1, timeout_s))
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self.store is not None and (self._thread is None or not self._thread.is_alive()):
            self._flush_counters()
            self.store.close()

    # ------------------------------------------------------------------ fusion thread

    def take_event(self, event: EventMessage, fused: FusedRow | None) -> str | None:
        """An event phase on its way to the wire (the sample tap asks): a start may be a
        command (labelled) or an uncertain detection.  The id of the sample taken, or None."""
        if not self.enabled or event.phase != "start" or fused is None:
            return None
        try:
            m = self.models()
            i = m.space.index(event.event)
            use = fused.row.mask * m.space.allowed[i]
            c = self.policy.on_start(event.event, float(event.score), fused.modality_scores[i], use)
            if c is None:
                return None
            return self._take(c, fused, m, event.score)
        except Exception:  # noqa: BLE001 - logging must never cost an event
            log.exception("event=sample_hook_error hook=take_event")
            return None

    def on_evaluate(self, now_ns: int, fused: dict[str, FusedRow]) -> None:
        """Per evaluation: explicit captures, uncertain events, and the random sample."""
        if not self.enabled or not fused:
            return
        try:
            m = self.models()
            now_s = now_ns / NS
            self._serve_captures(fused, m, now_ns / NS)
            for name, fr in fused.items():
                i = m.space.index(name)
                score = float(fr.scores[i])
                c = self.policy.assess(name, score, fr.modality_scores[i], fr.row.mask * m.space.allowed[i])
                if c is not None and self.policy.quiet(c, now_s):
                    self._take(c, fr, m, score)
            if self.policy.random_due(now_s):
                fr = fused[max(fused, key=lambda n: self.events[n].window_s if n in self.events else 0)]
                if fr.row.mask.any():
                    self._take(Candidate("random", None), fr, m, None)
        except Exception:  # noqa: BLE001
            log.exception("event=sample_hook_error hook=on_evaluate")

    def _serve_captures(self, fused: dict[str, FusedRow], m, now_s: float) -> None:
        with self._lock:
            captures = list(self._captures.values())
        for cap in captures:
            fr = fused.get(cap.event) or next(iter(fused.values()))
            if not fr.row.mask.any():
                self._capture_failed(cap, "label_nothing_observed",
                                     "nothing observed right now (no modality in the window)")
                continue
            i = m.space.index(cap.event) if cap.event in m.space.names else None
            score = float(fr.scores[i]) if i is not None else None
            label = Candidate("label", cap.event if i is not None else None, cap.event)
            if self._take(label, fr, m, score, capture=cap) is None:
                self._capture_failed(cap, "label_refused",
                                     "label samples are capped or off (samples.caps / triggers.label)")

    def _capture_failed(self, cap: _Capture, reason: str, detail: str) -> None:
        """The request was answered with its id already: the miss is counted and logged."""
        with self._lock:
            if self._captures.pop(cap.sample_id, None) is None:
                return  # taken after all (or counted already)
        log.warning("event=label_capture_failed sample=%s event=%s detail=%r", cap.sample_id,
                    cap.event, detail)
        self._count_drop(reason, cap.sample_id)

    def _take(self, c: Candidate, fr: FusedRow, m, score: float | None,
              capture: _Capture | None = None) -> str | None:
        if not self.policy.admit(c, self.clock_ns() / NS):
            return None
        sample, frame, pcm = self._build(c, fr, m, score, capture.sample_id if capture else None)
        pending = _Pending(sample, frame, pcm)
        with self._lock:
            if capture is not None:  # labels given to it while it waited travel along
                if self._captures.pop(capture.sample_id, None) is None:
                    return None  # expired meanwhile (counted there)
                pending.late_labels.update(capture.late_labels)
            self._pending[sample.id] = pending
        try:
            self._q.put_nowait(pending)
        except queue.Full:
            with self._lock:
                self._pending.pop(sample.id, None)
            self._count_drop("backlog", sample.id)
            return None
        self.logged[c.trigger] += 1
        return sample.id

    def _encoder_fp(self, m) -> str:
        version, fp = self._fp_cache
        if version != m.version:
            fp = encoder_fingerprint(m.bundle.manifest)
            self._fp_cache = (m.version, fp)
        return fp

    def _build(self, c: Candidate, fr: FusedRow, m, score: float | None,
               sample_id: str | None) -> tuple[Sample, np.ndarray | None, np.ndarray | None]:
        raw = self.cfg.raw_media
        row = fr.row
        sources, t_mod, tops = {}, {}, {}
        vf = ae = frame = pcm = None
        vp = ap = None
        text = None
        commands: dict[str, float] = {}
        for name, out in zip(MODALITIES, row.outputs, strict=True):
            if out is None:
                continue
            sources[name] = out.source
            t_mod[name] = out.t_capture_ns
            tops[name] = [[str(lab), float(p)] for lab, p in out.top[:5]]
            if name == "vision":
                vf = _copy(out.extra.get("features"))
                vp = _copy(out.probs)
                frame = out.extra.get("frame") if raw.frames else None
            elif name == "audio":
                ae = _copy(out.extra.get("embedding"))
                ap = _copy(out.probs)
                pcm = out.extra.get("pcm") if raw.audio else None
            elif name == "text":
                commands = {n: float(lo) for n, lo in out.commands}
                if raw.text:
                    text = out.extra.get("text")
        wall = time.time_ns()
        sample = Sample(
            id=sample_id or new_sample_id(wall), created_ns=wall,
            t_capture_ns=max(t_mod.values(), default=0), trigger=c.trigger, event=c.event,
            score=None if score is None else float(score), model_version=m.version,
            encoder_fp=self._encoder_fp(m), events=tuple(m.space.names),
            scores=np.array(fr.scores, np.float32), x=np.array(row.x, np.float32),
            mask=np.array(row.mask, np.float32), modality_names=MODALITIES, sources=sources,
            t_modalities=t_mod, tops=tops, vision_features=vf, audio_embeddings=ae, text=text,
            vision_probs=vp, audio_probs=ap, commands=commands,
            labels={c.label: 1} if c.label else {},
        )
        return sample, frame, pcm

    # ------------------------------------------------------------------ control thread

    def capture(self, event: str) -> str:
        """`label` with sample 'now': log the current context labelled `event`.

        Never waits for fusion: the sample id is decided here and returned at once; the next
        fusion evaluation writes the sample under it (labels given to that id meanwhile are
        kept).  A capture that cannot be taken then (nothing observed, caps) is counted in
        `dropped` and logged."""
        if not self.enabled:
            raise LabelError(f"sample logging is off ({self.error or 'samples.enabled: false'})")
        if not self.cfg.triggers.label:
            raise LabelError("explicit label samples are off (samples.triggers.label: false)")
        now = time.monotonic()
        with self._lock:
            expired = [c for c in self._captures.values() if now - c.queued_s > CAPTURE_TTL_S]
            if len(self._captures) - len(expired) >= MAX_CAPTURES:
                raise LabelError("too many label requests waiting for fusion; try again")
        for c in expired:
            self._capture_failed(c, "label_expired", "no fusion evaluation served it in time")
        cap = _Capture(event, new_sample_id(), now)
        with self._lock:
            self._captures[cap.sample_id] = cap
        return cap.sample_id

    def label(self, sample_id: str, event: str, value: int = 1, source: str = "control") -> None:
        """Label a logged sample; one still on its way to disk gets the label when written."""
        if self.store is None:
            raise LabelError(f"sample logging is off ({self.error or 'samples.enabled: false'})")
        try:
            check_sample_id(sample_id)
        except ValueError as exc:
            raise LabelError(str(exc)) from None
        with self._lock:
            pending = self._pending.get(sample_id)
            if pending is not None:
                pending.late_labels[event] = value
                return
            waiting = self._captures.get(sample_id)  # a label-now not yet taken by fusion
            if waiting is not None:
                waiting.late_labels[event] = value
                return
        try:
            self.store.label(sample_id, event, value, source)
        except SampleNotFound:
            raise LabelError(f"no sample {sample_id} (never logged, dropped or purged)") from None
        except Exception as exc:  # noqa: BLE001 - sqlite busy/full: tell the client, stay up
            raise LabelError(f"could not label {sample_id}: {exc}") from None

    def known_label(self, event: str) -> bool:
        return event in self.events or event == NONE_LABEL

    # ------------------------------------------------------------------ writer thread

    def _writer(self) -> None:
        next_retention = 0.0
        next_counters = time.monotonic() + 30.0
        while True:
            now = time.monotonic()
            if now >= next_retention:
                self._retention()
                next_retention = now + self.cfg.retention.interval_s
            if now >= next_counters:
                self._flush_counters()
                next_counters = now + 30.0
            try:
                item = self._q.get(timeout=1.0)
            except queue.Empty:
                continue
            if item is None:
                break
            self._write(item)

    def _write(self, p: _Pending) -> None:
        assert self.store is not None  # the writer thread runs only while the store is open
        s = p.sample
        raw = self.cfg.raw_media
        try:
            if p.frame is not None:
                s.jpeg = jpeg_bytes(p.frame, raw.jpeg_quality)
            if p.pcm is not None and p.pcm.size:
                s.wav = wav_bytes(p.pcm)
            with self._lock:
                s.labels.update(p.late_labels)
                p.late_labels.clear()
            reason = self.store.put(s)
        except Exception as exc:  # noqa: BLE001 - never kill the writer
            log.exception("event=sample_write_error sample=%s", s.id)
            reason = f"error:{type(exc).__name__}"
        with self._lock:
            self._pending.pop(s.id, None)
            late = dict(p.late_labels)
        if reason is not None:
            self.dropped[reason] += 1
            return
        for event, value in late.items():  # labelled between the first merge and the insert
            try:
                self.store.label(s.id, event, value, "control")
            except Exception:  # noqa: BLE001
                log.exception("event=sample_label_error sample=%s", s.id)

    def _retention(self) -> None:
        assert self.store is not None  # the writer thread runs only while the store is open
        try:
            self.store.enforce_retention()
        except Exception:  # noqa: BLE001 - e.g. the index is busy: next time
            log.exception("event=samples_retention_error")

    def _count_drop(self, reason: str, sample_id: str) -> None:
        self.dropped[reason] += 1
        n = self.dropped[reason]
        if n in (1, 10, 100) or n % 1000 == 0:
            log.warning("event=sample_dropped reason=%s sample=%s count=%d", reason, sample_id, n)

    def _flush_counters(self) -> None:
        if self.store is None:
            return
        now = Counter(_snapshot(self.dropped))
        now.update({f"suppressed:{k}": v for k, v in _snapshot(self.policy.rejected).items()
                    if k.startswith("cap:")})
        delta = {k: v - self._persisted.get(k, 0) for k, v in now.items() if v != self._persisted.get(k, 0)}
        try:
            self.store.add_counters(delta)
        except Exception:  # noqa: BLE001 - disk full: the in-memory counters still show it
            return
        self._persisted = now

    # ------------------------------------------------------------------ status

    def stats(self) -> dict[str, Any]:
        st: dict[str, Any] = {"enabled": self.enabled, "dir": str(self.cfg.dir),
                              "encrypted": self.cfg.encryption.enabled}
        if self.error:
            st["error"] = self.error
        st["logged"] = _snapshot(self.logged)
        st["written"] = self.store.written if self.store else 0
        st["queued"] = self._q.qsize()
        st["dropped"] = _snapshot(self.dropped)
        st["capped"] = {k.split(":", 1)[1]: v for k, v in _snapshot(self.policy.rejected).items()
                        if k.startswith("cap:")}
        st["bytes"] = self.store.total_bytes if self.store else 0
        st["quota_bytes"] = self.cfg.retention.max_bytes
        return st


def _snapshot(counter: Counter[str]) -> dict[str, int]:
    """A copy of a counter another thread may be updating (retry on a concurrent resize)."""
    for _ in range(5):
        try:
            return dict(counter)
        except RuntimeError:
            continue
    return {}


def _copy(a: Any) -> np.ndarray | None:
    return None if a is None else np.array(a, np.float32)
