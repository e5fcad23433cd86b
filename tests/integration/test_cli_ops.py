"""The rough edges a new operator hit with the client commands (issue 18): `perceptd tail` with
no daemon says so at once (or waits with `--wait`), `tail`/`status` into a closed pipe end
quietly, and `perceptd status` shows the time to a source's first frame.  Real daemon, real
ZeroMQ, real pipes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.rigs.daemon import DaemonProcess, daemon_config, free_tcp_port

REPO = Path(__file__).resolve().parents[2]
CAT = REPO / "samples" / "images" / "cat.jpg"
PERCEPTD = [sys.executable, "-m", "perceptd"]


def test_tail_without_a_daemon_fails_at_once_or_waits(tmp_path: Path) -> None:
    cfg = daemon_config(tmp_path, sources={"cameras": [{"id": "camera0", "uri": str(CAT), "fps": 2,
                                                        "loop": True}]},
                        samples={"enabled": False}, speech={"enabled": False})
    t0 = time.monotonic()
    r = subprocess.run([*PERCEPTD, "tail", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - t0
    print(f"tail without a daemon returned in {elapsed:.2f} s: {r.stderr.strip()}")
    assert r.returncode == 1 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert "nothing is publishing at tcp://127.0.0.1:" in r.stderr and "--wait" in r.stderr
    assert elapsed < 10  # interpreter start included; the check itself takes about 1 s

    # --wait: says so, then prints what the daemon publishes once it is up; `| head` ends it quietly
    tail = subprocess.Popen([*PERCEPTD, "tail", "-c", str(cfg), "--wait", "health"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    daemon = None
    try:
        deadline = time.monotonic() + 30
        first = tail.stderr.readline()
        assert "nothing is publishing" in first and "waiting" in first and time.monotonic() < deadline
        time.sleep(1.0)
        assert tail.poll() is None  # still waiting
        daemon = DaemonProcess(cfg)
        line = tail.stdout.readline()  # the first health message, once the daemon runs
        assert line.strip(), "tail --wait printed nothing"
        tail.stdout.close()  # the reader goes away, like `| head -n 1`
        rc = tail.wait(15)
        err = tail.stderr.read()
        assert rc == 0 and err == "", (rc, err)
        daemon.wait_ready(120)

        # status into a closed pipe: no BrokenPipeError either
        p = subprocess.Popen([*PERCEPTD, "status", "-c", str(cfg)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        p.stdout.close()
        assert p.wait(30) in (0, 1) and p.stderr.read() == ""

        # status shows the time to the first frame of each source
        deadline = time.monotonic() + 30
        while True:
            out = subprocess.run([*PERCEPTD, "status", "-c", str(cfg)], capture_output=True, text=True,
                                 timeout=30)
            if "first frame after" in out.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "first frame after" in out.stdout, out.stdout
        st = daemon.request({"type": "status"})["sources"]["camera0"]
        assert st["first_capture_after_s"] is not None and st["first_capture_after_s"] < 30
        assert st["last_error"] is None
        assert daemon.terminate(timeout=15) == 0
    finally:
        if tail.poll() is None:
            tail.kill()
        if daemon is not None:
            daemon.kill()


def test_tail_into_head_ends_quietly(tmp_path: Path) -> None:
    """The shell pipeline itself: `perceptd tail --endpoint E --wait | head -n 2`."""
    port = free_tcp_port()
    cfg = daemon_config(tmp_path, sources={"cameras": [{"id": "camera0", "uri": str(CAT), "fps": 2,
                                                        "loop": True}]},
                        publish={"endpoint": f"tcp://127.0.0.1:{port}"},
                        samples={"enabled": False}, speech={"enabled": False})
    daemon = DaemonProcess(cfg)
    try:
        daemon.wait_ready(120)
        cmd = (f"{sys.executable} -m perceptd tail --endpoint tcp://127.0.0.1:{port} vision "
               f"| head -n 2; echo \"rc=${{PIPESTATUS[0]}}\"")
        r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines = r.stdout.strip().splitlines()
        assert len(lines) == 3 and lines[-1] == "rc=0", r.stdout
        assert r.stderr == "", r.stderr
        assert daemon.terminate(timeout=15) == 0
    finally:
        daemon.kill()
