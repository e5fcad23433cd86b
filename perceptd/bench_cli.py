"""`perceptd bench`: dispatch to the benchmark wanted (models, pipeline)."""

from __future__ import annotations

import argparse
from pathlib import Path

from perceptd.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The pipeline/suite flags (the models/zeroshot ones are declared in perceptd.cli)."""
    p.add_argument("--pipeline", action="store_true",
                   help="end to end: efficiency vs stage ceiling, plain-loop baseline, latency")
    p.add_argument("--all", action="store_true",
                   help="models + pipeline + --compare-vision-paths + --find-max-streams (the whole suite)")
    p.add_argument("--streams", type=_int_list, default=[1, 4], help="stream counts, e.g. 1,2,4")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before each measurement")
    p.add_argument("--soak-minutes", type=float, default=0.0,
                   help="also run 4 streams this long and record RSS/fds (0: skip)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads of the daemon")
    p.add_argument("--no-sequential", action="store_true", help="skip the plain-loop baseline")
    p.add_argument("--sequential-max-streams", type=int, default=8,
                   help="run the plain loop only up to this many streams")
    p.add_argument("--no-latency", action="store_true", help="skip the 15 fps latency run")
    p.add_argument("--batches", type=_int_list, default=[1, 8, 32], help="model benchmark batch sizes")
    p.add_argument("--no-torch", action="store_true", help="models: skip the PyTorch eager column")
    p.add_argument("--vision-workers", type=int, default=None,
                   help="override vision.workers for the daemon runs (default: as configured)")
    p.add_argument("--vision-batch", type=int, default=None, help="override vision.max_batch")
    p.add_argument("--vision-wait-ms", type=float, default=None, help="override vision.max_wait_ms")
    p.add_argument("--gpu-resize", choices=("auto", "on", "off"), default=None,
                   help="override runtime.gpu_resize (frames resized on the device)")
    p.add_argument("--cuda-graph", action="store_true", help="runtime.cuda_graph on for the daemon runs")
    p.add_argument("--compare-vision-paths", action="store_true",
                   help="at the largest --streams, max rate with the resize on the host, on the device, "
                        "and on the device + CUDA graph, side by side")
    p.add_argument("--find-max-streams", type=int, default=0, metavar="N",
                   help="30 fps streams doubled (1, 2, 4 ... N) until frames drop or p99 passes "
                        "--p99-target-ms: the most streams sustained")
    p.add_argument("--sweep-batch", type=_int_list, default=None, metavar="B,B,...",
                   help="tune cross-stream batching: 30 fps streams (the largest --streams) for each "
                        "vision.max_batch here x each --sweep-wait-ms")
    p.add_argument("--sweep-wait-ms", type=_float_list, default=[0.0, 5.0, 20.0], metavar="MS,MS,...",
                   help="vision.max_wait_ms values of --sweep-batch (default 0,5,20)")
    p.add_argument("--sweep-load", type=_percent_list, default=None, metavar="PCT,PCT,...",
                   help="real time under load: per --streams count, live sources paced at these "
                        "percentages of the max-rate e2e fps (e.g. 25,50,75,90), with the WAV and 1 "
                        "typed command/s; per point fps, vision p50/p99, drops by queue, typed and "
                        "spoken command latency, daemon CPU (-load.png); --seconds per point")
    p.add_argument("--sweep-load-base", type=float, default=None, metavar="FPS",
                   help="--sweep-load: take FPS as 100 %% for every stream count instead of measuring "
                        "the max rate (the same offered rates as another run: an A/B of two builds)")
    p.add_argument("--no-configurations", action="store_true",
                   help="skip the per---streams comparison (max rate, plain loop, 30 fps): run only "
                        "--compare-vision-paths / --find-max-streams / --sweep-load / latency / soak")
    p.add_argument("--commands-spoken", type=int, default=40, metavar="N",
                   help="--commands: N paraphrases + N near-misses (+ the non-commands) spoken in 2 voices, "
                        "clean and at 10 dB SNR (0: all; -1: typed only)")
    p.add_argument("--console", action="store_true",
                   help="web console: the daemon's CPU with no page vs one Chromium page on Live, A/B")
    p.add_argument("--p99-target-ms", type=float, default=None,
                   help="latency bound of --find-max-streams (default 50 on cuda, 100 on cpu)")


def _number_list(text: str, kind: type, least: float, what: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what} separated by commas, got {text!r}") from None
    if not values or min(values) < least:
        raise argparse.ArgumentTypeError(f"expected {what} >= {least:g}, got {text!r}")
    return values


def _int_list(text: str) -> list[int]:
    return _number_list(text, int, 1, "integers")


def _float_list(text: str) -> list[float]:
    return _number_list(text, float, 0, "numbers")


def _percent_list(text: str) -> list[float]:
    return _number_list(text, float, 1, "percentages")


def bench_main(args: argparse.Namespace) -> int:
    from perceptd.daemon.bundle import resolve_bundle
    from perceptd.daemon.config import load_config

    cfg = load_config(Path(args.config))
    bundle_dir = resolve_bundle(cfg.bundle.dir, cfg.bundle.version)
    ran = False
    if args.models or args.all:
        from perceptd.bench.models import main

        main(bundle_dir, args.repeat, None if args.all else args.json_out, device=args.device,
             batches=args.batches, config=args.config, torch_eager=not args.no_torch)
        ran = True
    if args.pipeline or args.all:
        from perceptd.bench.pipeline import main as pipeline_main

        if args.all:  # the whole suite: the vision paths side by side and the stream search too
            args.compare_vision_paths = True
            args.find_max_streams = args.find_max_streams or (64 if args.device == "cuda" else 4)

        pipeline_main(bundle_dir, args)
        ran = True
    if getattr(args, "zeroshot", False):
        from perceptd.bench.zeroshot import main as zs_main

        zs_main(Path(args.config), args.json_out)
        ran = True
    if getattr(args, "asr", False) or getattr(args, "asr_offline", False):
        from perceptd.bench.asr import main as asr_main

        asr_main(Path(args.config), bundle_dir, args.json_out, live_run=not args.asr_offline)
        ran = True
    if getattr(args, "commands", False):
        from perceptd.bench.commands import main as commands_main

        commands_main(Path(args.config), args.json_out, spoken_n=args.commands_spoken)
        ran = True
    if getattr(args, "accuracy", False):
        from perceptd.bench.accuracy import main as accuracy_main

        accuracy_main(Path(args.config), args.json_out)
        ran = True
    if getattr(args, "robustness", False):
        from perceptd.bench.robustness import main as robustness_main

        robustness_main(Path(args.config), args.json_out)
        ran = True
    if getattr(args, "console", False):
        from perceptd.bench.console import main as console_main

        console_main(bundle_dir, args)
        ran = True
    if not ran:
        raise UserError("choose a benchmark: --models, --pipeline, --all, --accuracy, --zeroshot, --asr, "
                        "--commands, --robustness, --console")
    return 0
