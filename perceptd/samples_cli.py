"""`perceptd samples list|show|stats|label|unlabel|purge|export` (each with --json).

The CLI opens the store as a reader: it may label and purge while the daemon logs (SQLite
WAL; deletes go row first), but only the daemon sweeps crash leftovers.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perceptd.daemon.config import load_config
from perceptd.daemon.samples.crypto import SampleCryptoError
from perceptd.daemon.samples.logger import open_store
from perceptd.daemon.samples.record import SampleFormatError
from perceptd.daemon.samples.store import NONE_LABEL, SampleStore, StoreError
from perceptd.errors import UserError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'90s', '15m', '12h', '30d', '2w' or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*", text or "")
    if not m:
        raise UserError(f"--older-than {text!r}: expected a duration like 90s, 15m, 12h, 30d or 2w")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def _one_line(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Store, key and id problems become one clear line (UserError), never a traceback."""

    @functools.wraps(fn)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (StoreError, SampleCryptoError, SampleFormatError, ValueError) as exc:
            raise UserError(str(exc)) from None

    return wrapped


def _store(args: argparse.Namespace) -> tuple[SampleStore, Any]:
    cfg = load_config(args.config)
    return open_store(cfg.samples, writer=False, create=False), cfg


def _when(ns: int | None) -> str:
    return "-" if ns is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


def _emit(args: argparse.Namespace, obj: Any, human: str) -> None:
    print(json.dumps(obj, indent=2) if args.json else human)


@_one_line
def cmd_list(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    with store:
        labelled = True if args.labelled else (False if args.unlabelled else None)
        infos = store.list(labelled=labelled, trigger=args.trigger, limit=args.limit,
                           newest_first=True)
    if args.json:
        print(json.dumps({"samples": [i.to_json() for i in infos]}, indent=2))
        return 0
    print(f"{'id':<28} {'created':<19} {'trigger':<15} {'event':<18} {'score':>5} "
          f"{'modalities':<18} {'bytes':>7}  labels")
    for i in infos:
        labels = ",".join(e if v else f"-{e}" for e, v in sorted(i.labels.items())) or "-"
        score = "-" if i.score is None else f"{i.score:.2f}"
        print(f"{i.id:<28} {_when(i.created_ns):<19} {i.trigger:<15} {i.event or '-':<18} {score:>5} "
              f"{i.modalities:<18} {i.bytes:>7}  {labels}")
    return 0


@_one_line
def cmd_show(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    with store:
        s = store.get(args.id)
    meta = {**s.meta(), "labels": s.labels, "modalities": list(s.modalities),
            "media": s.media.split(",") if s.media else [],
            "scores": {e: round(float(v), 4) for e, v in zip(s.events, s.scores, strict=True)}}
    top = sorted(meta["scores"].items(), key=lambda kv: -kv[1])[:5]
    _emit(args, meta, "\n".join([
        f"{s.id}  {s.trigger}  event {s.event or '-'}  model {s.model_version}",
        f"  modalities {', '.join(s.modalities) or '-'}  sources {s.sources}",
        f"  labels {s.labels or '-'}  media {s.media or '-'}",
        "  top scores " + ", ".join(f"{e} {v:.2f}" for e, v in top),
        *(f"  {m}: " + ", ".join(f"{lab} {p:.2f}" for lab, p in t[:3]) for m, t in s.tops.items()),
    ]))
    return 0


@_one_line
def cmd_stats(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    with store:
        st = store.stats()
    quota = st["quota_bytes"]
    human = [
        f"{st['dir']}: {st['samples']} samples, {st['bytes'] / 1e6:.2f} MB"
        + (f" of {quota / 1e6:.0f} MB quota" if quota else "")
        + f", {st['labelled']} labelled, {st['encrypted']} encrypted, {st['with_media']} with media",
        f"  oldest {_when(st['oldest_ns'])}  newest {_when(st['newest_ns'])}",
        "  by trigger: " + (", ".join(f"{k} {v}" for k, v in sorted(st["by_trigger"].items())) or "-"),
        "  by modalities: " + (", ".join(f"{k} {v}" for k, v in sorted(st["by_modalities"].items())) or "-"),
        "  labels: " + (", ".join(f"{k} {v}" for k, v in sorted(st["labels"].items())) or "-"),
        "  dropped: " + (", ".join(f"{k} {v}" for k, v in sorted(st["dropped"].items())) or "none"),
    ]
    _emit(args, st, "\n".join(human))
    return 0


@_one_line
def cmd_label(args: argparse.Namespace) -> int:
    store, cfg = _store(args)
    names = {e.name for e in cfg.events}
    if args.event not in names and args.event != NONE_LABEL:
        raise UserError(f"unknown event {args.event!r} (configured: {', '.join(sorted(names))}, "
                        f"or '{NONE_LABEL}')")
    with store:
        store.label(args.id, args.event, 0 if args.negative else 1, "cli")
        labels = store.info(args.id).labels
    _emit(args, {"ok": True, "sample": args.id, "labels": labels},
          f"{args.id}: labels {', '.join(e if v else '-' + e for e, v in sorted(labels.items()))}")
    return 0


@_one_line
def cmd_unlabel(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    with store:
        n = store.unlabel(args.id, args.event)
    _emit(args, {"ok": True, "sample": args.id, "removed": n}, f"{args.id}: {n} label(s) removed")
    return 0


@_one_line
def cmd_purge(args: argparse.Namespace) -> int:
    if args.older_than is None and not args.all:
        raise UserError("purge: give --older-than DURATION (e.g. 30d) or --all")
    older = parse_duration(args.older_than) if args.older_than is not None else None
    store, _ = _store(args)
    with store:
        n = store.purge(older_than_s=older, unlabelled_only=args.unlabelled)
        left = store.stats()["samples"]
    _emit(args, {"ok": True, "deleted": n, "remaining": left}, f"deleted {n} samples ({left} left)")
    return 0


@_one_line
def cmd_export(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    out = Path(args.dir)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: not empty (export writes into a new or empty folder)")
    with store:
        n = store.export(out)
    _emit(args, {"ok": True, "exported": n, "dir": str(out.resolve())},
          f"exported {n} samples (decrypted) to {out} (samples.jsonl + <id>.npz)")
    return 0


ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": cmd_list, "show": cmd_show, "stats": cmd_stats, "label": cmd_label,
    "unlabel": cmd_unlabel, "purge": cmd_purge, "export": cmd_export,
}


def samples_main(args: argparse.Namespace) -> int:
    return ACTIONS[args.samples_action](args)
