"""Ask a running daemon to reload its bundle (promotion, rollback: `perceptd retrain --promote`,
`perceptd rollback`, the console's Promote/Rollback).

Promotion and rollback move the `current`/`previous` pointers and ask the daemon to `reload`
(verify, load in the background, swap between batches).  The move is a transaction: when the
daemon refuses the new bundle (sha256, parity, or a model that does not load) the pointers are
put back at once and the command returns with the daemon's reason, so `current` never stays on
a bundle that does not serve.  No daemon running is not an error: the next start serves the new
pointer (and a daemon whose `current` will not load falls back to `previous`, see
inference/swap.BundleSwapper.load).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perceptd.daemon.bundle import pointer_target, promote, set_pointer
from perceptd.daemon.config import Config

log = logging.getLogger(__name__)


def request_reload(cfg: Config, wait_s: float = 30.0) -> dict[str, Any]:
    """Send `reload`; wait (bounded) until the daemon serves the version it announced."""
    from perceptd.daemon.control.client import ControlError, connect_uri, send_request
    from perceptd.daemon.security.curve import CurveClient

    endpoint = connect_uri(cfg.control.endpoint)
    try:
        curve = CurveClient.from_config(cfg.security)
        reply = send_request(endpoint, {"type": "reload"}, timeout_s=5.0, curve=curve)
    except ControlError as exc:
        return {"daemon": "not_running", "detail": str(exc)}
    except Exception as exc:  # noqa: BLE001 - e.g. CURVE keys missing: report, do not fail
        return {"daemon": "unreachable", "detail": f"{type(exc).__name__}: {exc}"}
    if not reply.get("ok"):
        return {"daemon": "refused", "detail": reply.get("error", "")}
    target = reply.get("model_version")
    if not reply.get("swapping"):
        out = {"daemon": "serving", "model_version": target}
        if reply.get("detail"):
            out["detail"] = reply["detail"]
        return out
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            st = send_request(endpoint, {"type": "status"}, timeout_s=3.0, curve=curve)
        except ControlError as exc:
            return {"daemon": "lost", "detail": str(exc)}
        swap = st.get("swap") or {}
        if swap.get("version") == target and swap.get("state") == "refused":
            return {"daemon": "refused", "model_version": st.get("model_version"),
                    "detail": f"{target} {swap.get('error')}; still serving {st.get('model_version')}"}
        if st.get("model_version") == target:
            return {"daemon": "swapped", "model_version": target, "last_swap": st.get("last_swap")}
    return {"daemon": "not_swapped", "model_version": target,
            "detail": f"still not serving {target} after {wait_s:g} s (see `perceptd status`)"}


# the daemon said no (or died while loading): the pointers must not stay on that bundle
_UNDO = ("refused", "lost")


def switch_bundle(cfg: Config, move: Callable[[Path], Any], wait_s: float = 30.0) -> dict[str, Any]:
    """Move the pointers with `move(root)`, have a running daemon serve the result, and put the
    pointers back when the daemon refuses it.  Returns request_reload's result plus `current` and
    `previous` as they are now, and `restored: True` when the move was undone."""
    root = cfg.bundle.dir
    before = {p: pointer_target(root, p) for p in ("current", "previous")}
    move(root)
    if cfg.bundle.version != "current":
        result: dict[str, Any] = {
            "daemon": "pinned",
            "detail": f"bundle.version is pinned to {cfg.bundle.version!r}; the daemon ignores current"}
    else:
        result = request_reload(cfg, wait_s)
        if result["daemon"] in _UNDO:
            for pointer in ("current", "previous"):
                if (version := before[pointer]) is not None:
                    set_pointer(root, pointer, version)
            result["restored"] = True
            log.warning("event=pointers_restored current=%s previous=%s reason=%r", before["current"],
                        before["previous"], result.get("detail"))
    result.update(current=pointer_target(root, "current"), previous=pointer_target(root, "previous"))
    return result


def shadow_report(cfg: Config, version: str | None = None) -> dict[str, Any] | None:
    """The running daemon's last shadow report (of `version`, when given); None when there is
    none, or no daemon answers."""
    from perceptd.daemon.control.client import connect_uri, send_request
    from perceptd.daemon.security.curve import CurveClient

    try:
        reply = send_request(connect_uri(cfg.control.endpoint), {"type": "status"}, timeout_s=5.0,
                             curve=CurveClient.from_config(cfg.security))
    except Exception:  # noqa: BLE001 - no daemon (or unreachable): there is no report to check
        return None
    report = reply.get("shadow") if reply.get("ok") else None
    if not isinstance(report, dict) or (version is not None and report.get("candidate") != version):
        return None
    return report


def shadow_verdict(cfg: Config, version: str) -> dict[str, Any] | None:
    """None when promotion may go on; else why not: the daemon's last shadow report of this
    version has agreement below `shadow.min_agreement` (no report, or a bar of 0: no check)."""
    bar = cfg.shadow.min_agreement
    if bar <= 0:
        return None
    report = shadow_report(cfg, version)
    if report is None or report.get("agreement") is None:
        return None
    if float(report["agreement"]) >= bar:
        return None
    return {"daemon": "refused", "shadow_refused": True, "restored": True,  # nothing was moved
            "detail": f"the shadow of {version} agreed {report['agreement']} with the live bundle "
                      f"{report.get('live')} ({report.get('extra')} extra, {report.get('missing')} "
                      f"missing events over {report.get('evaluations')} evaluations), below "
                      f"shadow.min_agreement {bar:g}; pointers not moved",
            "shadow": {k: report.get(k) for k in ("candidate", "live", "state", "agreement",
                                                  "extra", "missing", "evaluations")}}


def request_shadow(cfg: Config, version: str, minutes: float, wait_s: float = 30.0) -> dict[str, Any]:
    """`retrain --shadow`: ask the running daemon (cfg.control, as promotion reaches it) to run
    `version` in shadow beside its live bundle for `minutes` (the control request `shadow`), and
    wait (bounded) until its head has loaded.  Returns {"daemon": "shadowing", "candidate",
    "live", "minutes", "state"} or, when no shadow runs, {"daemon": "not_running" | "unreachable"
    | "refused", "detail"} (nothing else changes: no pointer moves)."""
    from perceptd.daemon.control.client import ControlError, connect_uri, send_request
    from perceptd.daemon.security.curve import CurveClient

    endpoint = connect_uri(cfg.control.endpoint)
    try:
        curve = CurveClient.from_config(cfg.security)
        reply = send_request(endpoint, {"type": "shadow", "version": version, "minutes": minutes},
                             timeout_s=min(10.0, wait_s), curve=curve)
    except ControlError as exc:
        return {"daemon": "not_running", "detail": str(exc)}
    except Exception as exc:  # noqa: BLE001 - e.g. CURVE keys missing: report, do not fail
        return {"daemon": "unreachable", "detail": f"{type(exc).__name__}: {exc}"}
    if not reply.get("ok"):
        return {"daemon": "refused", "detail": str(reply.get("error", ""))}
    out: dict[str, Any] = {"daemon": "shadowing", "candidate": reply.get("candidate"),
                           "live": reply.get("live"), "minutes": reply.get("minutes"),
                           "state": "loading"}
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:  # the head loads in the background (~1 s)
        try:
            st = send_request(endpoint, {"type": "status"}, timeout_s=3.0, curve=curve)
        except ControlError as exc:
            return {"daemon": "lost", "detail": str(exc)}
        report = st.get("shadow") or {}
        if report.get("candidate") == out["candidate"] and report.get("state") != "loading":
            if report.get("state") == "refused":
                return {"daemon": "refused", "detail": str(report.get("error") or "refused at load")}
            out["state"] = report.get("state")
            break
        time.sleep(0.2)
    return out


def promote_and_reload(cfg: Config, version: str, wait_s: float = 30.0) -> dict[str, Any]:
    """`retrain --promote`: current -> version (previous -> the old current), undone on refusal.
    Refused before anything moves when the daemon's last shadow report of `version` agrees less
    than `shadow.min_agreement` (see shadow_verdict)."""
    refused = shadow_verdict(cfg, version)
    if refused is not None:
        log.warning("event=promote_refused version=%s reason=%r", version, refused["detail"])
        root = cfg.bundle.dir
        refused.update(current=pointer_target(root, "current"), previous=pointer_target(root, "previous"))
        return refused
    return switch_bundle(cfg, lambda root: promote(root, version), wait_s)
