"""`perceptd bench`: dispatch to the benchmark wanted (models, pipeline)."""

from __future__ import annotations

import argparse
from pathlib import Path

from perceptd.errors import UserError


def bench_main(args: argparse.Namespace) -> int:
    from perceptd.daemon.bundle import resolve_bundle
    from perceptd.daemon.config import load_config

    cfg = load_config(Path(args.config))
    bundle_dir = resolve_bundle(cfg.bundle.dir, cfg.bundle.version)
    if args.models:
        from perceptd.bench.models import main

        main(bundle_dir, args.repeat, args.json_out)
        return 0
    if getattr(args, "zeroshot", False):
        from perceptd.bench.zeroshot import main as zs_main

        zs_main(Path(args.config), args.json_out)
        return 0
    raise UserError("choose a benchmark: --models, --zeroshot")
