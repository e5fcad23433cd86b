"""One health verdict for /healthz, `perceptd status`, STATUS= and the watchdog.

Healthy means: the lifecycle is running (or degraded only by sources that are not required),
every required source is up, no stage's heartbeat is older than `stall_after_s`, and the
publisher and control threads are alive.  Everything that reports health calls `evaluate`,
so the HTTP check and the control socket can never disagree.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from perceptd.daemon.health.view import PipelineView

LIVE_STATES = ("running", "degraded")


class HasHeartbeat(Protocol):
    name: str
    heartbeat_ns: int


@dataclass(frozen=True)
class StageHealth:
    heartbeat_age_s: float
    stalled: bool


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    state: str
    model_version: str
    run_id: str
    uptime_s: float
    problems: list[str]  # why it is unhealthy (empty when healthy)
    warnings: list[str]  # degraded but still healthy (an optional source is down)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: dict[str, StageHealth] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # open refusals ("<UTC time> <what>"), cleared
    # when their condition is (a refused bundle by a good swap, a refused config by a good one)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = "ok" if self.healthy else "unhealthy"
        return d

    def line(self) -> str:
        """One line for STATUS= and logs."""
        if self.healthy:
            return "healthy" + (f" ({'; '.join(self.warnings)})" if self.warnings else "")
        return "UNHEALTHY: " + "; ".join(self.problems)


def stalled_stages(workers: Iterable[HasHeartbeat], stall_after_s: float, now_ns: int,
                   started_ns: int = 0) -> dict[str, StageHealth]:
    """Heartbeat age per stage; a heartbeat never set counts from `started_ns`."""
    out = {}
    for w in workers:
        hb = w.heartbeat_ns or started_ns or now_ns
        age = max(0.0, (now_ns - hb) / 1e9)
        out[w.name] = StageHealth(round(age, 3), age > stall_after_s)
    return out


def required(source_id: str, patterns: Iterable[str]) -> bool:
    pats = list(patterns)
    return "*" in pats or source_id in pats


def evaluate(daemon: PipelineView, required_sources: Iterable[str], stall_after_s: float,
             now_ns: int | None = None) -> HealthReport:
    """The verdict for a started Daemon (reads its objects; never blocks)."""
    now_ns = time.monotonic_ns() if now_ns is None else now_ns
    state = str(daemon.lifecycle.state)
    problems: list[str] = []
    warnings: list[str] = []
    if state not in LIVE_STATES:
        problems.append(f"lifecycle {state}")
    req = list(required_sources)
    sources: dict[str, dict[str, Any]] = {}
    for src in daemon.sources:
        st = src.stats
        is_req = required(src.source_id, req)
        age = (now_ns - st.last_capture_ns) / 1e9 if st.last_capture_ns else None
        sources[src.source_id] = {
            "state": str(st.state), "required": is_req, "reconnects": st.reconnects,
            "captured": st.captured, "last_error": st.last_error or None,
            "last_error_at": st.last_error_at or None,
            "first_capture_after_s": st.first_capture_after_s,
            "last_capture_age_s": None if age is None else round(age, 3),
        }
        if str(st.state) != "up":
            msg = f"source {src.source_id} {st.state}"
            (problems if is_req else warnings).append(msg)
    speech = daemon.speech_setup.warning  # a configured recognizer that could not load
    if speech:
        warnings.append(speech)
    stages = stalled_stages([*daemon.stages, daemon.fusion], stall_after_s, now_ns, daemon.started_ns)
    if state in LIVE_STATES:
        problems += [f"stage {n} stalled {s.heartbeat_age_s:.1f} s" for n, s in stages.items()
                     if s.stalled]
        for name, alive in (("publisher", daemon.publisher.is_alive()),
                            ("control", daemon.control.is_alive())):
            if not alive:
                problems.append(f"{name} thread dead")
    try:
        version = daemon.current_models().version
    except Exception:  # noqa: BLE001 - not loaded yet
        version = "none"
    return HealthReport(
        healthy=not problems, state=state, model_version=version,
        run_id=daemon.publisher.run_id, uptime_s=round(daemon.lifecycle.uptime_s(), 3),
        problems=problems, warnings=warnings, sources=sources, stages=stages,
        errors=daemon.errors,
    )
