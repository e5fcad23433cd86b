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
    from perceptd.probe_cli import probe_main

    return probe_main(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from perceptd.bench_cli import bench_main

    return bench_main(args)


def cmd_run(args: argparse.Namespace) -> int:
    from perceptd.run_cli import run_main

    return run_main(args)


def cmd_send(args: argparse.Namespace) -> int:
    from perceptd.daemon.control.client import send_request

    reply = send_request(_control_endpoint(args), {"type": "command", "text": args.text},
                         timeout_s=args.timeout, curve=_client_curve(args))
    print(json.dumps(reply) if args.json else ("ok" if reply.get("ok") else reply.get("error")))
    return 0 if reply.get("ok") else 1


def cmd_status(args: argparse.Namespace) -> int:
    from perceptd.daemon.control.client import send_request

    reply = send_request(_control_endpoint(args), {"type": "status"}, timeout_s=args.timeout,
                         curve=_client_curve(args))
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        _print_status(reply)
    healthy = (reply.get("health") or {}).get("healthy", True)
    return 0 if reply.get("ok") and healthy else 1


def _print_status(r: dict) -> None:
    h = r.get("health")
    if h:  # the same verdict as /healthz (one function computes both)
        verdict = "healthy" if h["healthy"] else "UNHEALTHY: " + "; ".join(h["problems"])
        print(f"{verdict}  ({r.get('summary', '')})")
        if h.get("warnings"):
            print(f"  warnings: {'; '.join(h['warnings'])}")
    print(f"state {r.get('state')}  model {r.get('model_version')}  uptime {r.get('uptime_s')} s  "
          f"run {r.get('run_id')}")
    for err in r.get("errors") or []:
        print(f"  error  {err}")
    for name, s in (r.get("sources") or {}).items():
        item = "frame" if s.get("kind") == "camera" else "chunk"
        if s.get("first_capture_after_s") is not None:
            first = f"first {item} after {s['first_capture_after_s']:.1f} s"
        elif s.get("waiting_first_s") is not None:
            first = f"no {item} yet ({s['waiting_first_s']:.1f} s)"
            if s.get("kind") == "camera":
                first += "; a stream needs regular keyframes (README: Sources)"
        else:
            first = ""
        error = ""
        if s.get("last_error"):
            at = f" {s['last_error_at']}" if s.get("last_error_at") else ""
            error = f"  error{at}: {s['last_error']}"
        print(f"  source {name:<12} {s['state']:<13} captured {s['captured']}  "
              f"reconnects {s['reconnects']}  {first}{error}")
    for name, q in (r.get("queues") or {}).items():
        print(f"  queue  {name:<12} depth {q['depth']}/{q['maxsize']}  dropped {q['dropped']}  "
              f"({q['policy']})")
    for name, s in (r.get("stages") or {}).items():
        print(f"  stage  {name:<12} items {s['items']}  errors {s['errors']}")
    print(f"  providers {r.get('providers')}")
    if r.get("shadow"):
        from perceptd.daemon.shadow import format_report

        print("  " + format_report(r["shadow"]).replace("\n", "\n  "))
    if r.get("http_endpoint"):
        print(f"  http {r['http_endpoint']}/healthz  {r['http_endpoint']}/metrics")


def cmd_tail(args: argparse.Namespace) -> int:
    from perceptd.daemon.control.client import format_message, publisher_listening, subscribe

    endpoint, curve = _events_endpoint(args), _client_curve(args)
    if not publisher_listening(endpoint, curve):
        if not args.wait:
            raise UserError(f"nothing is publishing at {endpoint} yet (is `perceptd run` running?); "
                            f"`perceptd tail --wait` waits for it")
        print(f"nothing is publishing at {endpoint} yet; waiting (Ctrl-C to stop)", file=sys.stderr,
              flush=True)
    for _topic, msg in subscribe(endpoint, args.topics or (), curve=curve):
        print(json.dumps(msg) if args.json else format_message(msg), flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from perceptd.demo_cli import demo_main

    return demo_main(args)


def _control_endpoint(args: argparse.Namespace) -> str:
    if args.endpoint:
        return args.endpoint
    from perceptd.daemon.config import load_config
    from perceptd.daemon.control.client import connect_uri

    return connect_uri(load_config(_config_path(args)).control.endpoint)


def _events_endpoint(args: argparse.Namespace) -> str:
    if args.endpoint:
        return args.endpoint
    from perceptd.daemon.config import load_config
    from perceptd.daemon.control.client import connect_uri

    return connect_uri(load_config(_config_path(args)).publish.endpoint)


def _client_curve(args: argparse.Namespace):
    """CURVE client keys: --client-key/--server-key, else the config's security section."""
    from perceptd.daemon.security.curve import CurveClient

    if args.client_key or args.server_key:
        if not (args.client_key and args.server_key):
            raise UserError("--client-key and --server-key go together")
        return CurveClient.from_files(Path(args.client_key), Path(args.server_key))
    if not _config_path(args).exists():
        return None
    from perceptd.daemon.config import load_config

    return CurveClient.from_config(load_config(_config_path(args)).security)


def _add_client_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument("--client-key", metavar="FILE", help="CURVE client key pair (NAME.key_secret); "
                   "default: security.keys_dir of the config when security.curve is on")
    p.add_argument("--server-key", metavar="FILE", help="the daemon's public key (server.key)")


def cmd_keys(args: argparse.Namespace) -> int:
    from perceptd.daemon.security.curve import generate_keys

    for path in generate_keys(Path(args.dir), args.client or ["client"], force=args.force):
        print(f"wrote {path}")
    print(f"clients on the allowlist: {Path(args.dir) / 'authorized'}/ (remove a file to revoke)")
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    from perceptd.samples_cli import samples_main

    return samples_main(args)


def cmd_retrain(args: argparse.Namespace) -> int:
    from perceptd.export.retrain import retrain_main

    return retrain_main(args)


def cmd_reload(args: argparse.Namespace) -> int:
    from perceptd.reload_cli import reload_main

    endpoint = _control_endpoint(args) if not args.promote else ""
    return reload_main(args, endpoint, _client_curve(args) if not args.promote else None)


def cmd_rollback(args: argparse.Namespace) -> int:
    from perceptd.rollback_cli import rollback_main

    return rollback_main(args)


def _add_samples_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("samples", help="on-device samples: list, show, stats, label, purge, export")
    ssub = p.add_subparsers(dest="samples_action", required=True, metavar="ACTION")

    def action(name: str, hlp: str) -> argparse.ArgumentParser:
        a = ssub.add_parser(name, help=hlp)
        _add_config(a)
        a.add_argument("--json", action="store_true", help="machine-readable output")
        a.set_defaults(func=cmd_samples)
        return a

    a = action("list", "logged samples, newest first")
    g = a.add_mutually_exclusive_group()
    g.add_argument("--labelled", action="store_true", help="only labelled samples")
    g.add_argument("--unlabelled", action="store_true", help="only unlabelled samples")
    a.add_argument("--trigger", help="only this trigger (low_confidence, disagreement, label, ...)")
    a.add_argument("--limit", type=int, help="at most this many")
    action("show", "one sample: metadata, top scores, labels").add_argument("id")
    action("stats", "counts, bytes, labels, drops")
    a = action("label", "label a sample with an event ('none': it shows none of them)")
    a.add_argument("id")
    a.add_argument("event")
    a.add_argument("--negative", action="store_true", help="the event is NOT in this sample")
    a = action("unlabel", "remove a sample's label(s)")
    a.add_argument("id")
    a.add_argument("event", nargs="?")
    a = action("purge", "delete samples (labelled ones too unless --unlabelled)")
    a.add_argument("--older-than", metavar="DURATION", help="e.g. 30d, 12h, 90m")
    a.add_argument("--all", action="store_true", help="every sample")
    a.add_argument("--unlabelled", action="store_true", help="only unlabelled samples")
    action("export", "decrypted copy (npz + jsonl) for training elsewhere").add_argument("dir")


def _add_retrain_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrain", help="fine-tune the fusion head on labelled samples, gate, promote")
    _add_config(p)
    p.add_argument("--promote", action="store_true",
                   help="promote a bundle that passes the gate and ask the daemon to reload")
    p.add_argument("--shadow", type=float, metavar="MINUTES",
                   help="instead of promoting: have the running daemon run a bundle that passes the "
                        "gate in shadow for MINUTES (exit 5 when it cannot)")
    p.add_argument("--json", action="store_true", help="print the gate report JSON on stdout")
    p.add_argument("--nproc", type=int, default=1, help="data-parallel processes (torch.distributed)")
    p.add_argument("--epochs", type=int, help="override samples.retrain.epochs")
    p.add_argument("--lr", type=float, help="override samples.retrain.lr")
    p.add_argument("--seed", type=int, help="override samples.retrain.seed")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="training device")
    p.add_argument("--shuffle-labels", action="store_true",
                   help="sanity check: train on permuted labels (the gate must refuse the result)")
    p.add_argument("--recordings", type=Path, nargs="+", metavar="DIR",
                   help="gate rule on labelled recordings: replay each with the current and the "
                        "candidate bundle (overrides samples.retrain.gate.recordings)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the daemon swap")
    p.set_defaults(func=cmd_retrain)

    from perceptd.reload_cli import add_parser as add_reload_parser

    add_reload_parser(sub, _add_config, _add_client_keys)
    sub.choices["reload"].set_defaults(func=cmd_reload)

    p = sub.add_parser("rollback", help="restore the previous bundle (and reload the daemon)")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the daemon swap")
    p.set_defaults(func=cmd_rollback)


def cmd_install_service(args: argparse.Namespace) -> int:
    from perceptd.service import install_main

    return install_main(args)


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (YAML)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perceptd", description=(__doc__ or "").splitlines()[0])
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
    p.add_argument("--record", metavar="DIR", type=Path,
                   help="record every input, the fusion schedule and the messages (docs/replay.md)")
    p.set_defaults(func=cmd_run)

    from perceptd.replay_cli import add_parsers as add_replay_parsers

    add_replay_parsers(sub)  # replay, evaluate

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
        _add_client_keys(p)
        p.set_defaults(func=fn)

    p = sub.add_parser("tail", help="subscribe and print events")
    _add_config(p)
    p.add_argument("topics", nargs="*", help="topic prefixes (event., vision, audio, ...)")
    p.add_argument("--endpoint", help="events endpoint (default: from the config)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--wait", action="store_true",
                   help="wait for a daemon that is not publishing yet (default: fail at once)")
    _add_client_keys(p)
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("keys", help="CURVE keys for the events and control sockets")
    ksub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    k = ksub.add_parser("generate", help="server + client key pairs; clients go on the allowlist")
    k.add_argument("dir", help="keys folder (security.keys_dir)")
    k.add_argument("--client", action="append", metavar="NAME",
                   help="client key pair to make (repeatable; default: client)")
    k.add_argument("--force", action="store_true", help="replace existing keys")
    k.set_defaults(func=cmd_keys)

    from perceptd.service import DEFAULT_CONFIG as UNIT_CONFIG
    p = sub.add_parser("install-service", help="render and install the systemd units")
    p.add_argument("--prefix", default="/", help="root to install under (default /)")
    p.add_argument("--dry-run", action="store_true", help="print the units, write nothing")
    p.add_argument("--user", help="run as this existing user (default: a systemd DynamicUser)")
    p.add_argument("--exe", help="perceptd executable (default: this installation's)")
    p.add_argument("--config", dest="config_path", default=UNIT_CONFIG,
                   help=f"config file the service reads (default {UNIT_CONFIG})")
    p.add_argument("--memory-max", default="2G", help="MemoryMax= of the daemon (default 2G)")
    p.add_argument("--cpu-quota", default="200%", help="CPUQuota= of the daemon (default 200%%)")
    p.add_argument("--watchdog-sec", type=int, default=30, help="WatchdogSec= (default 30)")
    p.add_argument("--retrain-at", default="*-*-* 03:00:00", help="OnCalendar= of the retrain timer")
    p.set_defaults(func=cmd_install_service)

    p = sub.add_parser("check-config", help="validate a config file")
    _add_config(p)
    p.add_argument("--schema", action="store_true", help="print the config JSON Schema")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("export", help="PyTorch -> ONNX bundle, parity report, manifest")
    _add_config(p)
    p.add_argument("--out", help="bundle root (default: bundle.dir from the config)")
    p.add_argument("--only", action="append", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_export)

    _add_samples_parser(sub)
    _add_retrain_parsers(sub)

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
    p.add_argument("--accuracy", action="store_true",
                   help="events on real media: per-event precision/recall, confusions, false fires "
                        "per hour of background, prompt-only sound events, fusion tick cost")
    p.add_argument("--zeroshot", action="store_true", help="zero-shot quality of the vocabulary")
    p.add_argument("--asr", action="store_true",
                   help="spoken commands: accuracy, false accepts, latency, recognizer CPU share")
    p.add_argument("--asr-offline", action="store_true", help="--asr without the live daemon run")
    p.add_argument("--commands", action="store_true",
                   help="command matcher: typed + spoken paraphrases, near-misses, false accepts")
    p.add_argument("--robustness", action="store_true",
                   help="decision stability under perturbed input and FGSM -> docs/robustness.md")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--json", dest="json_out", help="also write the JSON here")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per point")
    from perceptd.bench_cli import add_arguments as add_bench_arguments

    add_bench_arguments(p)
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
    except BrokenPipeError:  # `perceptd tail | head`: the reader is gone; end quietly
        _silence_stdout()
        return 0
    except Exception as exc:  # noqa: BLE001 - the one place errors become one line
        if args.debug:
            raise
        return _report(exc)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


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
