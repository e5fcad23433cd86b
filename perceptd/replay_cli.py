"""`perceptd replay` and `perceptd evaluate`: recordings through the pipeline (docs/replay.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from perceptd.errors import UserError


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, default=None,
                   help="config file (default: the one the recording was made with)")


def add_parsers(sub: Any) -> None:
    """Register `replay`, `evaluate` and `label-range` on perceptd's subcommand parser."""
    p = sub.add_parser("replay", help="a recording through the pipeline on its virtual clock")
    p.add_argument("recording", type=Path, metavar="DIR",
                   help="a recording (or a folder of them: the newest)")
    _add_config(p)
    p.add_argument("--bundle", metavar="VERSION", help="bundle version (default: the recording's)")
    p.add_argument("--speed", choices=("1", "max"), default="max",
                   help="1: real time; max: as fast as the models allow (default)")
    p.add_argument("--schedule", choices=("auto", "live", "tick"), default="auto",
                   help="live: the recorded fusion evaluation times (reproduces the live events); "
                        "tick: every fusion tick; auto: live when the recording has a journal")
    p.add_argument("--json", action="store_true", help="every message, one JSON line each, on stdout")
    p.add_argument("--publish", action="store_true", help="also publish on the config's PUB socket")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("evaluate", help="compare two bundles on recordings (event-level diff)")
    p.add_argument("--recordings", type=Path, nargs="+", required=True, metavar="DIR")
    p.add_argument("--bundle", action="append", required=True, metavar="VERSION",
                   help="twice: the baseline A, then the candidate B")
    _add_config(p)
    p.add_argument("--schedule", choices=("auto", "live", "tick"), default="auto")
    p.add_argument("--shift-ms", type=float, default=1000.0,
                   help="the same event and phase within this is 'shifted', not added/removed")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument("--gate", action="store_true",
                   help="exit 3 when B adds a wrong event or loses a right one on labelled recordings")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("label-range", help="label a time range of a recording (evaluate scores it)")
    p.add_argument("recording", type=Path, metavar="DIR")
    p.add_argument("--from", dest="from_s", type=float, required=True, metavar="S",
                   help="seconds from the recording's start")
    p.add_argument("--to", dest="to_s", type=float, required=True, metavar="S")
    p.add_argument("event", metavar="EVENT|none", help="the event that should fire there, or none")
    p.set_defaults(func=cmd_label_range)


def _replay_errors() -> tuple[type[Exception], ...]:
    from perceptd.daemon.record.reader import RecordingError
    from perceptd.daemon.replay import ReplayError

    return (RecordingError, ReplayError)


def cmd_replay(args: argparse.Namespace) -> int:
    from perceptd.daemon.replay import replay_recording

    def sink(msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg, separators=(",", ":")) + "\n")

    publisher = outbox = None
    try:
        if args.publish:
            outbox, publisher = _publisher(args)
        rep = replay_recording(args.recording, config_path=args.config, bundle=args.bundle,
                               speed=None if args.speed == "max" else 1.0, schedule=args.schedule,
                               sink=sink if args.json else None, keep_messages=False, outbox=outbox)
    except _replay_errors() as exc:
        raise UserError(str(exc)) from None
    finally:
        if publisher is not None and outbox is not None:
            outbox.close()
            publisher.stop()
    s = rep.summary()
    if args.json:
        sys.stdout.flush()
        print(json.dumps({"replay": s}), file=sys.stderr)
    else:
        print(f"replayed {s['recording']} with bundle {s['bundle_version']} (schedule {s['schedule']}, "
              f"speed {s['speed']}): {s['frames']} frames, {s['chunks']} audio chunks, "
              f"{s['commands']} commands, {s['virtual_s']} s in {s['wall_s']} s "
              f"({s['fps']} fps, x{s['x_realtime']} real time)")
        for topic, n in sorted(s["messages"].items()):
            print(f"  {topic}: {n}")
        for p in s["problems"]:
            print(f"  skipped: {p}")
    return 0


def _publisher(args: argparse.Namespace):
    import zmq

    from perceptd.daemon.pipeline.queues import BoundedQueue
    from perceptd.daemon.publish.zmq_pub import EventPublisher
    from perceptd.daemon.record.reader import Recording
    from perceptd.daemon.replay import replay_config

    cfg = replay_config(Recording(args.recording), args.config, args.bundle)
    outbox: BoundedQueue[Any] = BoundedQueue("publish", 1024, "block")
    pub = EventPublisher(zmq.Context.instance(), cfg.publish, outbox,
                         model_version=lambda: cfg.bundle.version)
    pub.start()
    return outbox, pub


def cmd_label_range(args: argparse.Namespace) -> int:
    from perceptd.daemon.evaluate import label_range

    try:
        lab = label_range(args.recording, args.from_s, args.to_s, args.event)
    except _replay_errors() as exc:
        raise UserError(str(exc)) from None
    print(f"labelled {lab['from_s']}-{lab['to_s']} s as {lab['event']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from perceptd.daemon.evaluate import evaluate, format_report

    if len(args.bundle) != 2:
        raise UserError("evaluate needs --bundle A --bundle B (exactly two)")
    try:
        report = evaluate(args.recordings, args.bundle[0], args.bundle[1], config_path=args.config,
                          schedule=args.schedule, shift_ns=int(args.shift_ms * 1e6))
    except _replay_errors() as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 3 if args.gate and report["gate"]["ok"] is False else 0
