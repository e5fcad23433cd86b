"""Shadow: a candidate bundle's fusion head beside the live one, on the live rows.

`perceptd reload --shadow VERSION [--minutes M]` (control request `{"type": "shadow", ...}`):
the candidate is verified on the control thread and refused unless its encoders are the serving
bundle's (`samples.record.encoder_fingerprint`): then the encoders' outputs are shared and only
the candidate's fusion head and compiled event space are loaded (in a background thread).  From
then on, after every live fusion evaluation, `on_fused` (the fusion thread, hook of
`FusionStage.evaluate`) runs the candidate head on the very rows the live head just fused,
steps the candidate's own decoders and publishes their phases on `shadow.event.<name>`; live
messages are not touched.  A running report (agreement per `evaluate.diff`, extra and missing
events, the time the shadow adds per evaluation) is in `status` under "shadow"; when the period
ends, the shadow is stopped, or the live bundle changes, the report is final and stays.
Running a second encoder set (a candidate with other encoders) is not supported.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perceptd.daemon.bundle import Bundle, BundleError, resolve_bundle, verify_bundle
from perceptd.daemon.config.root import BundleConfig, ShadowConfig
from perceptd.daemon.errors import Refused
from perceptd.daemon.evaluate import diff, occurrences
from perceptd.daemon.events.config import EventConfig
from perceptd.daemon.events.decoder import EventDecoder, Transition
from perceptd.daemon.fusion.fused import Explanation, explain
from perceptd.daemon.fusion.space import EventSpace, compile_events
from perceptd.daemon.inference.fusion_head import FusionModel
from perceptd.daemon.inference.models import ModelSet
from perceptd.daemon.inference.session import SessionOptions
from perceptd.daemon.messages import Outbound, ShadowEventMessage, wall_time_iso
from perceptd.daemon.pipeline.fusion_stage import WindowInputs
from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.samples.record import encoder_fingerprint

log = logging.getLogger(__name__)
NS = 1_000_000_000
MAX_KEPT = 20_000  # starts/ends and latency samples kept per side (a long shadow stays bounded)
LISTED = 20  # extra/missing occurrences listed in the report (all are counted)


class ShadowRefused(Refused):
    """A shadow request that is not done (one clear line in the reply)."""


@dataclass(frozen=True)
class CandidateHead:
    """What a shadow loads of the candidate: its fusion head and its compiled event space."""

    version: str
    fusion: FusionModel
    space: EventSpace


def load_candidate_head(bundle: Bundle, serving: ModelSet, events: list[EventConfig],
                        opts: SessionOptions) -> CandidateHead:
    """The candidate's head session and event space (compiled with the serving text encoder:
    the fingerprints match, so it is the candidate's too), warmed up."""
    fusion = FusionModel(bundle.model_path("fusion"), opts)
    space = compile_events(events, serving.text.embed, bundle)
    x = np.zeros((1, 4, space.queries.shape[-1]), np.float32)
    fusion.fuse(x, np.zeros((1, 4), np.float32), space)
    return CandidateHead(bundle.version, fusion, space)


@dataclass
class _Run:
    candidate: str
    base: str  # the live version when it started
    path: str
    minutes: float
    started_ns: int
    ends_ns: int
    started_at: str
    state: str = "loading"  # loading | running | done | refused
    ended: str | None = None  # why it ended
    ended_at: str | None = None
    ended_ns: int | None = None
    error: str | None = None
    head: CandidateHead | None = None
    decoders: dict[str, EventDecoder] = field(default_factory=dict)
    last: dict[str, Explanation] = field(default_factory=dict)
    evaluations: int = 0
    live: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_KEPT))
    shadow: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_KEPT))
    added_ms: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_KEPT))
    head_ms: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_KEPT))
    final: dict[str, Any] | None = None  # the frozen report once it ended
    ends_pending: bool = False  # open candidate events still owe their `end` (fusion thread)


def _phase(tr: Transition) -> dict[str, Any]:
    return {"event": tr.event, "phase": tr.phase, "t_capture_ns": tr.t_ns, "score": tr.score}


def _percentiles(ms: deque[float]) -> dict[str, float | None]:
    if not ms:
        return {"p50": None, "p99": None, "max": None}
    a = np.asarray(ms, np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3)}


class Shadow:
    """At most one shadow at a time; the last one's report stays until the next starts."""

    def __init__(self, selection: Callable[[], BundleConfig], serving: Callable[[], ModelSet],
                 loader: Callable[[Bundle, ModelSet], CandidateHead], events: list[EventConfig],
                 publish: BoundedQueue[Outbound], cfg: ShadowConfig,
                 live_active: Callable[[], list[str]], *,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        """`live_active`: the live events open now (read on the fusion thread)."""
        self._selection = selection
        self._live_active = live_active
        self._serving = serving
        self._loader = loader
        self._events = list(events)
        self._publish = publish
        self._cfg = cfg
        self._clock = clock
        self._lock = threading.Lock()
        self._run: _Run | None = None

    # ------------------------------------------------------------------ control thread

    def start(self, version: str, minutes: float | None = None) -> dict[str, Any]:
        """Verify the candidate now (refusals raise ShadowRefused), load its head in the
        background; the shadow starts running once it is loaded."""
        minutes = float(minutes if minutes is not None else self._cfg.default_minutes)
        serving = self._serving()
        with self._lock:
            run = self._run
            if run is not None and run.state in ("loading", "running"):
                raise ShadowRefused(f"a shadow of {run.candidate} is {run.state}; stop it first "
                                    f"(perceptd reload --shadow-stop)")
        b = self._selection()
        try:
            bundle = verify_bundle(resolve_bundle(b.dir, version))
        except BundleError as exc:
            raise ShadowRefused(f"shadow refused: {exc}") from None
        if bundle.version == serving.version:
            raise ShadowRefused(f"shadow refused: {version} is the bundle serving "
                                f"({serving.version}); nothing to compare")
        fp_new, fp_live = encoder_fingerprint(bundle.manifest), encoder_fingerprint(serving.bundle.manifest)
        if fp_new != fp_live:
            raise ShadowRefused(
                f"shadow refused: the encoders of {bundle.version} differ from the serving "
                f"{serving.version}'s (fingerprint {fp_new} vs {fp_live}); a shadow runs only a "
                f"candidate fusion head on the live encoders' outputs (a second encoder set is "
                f"not supported): compare such bundles with `perceptd evaluate` on recordings")
        now = self._clock()
        run = _Run(bundle.version, serving.version, str(bundle.path), minutes, now,
                   now + int(minutes * 60 * NS), wall_time_iso())
        with self._lock:
            if self._run is not None and self._run.state in ("loading", "running"):
                raise ShadowRefused(f"a shadow of {self._run.candidate} is {self._run.state}")
            self._run = run
        threading.Thread(target=self._load, args=(run, bundle, serving), name="shadow-load",
                         daemon=True).start()
        log.info("event=shadow_loading candidate=%s live=%s minutes=%g", bundle.version,
                 serving.version, minutes)
        return {"ok": True, "shadow": "loading", "candidate": bundle.version,
                "live": serving.version, "minutes": minutes}

    def _load(self, run: _Run, bundle: Bundle, serving: ModelSet) -> None:
        try:
            head = self._loader(bundle, serving)
        except Exception as exc:  # noqa: BLE001 - the live bundle is not affected
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.error("event=shadow_refused candidate=%s error=%r", run.candidate, text)
            with self._lock:
                run.state, run.error = "refused", f"refused at load: {text}"
                run.ended, run.ended_at = "refused at load", wall_time_iso()
            return
        with self._lock:
            if run.state != "loading":  # stopped while loading
                return
            run.head = head
            run.decoders = {e.name: EventDecoder(e) for e in self._events}
            now = self._clock()  # the period counts from when it runs
            run.started_ns, run.ends_ns = now, now + int(run.minutes * 60 * NS)
            run.started_at = wall_time_iso()
            run.state = "running"
        log.info("event=shadow_running candidate=%s live=%s", run.candidate, run.base)

    def stop(self) -> dict[str, Any]:
        with self._lock:
            run = self._run
            if run is None or run.state not in ("loading", "running"):
                raise ShadowRefused("no shadow is running")
            self._finish(run, "stopped")
        return {"ok": True, "shadow": self.report()}

    def close(self) -> None:
        """The daemon stops (after fusion did): a running shadow ends, its open events end."""
        with self._lock:
            run = self._run
            if run is None:
                return
            self._finish(run, "daemon stopped")
        if run.ends_pending:
            self._close_open(run, self._clock())

    def report(self) -> dict[str, Any] | None:
        """The running report (final once the shadow ended); None before any shadow."""
        with self._lock:
            run = self._run
            if run is None:
                return None
            if run.state == "running" and self._clock() >= run.ends_ns:
                self._finish(run, "period over")
            return run.final if run.final is not None else self._report(run)

    def candidate_report(self, version: str) -> dict[str, Any] | None:
        r = self.report()
        return r if r is not None and r["candidate"] == version else None

    # ------------------------------------------------------------------ fusion thread

    def on_fused(self, now: int, inputs: dict[int, WindowInputs], live: list[Transition]) -> None:
        run = self._run
        if run is None:
            return
        if run.ends_pending:
            self._close_open(run, now)
        if run.state != "running" or run.head is None:
            return
        if now >= run.ends_ns:
            with self._lock:
                self._finish(run, "period over")
            self._close_open(run, now)
            return
        version = self._serving().version
        if version != run.base:
            with self._lock:
                self._finish(run, f"the live bundle changed to {version}")
            self._close_open(run, now)
            return
        if run.evaluations == 0:  # live events already open count as starting now
            seed = [{"event": n, "phase": "start", "t_capture_ns": now, "score": 0.0}
                    for n in self._live_active()]
            with self._lock:
                run.live.extend(seed)
        t0 = time.perf_counter()
        head = run.head
        per_window = {w: (inp.rows, head.fusion.fuse(inp.x, inp.mask, head.space, inp.probs_vision,
                                                     inp.probs_audio, inp.text_evidence))
                      for w, inp in inputs.items()}
        t_head = time.perf_counter()
        names = head.space.names
        phases: list[dict[str, Any]] = []
        for e in self._events:
            rows, res = per_window[int(e.window_s * NS)]
            i = names.index(e.name)
            r = int(np.argmax(res.scores[:, i]))
            tr = run.decoders[e.name].step(float(res.scores[r, i]), now)
            if tr is not None:
                self._emit(run, tr, explain(rows[r], res, r, i))
                if tr.phase != "update":  # starts and ends make the occurrences
                    phases.append(_phase(tr))
        t_end = time.perf_counter()
        with self._lock:
            run.evaluations += 1
            run.head_ms.append((t_head - t0) * 1e3)
            run.added_ms.append((t_end - t0) * 1e3)
            run.live.extend(_phase(tr) for tr in live if tr.phase != "update")
            run.shadow.extend(phases)

    def _emit(self, run: _Run, tr: Transition, expl: Explanation) -> None:
        if tr.phase == "end" or not expl.modalities:
            expl = run.last.get(tr.event, expl)
        else:
            run.last[tr.event] = expl
        msg = ShadowEventMessage(event=tr.event, phase=tr.phase, score=tr.score,
                                 modalities=expl.modalities, candidate_version=run.candidate)
        t_cap = tr.t_ns if tr.phase == "end" or not expl.t_capture_ns else expl.t_capture_ns
        self._publish.put(Outbound(msg, t_cap))

    def _close_open(self, run: _Run, now: int) -> None:
        """The candidate's open events get their `end` when the shadow ends."""
        run.ends_pending = False
        for name, dec in run.decoders.items():
            tr = dec.end(0.0, now)
            if tr is not None:
                self._emit(run, tr, run.last.get(name, Explanation({}, now)))

    # ------------------------------------------------------------------ report

    def _finish(self, run: _Run, why: str) -> None:
        """Under the lock: the report is frozen now; open candidate events end on the fusion
        thread's next evaluation."""
        if run.state not in ("loading", "running"):
            return
        was_running = run.state == "running"
        run.state, run.ended, run.ended_at, run.ended_ns = "done", why, wall_time_iso(), self._clock()
        run.ends_pending = was_running and any(d.active for d in run.decoders.values())
        run.final = self._report(run)
        log.info("event=shadow_done candidate=%s why=%r evaluations=%d agreement=%s",
                 run.candidate, why, run.evaluations, run.final.get("agreement"))

    def _report(self, run: _Run) -> dict[str, Any]:
        live, shadow = list(run.live), list(run.shadow)
        occ_live, occ_shadow = occurrences(live), occurrences(shadow)
        d = diff(occ_live, occ_shadow, self._cfg.shift_ms * 1_000_000)
        matched = len(d["same"]) + len(d["shifted"])
        union = matched + len(d["added"]) + len(d["removed"])
        per_event = {e.name: {"live_starts": sum(1 for o in occ_live if o.event == e.name),
                              "shadow_starts": sum(1 for o in occ_shadow if o.event == e.name)}
                     for e in self._events}
        end_ns = run.ended_ns if run.ended_ns is not None else self._clock()
        running = run.state == "running"
        return {
            "candidate": run.candidate, "live": run.base, "path": run.path, "state": run.state,
            "minutes": run.minutes, "started": run.started_at, "ended": run.ended,
            "ended_at": run.ended_at, "error": run.error,
            "elapsed_s": round(max(0, end_ns - run.started_ns) / NS, 1) if run.state != "loading" else 0.0,
            "remaining_s": round(max(0, run.ends_ns - end_ns) / NS, 1) if running else None,
            "evaluations": run.evaluations,
            "events": per_event,
            "agreement": round(matched / union, 4) if union else (1.0 if run.evaluations else None),
            "matched": matched, "shifted": len(d["shifted"]),
            "extra": len(d["added"]), "missing": len(d["removed"]),
            "extra_events": d["added"][:LISTED], "missing_events": d["removed"][:LISTED],
            "added_ms": _percentiles(run.added_ms), "head_ms": _percentiles(run.head_ms),
        }


def format_report(r: dict[str, Any]) -> str:
    """Human lines for `perceptd reload --shadow-report` / `perceptd status`."""
    state = r["state"] + (f" ({r['ended']})" if r.get("ended") else "")
    lines = [f"shadow {r['candidate']} beside {r['live']}: {state}, {r['evaluations']} evaluations "
             f"in {r['elapsed_s']} s of {r['minutes']:g} min"]
    if r.get("error"):
        lines.append(f"  error: {r['error']}")
    lines.append(f"  agreement {r['agreement']}  matched {r['matched']} (shifted {r['shifted']})  "
                 f"extra {r['extra']}  missing {r['missing']}")
    for name, c in r["events"].items():
        if c["live_starts"] or c["shadow_starts"]:
            lines.append(f"  {name:<20} live starts {c['live_starts']:>4}  shadow starts "
                         f"{c['shadow_starts']:>4}")
    for kind, key in (("extra", "extra_events"), ("missing", "missing_events")):
        for o in r[key]:
            lines.append(f"  {kind} {o['event']} at {o['start_ns']} (peak {o['peak']})")
    a, h = r["added_ms"], r["head_ms"]
    if a["p50"] is not None:
        lines.append(f"  added per evaluation: p50 {a['p50']} ms p99 {a['p99']} ms (candidate head "
                     f"p50 {h['p50']} ms p99 {h['p99']} ms)")
    return "\n".join(lines)
