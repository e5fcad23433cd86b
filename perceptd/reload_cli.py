"""`perceptd reload`: ask the running daemon to reload its bundle pointer, run a candidate
bundle in shadow beside the live one (`--shadow VERSION`, `--shadow-stop`, `--shadow-report`),
or promote a bundle (`--promote VERSION`: the same transaction as `retrain --promote`, refused
when the daemon's last shadow report of it agrees less than `shadow.min_agreement`).
docs/replay.md, Shadow."""

from __future__ import annotations

import argparse
import json
from typing import Any

from perceptd.errors import UserError


def add_parser(sub: argparse._SubParsersAction, add_config, add_client_keys) -> None:  # noqa: ANN001
    p = sub.add_parser("reload", help="reload the daemon's bundle; shadow a candidate; promote")
    add_config(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--shadow", metavar="VERSION",
                   help="run VERSION's fusion head beside the live bundle on the live inputs "
                        "(its events on shadow.event.<name>)")
    g.add_argument("--shadow-stop", action="store_true", help="end the running shadow")
    g.add_argument("--shadow-report", action="store_true", help="the shadow's report")
    g.add_argument("--promote", metavar="VERSION",
                   help="current -> VERSION and have the daemon serve it (checks the shadow report)")
    p.add_argument("--minutes", type=float, help="shadow period (default: shadow.default_minutes)")
    p.add_argument("--endpoint", help="control endpoint (default: from the config)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the daemon")
    p.add_argument("--json", action="store_true", help="print the raw JSON reply")
    add_client_keys(p)


def reload_main(args: argparse.Namespace, endpoint: str, curve: Any) -> int:
    from perceptd.daemon.control.client import send_request
    from perceptd.daemon.shadow import format_report

    if args.minutes is not None and not args.shadow:
        raise UserError("--minutes goes with --shadow VERSION")
    if args.promote:
        return _promote(args)
    if args.shadow:
        req: dict[str, Any] = {"type": "shadow", "version": args.shadow}
        if args.minutes is not None:
            req["minutes"] = args.minutes
    elif args.shadow_stop:
        req = {"type": "shadow", "stop": True}
    elif args.shadow_report:
        req = {"type": "shadow"}
    else:
        req = {"type": "reload"}
    reply = send_request(endpoint, req, timeout_s=min(args.timeout, 10.0), curve=curve)
    if args.json:
        print(json.dumps(reply, indent=2))
    elif not reply.get("ok"):
        print(reply.get("error"))
    elif isinstance(reply.get("shadow"), dict):
        print(format_report(reply["shadow"]))
    elif args.shadow_report:
        print("no shadow has run in this daemon")
    elif args.shadow:
        print(f"shadow of {reply['candidate']} loading beside {reply['live']} for "
              f"{reply['minutes']:g} min (perceptd reload --shadow-report)")
    else:
        print(json.dumps({k: v for k, v in reply.items() if k != "ok"}))
    return 0 if reply.get("ok") else 1


def _promote(args: argparse.Namespace) -> int:
    from perceptd.daemon.config import load_config
    from perceptd.daemon.reload import promote_and_reload

    cfg = load_config(args.config)
    if not (cfg.bundle.dir / args.promote).is_dir():
        raise UserError(f"no bundle {args.promote!r} in {cfg.bundle.dir}")
    result = promote_and_reload(cfg, args.promote, args.timeout)
    ok = result["daemon"] not in ("refused", "not_swapped", "lost") and not result.get("restored")
    if args.json:
        print(json.dumps({"ok": ok, **result}, indent=2))
    else:
        verb = "promoted" if ok else "not promoted"
        print(f"{verb}: current -> {result['current']} (previous {result['previous']})")
        print(f"daemon: {result['daemon']}" + (f" ({result['detail']})" if result.get("detail") else ""))
    return 0 if ok else 1
