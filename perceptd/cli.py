"""The `perceptd` command line: parse, dispatch, and turn known errors into one clear line.

Each subcommand's work lives in the package that owns it; this module only wires arguments.
Heavy imports (torch for export/retrain) happen inside the handlers, so `perceptd run` on a
device without PyTorch never touches it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from perceptd import __version__
from perceptd.errors import UserError

DEFAULT_CONFIG = "config.yaml"


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config)


def cmd_check_config(args: argparse.Namespace) -> int:
    from perceptd.daemon.config import Config, load_config

    if args.schema:
        print(json.dumps(Config.model_json_schema(), indent=2))
        return 0
    cfg = load_config(_config_path(args))
    kinds = {k: sum(1 for e in cfg.events if e.kind == k) for k in ("state", "command")}
    print(
        f"{args.config}: ok — {len(cfg.events)} events ({kinds['state']} state, "
        f"{kinds['command']} command), bundle {cfg.bundle.dir}/{cfg.bundle.version}, "
        f"device {cfg.runtime.device}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from perceptd.daemon.config import load_config
    from perceptd.export.bundle import build_bundle

    cfg = load_config(_config_path(args))
    out = Path(args.out) if args.out else cfg.bundle.dir
    base = None
    if args.only:
        from perceptd.daemon.bundle import resolve_bundle

        base = resolve_bundle(cfg.bundle.dir, "current") if (cfg.bundle.dir / "current").exists() else None
    build_bundle(out, cfg.events, only=args.only or None, base=base)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from perceptd.daemon.probe import probe_main

    return probe_main(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from perceptd.bench_cli import bench_main

    return bench_main(args)


def cmd_run(args: argparse.Namespace) -> int:
    from perceptd.daemon.main import run_main

    return run_main(args)


def cmd_send(args: argparse.Namespace) -> int:
    from perceptd.daemon.control.client import send_request

    reply = send_request(_control_endpoint(args), {"type": "command", "text": args.text},
                         timeout_s=args.timeout)
    print(json.dumps(reply) if args.json else ("ok" if reply.get("ok") else reply.get("error")))
    return 0 if reply.get("ok") else 1


def cmd_status(args: argparse.Namespace) -> int:
    from perceptd.daemon.control.client import send_request

    reply = send_request(_control_endpoint(args), {"type": "status"}, timeout_s=args.timeout)
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        _print_status(reply)
    return 0 if reply.get("ok") else 1


def _print_status(r: dict) -> None:
    print(f"state {r.get('state')}  model {r.get('model_version')}  uptime {r.get('uptime_s')} s  "
          f"run {r.get('run_id')}")
    for name, s in (r.get("sources") or {}).items():
        print(f"  source {name:<12} {s['state']:<13} captured {s['captured']}  "
              f"reconnects {s['reconnects']}  {s.get('last_error') or ''}")
    for name, q in (r.get("queues") or {}).items():
        print(f"  queue  {name:<12} depth {q['depth']}/{q['maxsize']}  dropped {q['dropped']}  "
              f"({q['policy']})")
    for name, s in (r.get("stages") or {}).items():
        print(f"  stage  {name:<12} items {s['items']}  errors {s['errors']}")
    print(f"  providers {r.get('providers')}")


def cmd_tail(args: argparse.Namespace) -> int:
    from perceptd.daemon.control.client import format_message, subscribe

    for _topic, msg in subscribe(_events_endpoint(args), args.topics or ()):
        print(json.dumps(msg) if args.json else format_message(msg), flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from perceptd.daemon.demo import demo_main

    return demo_main(args)


def _connect_uri(bind_uri: str) -> str:
    return bind_uri.replace("://*:", "://127.0.0.1:").replace("://0.0.0.0:", "://127.0.0.1:")


def _control_endpoint(args: argparse.Namespace) -> str:
    if args.endpoint:
        return args.endpoint
    from perceptd.daemon.config import load_config

    return _connect_uri(load_config(_config_path(args)).control.endpoint)


def _events_endpoint(args: argparse.Namespace) -> str:
    if args.endpoint:
        return args.endpoint
    from perceptd.daemon.config import load_config

    return _connect_uri(load_config(_config_path(args)).publish.endpoint)


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (YAML)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perceptd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"perceptd {__version__}")
    parser.add_argument("--debug", action="store_true", help="tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="the daemon, in the foreground")
    _add_config(p)
    p.add_argument("--camera", action="append", default=[], metavar="URI",
                   help="device, file or stream URL (repeatable); replaces the config's sources")
    p.add_argument("--audio-file", metavar="WAV", help="replay a WAV in real time")
    p.add_argument("--mic", metavar="DEV", help="microphone name or index ('' = default)")
    p.add_argument("--loop", action="store_true", help="loop --camera files and --audio-file")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the daemon on bundled sample media, with a live view")
    _add_config(p)
    p.add_argument("--forever", action="store_true", help="run until Ctrl-C")
    p.add_argument("--seconds", type=float, default=30.0, help="demo length")
    p.set_defaults(func=cmd_demo)

    for name, fn, hlp in (("send", cmd_send, "a text command to the running daemon"),
                          ("status", cmd_status, "health of the running daemon")):
        p = sub.add_parser(name, help=hlp)
        _add_config(p)
        if name == "send":
            p.add_argument("text", help="the command, e.g. 'turn on the lights'")
        p.add_argument("--endpoint", help="control endpoint (default: from the config)")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a reply")
        p.add_argument("--json", action="store_true", help="print the raw JSON reply")
        p.set_defaults(func=fn)

    p = sub.add_parser("tail", help="subscribe and print events")
    _add_config(p)
    p.add_argument("topics", nargs="*", help="topic prefixes (event., vision, audio, ...)")
    p.add_argument("--endpoint", help="events endpoint (default: from the config)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("check-config", help="validate a config file")
    _add_config(p)
    p.add_argument("--schema", action="store_true", help="print the config JSON Schema")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("export", help="PyTorch -> ONNX bundle, parity report, manifest")
    _add_config(p)
    p.add_argument("--out", help="bundle root (default: bundle.dir from the config)")
    p.add_argument("--only", action="append", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("probe", help="one shot through the bundle (image, audio, text)")
    _add_config(p)
    p.add_argument("--image", help="image file (JPEG, PNG, ...)")
    p.add_argument("--audio", help="WAV file")
    p.add_argument("--text", help="a text command or sentence")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--top", type=int, default=5, help="labels shown per modality")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("bench", help="benchmarks (JSON + plot)")
    _add_config(p)
    p.add_argument("--models", action="store_true", help="per-model ORT vs PyTorch latency")
    p.add_argument("--zeroshot", action="store_true", help="zero-shot quality of the vocabulary")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--json", dest="json_out", help="also write the JSON here")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per point")
    p.set_defaults(func=cmd_bench)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    from perceptd.daemon.bundle import BundleError
    from perceptd.daemon.config import ConfigError
    from perceptd.daemon.control.client import ControlError

    return (UserError, BundleError, ConfigError, ControlError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place errors become one line
        if args.debug:
            raise
        return _report(exc)


def _report(exc: Exception) -> int:
    from perceptd.daemon.config import ConfigError

    if isinstance(exc, ConfigError):
        for line in exc.lines:
            print(f"error: {exc.source}: {line}", file=sys.stderr)
        return 2
    known = _known_errors()
    name = "" if isinstance(exc, known) else f"{type(exc).__name__}: "
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(f"error: {name}{message}", file=sys.stderr)
    if not isinstance(exc, known):
        print("(run with --debug for the traceback)", file=sys.stderr)
    return getattr(exc, "exit_code", 1)


if __name__ == "__main__":
    sys.exit(main())
