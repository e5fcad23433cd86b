"""`perceptd run`: the daemon in the foreground (systemd Type=notify aware)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from perceptd.daemon.config import Config, load_config
from perceptd.daemon.sources.camera import CameraConfig
from perceptd.daemon.sources.microphone import MicrophoneConfig
from perceptd.daemon.sources.wavfile import WavFileConfig

log = logging.getLogger(__name__)


def apply_overrides(cfg: Config, cameras: list[str], audio_file: str | None,
                    mic: str | None, loop: bool = False) -> Config:
    """--camera/--audio-file/--mic replace the config's sources (the rest stays)."""
    if not (cameras or audio_file or mic):
        return cfg
    cams = [CameraConfig(id=f"camera{i}", uri=_abs_uri(u), loop=loop) for i, u in enumerate(cameras)]
    files = [WavFileConfig(id="wav0", path=Path(audio_file).resolve(), loop=loop)] if audio_file else []
    mic_cfg = None
    if mic is not None:
        mic_cfg = MicrophoneConfig(id="mic0", device=int(mic) if mic.isdigit() else (mic or None))
    sources = cfg.sources.model_copy(update={"cameras": cams, "audio_files": files,
                                             "microphone": mic_cfg})
    return cfg.model_copy(update={"sources": sources})


def record_override(cfg: Config, record_dir: Path | str | None) -> Config:
    """--record DIR: this run records into DIR (docs/replay.md), whatever `record:` says."""
    if not record_dir:
        return cfg
    rec = cfg.record.model_copy(update={"enabled": True, "dir": Path(record_dir).resolve()})
    return cfg.model_copy(update={"record": rec})


def _abs_uri(uri: str) -> str:
    if "://" in uri or uri.isdigit() or uri.startswith("/dev/"):
        return uri
    return str(Path(uri).resolve())


def setup_logging(debug: bool) -> None:
    """One line per event to stderr (journald adds time and unit)."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr, force=True,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )


def run_main(args: argparse.Namespace) -> int:
    from perceptd.daemon.app import Daemon
    from perceptd.daemon.health.sdnotify import Notifier

    setup_logging(args.debug)
    cfg = apply_overrides(load_config(args.config), args.camera, args.audio_file, args.mic,
                          getattr(args, "loop", False))
    cfg = record_override(cfg, getattr(args, "record", None))
    notifier = Notifier()
    daemon = Daemon(cfg, notify=notifier)
    daemon.config_path = Path(args.config).resolve()  # the console's Retrain runs with it
    stop = threading.Event()

    def on_signal(signum: int, _frame) -> None:
        log.info("event=signal signal=%s", signal.Signals(signum).name)
        stop.set()

    hup_lock = threading.Lock()

    def on_hup(_signum: int, _frame) -> None:
        threading.Thread(target=_reload, args=(daemon, args, hup_lock), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    daemon.start()
    while not stop.wait(0.5):
        pass
    daemon.stop(timeout_s=4.5)
    _exit_now(0)
    return 0


def _exit_now(code: int) -> None:
    """Everything is drained and flushed by now; skip interpreter teardown, where native
    thread pools (CTranslate2's, for speech) can abort the process while being destroyed and
    turn a clean SIGTERM into rc -6."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _reload(daemon, args: argparse.Namespace, lock: threading.Lock) -> None:
    """SIGHUP: re-read and validate the config file. A bad file is refused (one log line and
    a health message) and the running config stays; a good one applies its live sections
    (the bundle selection) and reloads the bundle; other changed sections wait for a restart."""
    from perceptd.daemon.config import ConfigError
    from perceptd.daemon.inference.swap import ReloadRefused

    with lock:  # SIGHUPs in a burst are applied one after the other
        try:
            cfg = apply_overrides(load_config(args.config), args.camera, args.audio_file, args.mic,
                                  getattr(args, "loop", False))
            cfg = record_override(cfg, getattr(args, "record", None))
        except ConfigError as exc:
            error = "; ".join(exc.lines)
            log.error("event=config_refused via=SIGHUP path=%s error=%r", args.config, error)
            daemon.report_error(f"config {args.config} refused, running config kept: {error}",
                                key="config")
            return
        daemon.clear_error("config")  # the file is good again
        changes = daemon.reconfigure(cfg)
        log.info("event=config_reloaded via=SIGHUP path=%s applied=%s restart_needed=%s", args.config,
                 ",".join(changes["applied"]) or "-", ",".join(changes["restart_needed"]) or "-")
        try:
            log.info("event=reload_requested via=SIGHUP result=%s", daemon.reload_bundle())
        except ReloadRefused as exc:  # a refused bundle was logged (once, ERROR) by the daemon
            if str(exc).startswith("bundle refused"):
                log.info("event=reload_refused via=SIGHUP detail='see event=bundle_refused'")
            else:
                log.warning("event=reload_refused via=SIGHUP error=%s", exc)
