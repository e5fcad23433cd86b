"""Teach / Retrain: `perceptd retrain` in the background, its gate report, Promote and Rollback.

The retrain runs as a child process of the same interpreter (`python -m perceptd retrain -c
CONFIG --json`, the daemon's own config file), one at a time: torch never enters the daemon and
the hot path never waits for it.  Its stderr (the bundle build, the epoch bar) is kept as
progress lines; its stdout is the gate report (JSON).  The report's PNG is read once, only when
its path lies inside `samples.retrain.dir`, and kept in memory under the job's id: a request
names a job id the daemon gave out, never a path.  Promote and Rollback call what the CLI calls
(`perceptd retrain --promote`: daemon.reload.promote_and_reload; `perceptd rollback`:
daemon.reload.switch_bundle with bundle.rollback), on the candidate of the daemon's own last job.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROGRESS_LINES = 40
MAX_PNG = 8 * 1024 * 1024
# what the page shows of the report (the whole JSON holds every sample id of the split)
_REPORT_KEYS = ("passed", "outcome", "bundle_version", "base_version", "promoted", "rules", "per_event",
                "macro_f1", "taught", "seconds")


class RetrainRefused(Exception):
    """The request cannot be served now (busy, no config file, nothing to promote): 409."""


class Retrainer:
    def __init__(self, config_path: Callable[[], Path | None], config: Callable[[], Any]) -> None:
        self._config_path = config_path
        self._config = config  # the daemon's running Config (bundle dir, retrain dir, endpoints)
        self._lock = threading.Lock()
        self._switch = threading.Lock()  # one promote/rollback at a time
        self._proc: subprocess.Popen[bytes] | None = None
        self._job = 0
        self._state = "idle"  # idle | running | finished | failed
        self._progress: deque[str] = deque(maxlen=PROGRESS_LINES)
        self._report: dict[str, Any] | None = None
        self._png: dict[int, bytes] = {}
        self._started = self._finished = None
        self._rc: int | None = None
        self._error: str | None = None
        self._last_switch: dict[str, Any] | None = None

    # ------------------------------------------------------------------ retrain

    def start(self) -> dict[str, Any]:
        path = self._config_path()
        if path is None:
            raise RetrainRefused("this daemon was not started from a config file (`perceptd run -c FILE`); "
                                 "run `perceptd retrain` from a shell")
        with self._lock:
            if self._state == "running":
                raise RetrainRefused(f"retrain {self._job} is still running")
            self._job += 1
            self._state, self._report, self._rc, self._error = "running", None, None, None
            self._progress.clear()
            self._png.clear()
            self._started, self._finished = time.time(), None
            self._last_switch = None
            cmd = [sys.executable, "-m", "perceptd", "retrain", "-c", str(path), "--json"]
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            self._proc, job = proc, self._job
        log.info("event=console_retrain_started job=%d pid=%d", job, proc.pid)
        threading.Thread(target=self._run, args=(job, proc), name="console-retrain", daemon=True).start()
        return self.status()

    def _read_progress(self, stream: Any) -> None:
        buf = b""
        while chunk := stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096):
            buf += chunk
            *lines, buf = buf.replace(b"\r", b"\n").split(b"\n")
            for line in lines:
                if line.strip():
                    self._progress.append(line.decode("utf-8", "replace")[:300])
        if buf.strip():
            self._progress.append(buf.decode("utf-8", "replace")[:300])

    def _run(self, job: int, proc: subprocess.Popen[bytes]) -> None:
        reader = threading.Thread(target=self._read_progress, args=(proc.stderr,), daemon=True)
        reader.start()
        out = proc.stdout.read() if proc.stdout else b""
        rc = proc.wait()
        reader.join(5)
        report: dict[str, Any] | None = None
        error = None
        try:
            report = json.loads(out) if out.strip() else None
        except ValueError:
            error = "retrain printed no report"
        if report is None and error is None:
            error = (self._progress[-1] if self._progress else f"retrain exited with {rc}")
        png = self._read_png(report) if report else None
        with self._lock:
            if job != self._job:
                return
            self._rc, self._finished = rc, time.time()
            self._report = {k: report.get(k) for k in _REPORT_KEYS} if report else None
            if png is not None:
                self._png[job] = png
            self._state = "finished" if report is not None else "failed"
            self._error = error
            self._proc = None
        log.info("event=console_retrain_done job=%d rc=%d passed=%s", job, rc,
                 report.get("passed") if report else None)

    def _read_png(self, report: dict[str, Any]) -> bytes | None:
        """The report's PNG, only from inside the retrain folder (the child names the path)."""
        try:
            root = Path(self._config().samples.retrain.dir).resolve()
            png = Path(str((report.get("reports") or {}).get("png", ""))).resolve()
            if not png.is_relative_to(root) or png.suffix != ".png" or not png.is_file():
                return None
            if png.stat().st_size > MAX_PNG:
                return None
            return png.read_bytes()
        except (OSError, ValueError, AttributeError):
            return None

    def png(self, job: int) -> bytes | None:
        with self._lock:
            return self._png.get(job)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"state": self._state, "job": self._job, "started": self._started,
                    "finished": self._finished, "rc": self._rc, "error": self._error,
                    "progress": list(self._progress), "report": self._report,
                    "png": f"/api/retrain/{self._job}/gate.png" if self._job in self._png else None,
                    "last_switch": self._last_switch,
                    "available": self._config_path() is not None}

    # ------------------------------------------------------------------ promote / rollback

    def promote(self) -> dict[str, Any]:
        """`perceptd retrain --promote` for the last job's passed candidate."""
        from perceptd.daemon.reload import promote_and_reload

        with self._lock:
            report = self._report
            if self._state != "finished" or not report:
                raise RetrainRefused("no finished retrain to promote")
            if not report.get("passed"):
                raise RetrainRefused(f"the gate refused {report.get('bundle_version')}; nothing to promote")
            version = str(report["bundle_version"])
        return self._do_switch("promote", lambda cfg: promote_and_reload(cfg, version), version)

    def rollback(self) -> dict[str, Any]:
        """`perceptd rollback`: current -> previous, undone when the daemon refuses it."""
        from perceptd.daemon.bundle import rollback
        from perceptd.daemon.reload import switch_bundle

        return self._do_switch("rollback", lambda cfg: switch_bundle(cfg, rollback), None)

    def _do_switch(self, action: str, fn: Callable[[Any], dict[str, Any]], version: str | None
                   ) -> dict[str, Any]:
        if not self._switch.acquire(blocking=False):
            raise RetrainRefused("a promote or rollback is already in progress")
        try:
            try:
                result = fn(self._config())
            except Exception as exc:  # noqa: BLE001 - e.g. no previous bundle: say why
                result = {"daemon": "error", "detail": f"{type(exc).__name__}: {exc}"}
            result = {"action": action, "version": version, **result,
                      "ok": result.get("daemon") not in ("refused", "not_swapped", "lost", "error")
                      and not result.get("restored")}
            with self._lock:
                self._last_switch = result
                if action == "promote" and result["ok"] and self._report is not None:
                    self._report["promoted"] = True
            log.info("event=console_%s ok=%s daemon=%s current=%s", action, result["ok"],
                     result.get("daemon"), result.get("current"))
            return result
        finally:
            self._switch.release()

    def stop(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # our own child, by its handle
