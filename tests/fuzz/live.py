"""A live daemon for socket fuzzing: no sources (commands only), per-peer rate limit lifted so
that every fuzz input reaches the parser instead of the limiter."""

from __future__ import annotations

from pathlib import Path

from tests.rigs.daemon import DaemonProcess, daemon_config


def fuzz_daemon(tmp: Path) -> DaemonProcess:
    cfg = daemon_config(tmp, sources={"cameras": []},
                        control={"rate_limit_per_s": 1e6, "burst": 1_000_000})
    daemon = DaemonProcess(cfg)
    daemon.wait_ready(120)
    return daemon
