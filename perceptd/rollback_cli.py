"""`perceptd rollback`: current -> previous, served by a running daemon or undone (see
daemon/reload.py for the transaction)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from perceptd.daemon.bundle import pointer_target, rollback
from perceptd.daemon.config import load_config
from perceptd.daemon.reload import switch_bundle


def rollback_main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    root = cfg.bundle.dir
    before = pointer_target(root, "current")
    target = pointer_target(root, "previous")
    result: dict[str, Any] = {"ok": True, "from": before}
    result.update(switch_bundle(cfg, rollback, args.timeout))
    result["ok"] = result["daemon"] not in ("refused", "not_swapped", "lost")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        if result.get("restored"):
            print(f"rollback undone: the daemon refused {target}; current -> {result['current']} "
                  f"(unchanged)")
        else:
            print(f"rolled back: current -> {result['current']} (was {before})")
        print(f"daemon: {result['daemon']}" + (f" ({result['detail']})" if result.get("detail") else ""))
    return 0 if result["ok"] else 1
