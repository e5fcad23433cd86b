"""Ask a running daemon to reload its bundle, and `perceptd rollback`.

Promotion and rollback only move the `current`/`previous` pointers; the daemon picks the
change up through a `reload` request (verify, load in the background, swap between batches).
No daemon running is not an error: the next start serves the new pointer.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from perceptd.daemon.bundle import pointer_target, rollback
from perceptd.daemon.config import Config, load_config


def _connect_uri(bind_uri: str) -> str:
    return bind_uri.replace("://*:", "://127.0.0.1:").replace("://0.0.0.0:", "://127.0.0.1:")


def request_reload(cfg: Config, wait_s: float = 30.0) -> dict[str, Any]:
    """Send `reload`; wait (bounded) until the daemon serves the version it announced."""
    from perceptd.daemon.control.client import ControlError, send_request
    from perceptd.daemon.security.curve import CurveClient

    endpoint = _connect_uri(cfg.control.endpoint)
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
        return {"daemon": "serving", "model_version": target}
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            st = send_request(endpoint, {"type": "status"}, timeout_s=3.0, curve=curve)
        except ControlError as exc:
            return {"daemon": "lost", "detail": str(exc)}
        if st.get("model_version") == target:
            return {"daemon": "swapped", "model_version": target, "last_swap": st.get("last_swap")}
    return {"daemon": "not_swapped", "model_version": target,
            "detail": f"still not serving {target} after {wait_s:g} s (see `perceptd status`)"}


def rollback_main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    root = cfg.bundle.dir
    before = pointer_target(root, "current")
    now = rollback(root)
    result: dict[str, Any] = {"ok": True, "from": before, "current": now,
                              "previous": pointer_target(root, "previous")}
    if cfg.bundle.version != "current":
        result["daemon"] = "pinned"
        result["detail"] = f"bundle.version is pinned to {cfg.bundle.version!r}; the daemon ignores current"
    else:
        result.update(request_reload(cfg, args.timeout))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"rolled back: current -> {now} (was {before})")
        print(f"daemon: {result['daemon']}" + (f" ({result['detail']})" if result.get("detail") else ""))
    return 0 if result["daemon"] not in ("refused", "not_swapped", "lost") else 1
