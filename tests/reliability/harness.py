"""Fault-injection harness: the real daemon on real inputs, and the figures every scenario reports.

A scenario injects one fault into a running `perceptd run` (ffmpeg cameras, a PulseAudio
microphone, the control socket, the bundle and config files) and measures, from the outside,
what a subscriber and the health topic see:

- time to detect: fault injected -> the health topic reports the source not `up`;
- time to recover: fault removed -> the first message from that source again;
- events lost / expected: counted against what the inputs should have produced (frames at the
  configured fps while the source was up, audio chunks at 16 kHz / 512, and one `command`
  verdict per "canary" command sent throughout every scenario);
- stayed up: same process, same `run_id`, control socket answering.

`PERCEPTD_FULL=1` (and `python -m tests.reliability.report`) runs the full repetition counts;
CI runs the short ones (`reps(ci, full)`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.rigs.daemon import Collector, DaemonProcess, daemon_config
from tests.rigs.ffmpeg_stream import FfmpegStream, free_port
from tests.rigs.pulse import PulseMic

REPO = Path(__file__).resolve().parents[2]
CAT = REPO / "samples" / "images" / "cat.jpg"
COFFEE = REPO / "samples" / "images" / "coffee.jpg"
CHUNKS_PER_S = 16_000 / 512
CAMERA_FPS = 10.0
N = TypeVar("N", int, float)


def full_mode() -> bool:
    return os.environ.get("PERCEPTD_FULL", "") == "1"


def reps(ci: N, full: N) -> N:
    """Repetitions of a scenario: short in CI, the issue's counts with PERCEPTD_FULL=1."""
    return full if full_mode() else ci


def now() -> float:
    return time.monotonic()


# --------------------------------------------------------------------------- results


@dataclass
class Result:
    """One scenario's figures, as tabulated in docs/reliability.md."""

    scenario: str
    repetitions: int = 1
    detect_s: list[float] = field(default_factory=list)
    recover_s: list[float] = field(default_factory=list)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # what -> (lost, expected)
    stayed_up: bool = True
    notes: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)  # scenario-specific numbers
    restart: bool = False  # a SIGKILL scenario: "stayed up" means every restart checked out

    def count(self, what: str, lost: int, expected: int) -> None:
        old = self.counts.get(what, (0, 0))
        self.counts[what] = (old[0] + max(0, lost), old[1] + expected)

    def lost_fraction(self, what: str) -> float:
        lost, expected = self.counts.get(what, (0, 0))
        return lost / expected if expected else 0.0

    @staticmethod
    def _span(values: list[float]) -> str:
        def fmt(v: float) -> str:
            return f"{v * 1000:.0f} ms" if v < 0.1 else f"{v:.2f} s"

        if not values:
            return "n/a"
        if len(values) == 1:
            return fmt(values[0])
        return f"{fmt(statistics.median(values))} (max {fmt(max(values))})"

    def row(self) -> dict[str, str]:
        lost = "; ".join(f"{what} {lo}/{ex}" for what, (lo, ex) in self.counts.items()) or "n/a"
        return {"scenario": self.scenario, "reps": str(self.repetitions),
                "detect": self._span(self.detect_s), "recover": self._span(self.recover_s),
                "lost": lost, "stayed_up": _up_text(self.stayed_up, self.restart),
                "notes": "; ".join(self.notes)}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _up_text(ok: bool, restart: bool) -> str:
    if restart:
        return "killed on purpose; restarts OK" if ok else "**restart check failed**"
    return "yes" if ok else "**no**"


# --------------------------------------------------------------------------- inputs


def copy_bundle(dst_root: Path) -> str:
    """A private copy of the repo's active bundle (never hard links: scenarios corrupt files)."""
    from perceptd.daemon.bundle import resolve_bundle, set_pointer

    src = resolve_bundle(REPO / "bundle", "current")
    dst_root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst_root / src.name, copy_function=shutil.copyfile)
    set_pointer(dst_root, "current", src.name)
    return src.name


def clone_version(root: Path, base: str, version: str, edit: Callable[[Path], None] | None = None,
                  rehash: bool = False) -> Path:
    """root/version = root/base with manifest version `version`; `edit` may damage files, and
    `rehash` rewrites their sha256 so the damage passes verification (a consistent but broken
    bundle, as a bad export would make)."""
    from perceptd.daemon.bundle import sha256_file

    dst = root / version
    shutil.copytree(root / base, dst, copy_function=os.link)  # edits must replace, never write through
    if edit is not None:
        edit(dst)
    mpath = dst / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["version"] = version
    if rehash:
        manifest["files"] = {rel: sha256_file(dst / rel) for rel in manifest["files"]}
        for entry in manifest["models"].values():
            if "sha256" in entry:
                entry["sha256"] = manifest["files"][entry["file"]]
    replace_file(mpath, json.dumps(manifest, indent=1).encode())
    return dst


def replace_file(path: Path, data: bytes) -> None:
    """Write a new inode and rename it over `path` (hard-linked copies stay untouched)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class CorruptingRelay:
    """A UDP relay between an ffmpeg sender and the daemon that damages a share of packets
    (flips 1-8 random bytes), like a lossy radio link or a faulty camera firmware."""

    def __init__(self, out_port: int, seed: int = 0) -> None:
        self.in_port = free_port("udp")
        self.out_port = out_port
        self.rate = 0.0
        self.packets = 0
        self.corrupted = 0
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._rx.bind(("127.0.0.1", self.in_port))
        self._rx.settimeout(0.2)
        self._tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"udp://127.0.0.1:{self.out_port}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = bytearray(self._rx.recv(65536))
            except TimeoutError:
                continue
            except OSError:
                return
            self.packets += 1
            if self.rate and self._rng.random() < self.rate:
                self.corrupted += 1
                for _ in range(self._rng.randint(1, 8)):
                    data[self._rng.randrange(len(data))] ^= self._rng.randrange(1, 256)
            with contextlib.suppress(OSError):
                self._tx.sendto(data, ("127.0.0.1", self.out_port))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._rx.close()
        self._tx.close()


@contextlib.contextmanager
def cpu_burners(n: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """n busy-looping processes (more than the cores) for the duration of the block."""
    procs = [subprocess.Popen(["python3", "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(5)


def can_mount() -> bool:
    """Bind mounts and tmpfs need root with CAP_SYS_ADMIN (true in our containers, maybe not in CI)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path(f"/tmp/perceptd-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True, timeout=10).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], capture_output=True, timeout=10)
        return ok
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[str]:
    """Make `path` read-only for everyone, root included (root ignores chmod): a read-only bind
    mount over itself. Callers check `can_mount()` first."""
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True, timeout=10)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True, timeout=10)
        yield "read-only bind mount"
    finally:
        for _ in range(20):  # busy while the daemon still reads a file there: retry, then detach
            if subprocess.run(["umount", str(path)], capture_output=True, timeout=10).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(path)], check=False, timeout=10)


# --------------------------------------------------------------------------- the rig


class Canary:
    """A text command every `period_s`, all scenario long: each must come back as exactly one
    `command` verdict on the events socket, whatever fault is being injected elsewhere."""

    def __init__(self, daemon: DaemonProcess, period_s: float = 0.5) -> None:
        self.daemon = daemon
        self.period_s = period_s
        self.sent: list[tuple[str, float]] = []  # (text, t_sent)
        self.refused: list[tuple[str, float]] = []  # (why, t_sent): no reply or an error reply
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Canary:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="canary", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        i = len(self.sent)
        while not self._stop.wait(self.period_s):
            text = f"turn on the lights canary {i}"
            i += 1
            t = now()
            try:
                reply = self.daemon.request({"type": "command", "text": text}, timeout=5.0)
            except Exception as exc:  # noqa: BLE001 - a missed reply is a finding, not a crash
                self.refused.append((f"{text}: {exc}", t))
                continue
            if reply.get("ok"):
                self.sent.append((text, t))
            else:
                self.refused.append((f"{text}: {reply.get('error')}", t))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def lost(self, collector: Collector, since: float, until: float,
             settle_s: float = 3.0) -> tuple[int, int]:
        """(lost, expected) for canaries sent in [since, until): unanswered, refused, or
        accepted without their verdict on the `command` topic."""
        wanted = [t for t, ts in self.sent if since <= ts < until]
        refused = [r for r, ts in self.refused if since <= ts < until]
        deadline = now() + settle_s
        while True:
            seen = {m["text"] for m in collector.snapshot(lambda m: m["topic"] == "command")}
            missing = [t for t in wanted if t not in seen]
            if not missing or now() > deadline:
                return len(missing) + len(refused), len(wanted) + len(refused)
            time.sleep(0.1)


class Rig:
    """One daemon with its inputs; scenarios use its helpers to inject and to measure."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.streams: dict[str, FfmpegStream] = {}
        self.relays: dict[str, CorruptingRelay] = {}
        self.cameras: list[dict[str, Any]] = []
        self.mic: PulseMic | None = None
        self.bundle_root = tmp / "bundle"
        self.bundle_version = ""
        self.daemon: DaemonProcess | None = None
        self.collector: Collector | None = None
        self.canaries: list[Canary] = []  # one per daemon start
        self.config_path: Path | None = None
        self.run_id = ""
        self.pid = 0

    # -- inputs ------------------------------------------------------------------------
    def camera_cfg(self, cid: str, uri: str, **kw: Any) -> dict[str, Any]:
        cfg = {"id": cid, "uri": uri, "fps": CAMERA_FPS, "read_timeout_s": 1.0, "open_timeout_s": 5.0,
               "backoff_initial_s": 0.2, "backoff_max_s": 1.0, "width": 320, "height": 240, **kw}
        self.cameras.append(cfg)
        return cfg

    def add_udp_camera(self, cid: str, media: Path = CAT, relay: bool = False) -> FfmpegStream:
        if relay:
            r = CorruptingRelay(free_port("udp"))
            self.relays[cid] = r
            stream = FfmpegStream(media, kind="udp", size=(320, 240), fps=int(CAMERA_FPS),
                                  port=r.in_port, log_dir=self.tmp)
            uri = r.url
        else:
            stream = FfmpegStream(media, kind="udp", size=(320, 240), fps=int(CAMERA_FPS),
                                  log_dir=self.tmp)
            uri = stream.url
        self.streams[cid] = stream.start()
        self.camera_cfg(cid, uri)
        return stream

    def add_mic(self) -> PulseMic:
        (self.tmp / "pulse").mkdir(exist_ok=True)
        self.mic = PulseMic(self.tmp / "pulse").start()
        return self.mic

    # -- the daemon --------------------------------------------------------------------
    def write_config(self, **sections: Any) -> Path:
        if not self.bundle_version:
            self.bundle_version = copy_bundle(self.bundle_root)
        sources: dict[str, Any] = {"cameras": self.cameras}
        if self.mic is not None:
            sources["microphone"] = {"id": "mic0", "device": "pulse", "stall_timeout_s": 1.0,
                                     "backoff_initial_s": 0.2, "backoff_max_s": 1.0}
        bundle = {"dir": str(self.bundle_root), "version": "current"}
        self.config_path = daemon_config(self.tmp, sources=sources, bundle=bundle, **sections)
        return self.config_path

    def start(self, timeout: float = 120.0) -> dict[str, Any]:
        assert self.config_path is not None, "write_config first"
        env = self.mic.env if self.mic is not None else None
        self.daemon = DaemonProcess(self.config_path, env=env)
        if self.collector is None:
            self.collector = Collector(self.daemon.events_endpoint)
        status = self.daemon.wait_ready(timeout)
        deadline = now() + 30  # READY=1 comes after /healthz listens; the control socket before
        while self.healthz()[0] == 0 and now() < deadline:
            time.sleep(0.1)
        self.run_id = status["run_id"]
        self.pid = self.daemon.proc.pid
        self.canaries.append(Canary(self.daemon).start())
        return status

    @property
    def canary(self) -> Canary | None:
        return self.canaries[-1] if self.canaries else None

    def canary_lost(self, since: float, until: float) -> tuple[int, int]:
        """(lost, expected) over every daemon start's canary."""
        assert self.collector is not None
        per = [c.lost(self.collector, since, until) for c in self.canaries]
        return sum(p[0] for p in per), sum(p[1] for p in per)

    def restart_collector(self) -> None:
        if self.collector is not None:
            self.collector.close()
        assert self.daemon is not None
        self.collector = Collector(self.daemon.events_endpoint)

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        assert self.daemon is not None
        return self.daemon.request({"type": "status"}, timeout=timeout)

    def stayed_up(self) -> bool:
        """Same process, same run_id, and the control socket answers."""
        if self.daemon is None or self.daemon.proc.poll() is not None or self.daemon.proc.pid != self.pid:
            return False
        try:
            return self.status()["run_id"] == self.run_id
        except Exception:  # noqa: BLE001
            return False

    def healthz(self) -> tuple[int, dict[str, Any]]:
        """GET /healthz: (HTTP status, body); (0, {}) when nothing answers."""
        assert self.daemon is not None
        url = getattr(self.daemon, "http_endpoint", "") + "/healthz"
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")
        except (OSError, ValueError):
            return 0, {}

    def wait_healthz(self, code: int, since: float, timeout: float) -> float:
        """Seconds from `since` until /healthz answers `code` (200 healthy, 503 not)."""
        deadline = now() + timeout
        while now() < deadline:
            if self.healthz()[0] == code:
                return now() - since
            time.sleep(0.1)
        raise TimeoutError(f"/healthz did not answer {code} within {timeout} s (last {self.healthz()})")

    def close(self) -> None:
        for c in self.canaries:
            c.stop()
        if self.daemon is not None:
            self.daemon.kill()
        if self.collector is not None:
            self.collector.close()
        for s in self.streams.values():
            s.stop()
        for r in self.relays.values():
            r.close()
        if self.mic is not None:
            self.mic.close()

    # -- what a subscriber sees --------------------------------------------------------
    def wait_source(self, source: str, up: bool, since: float, timeout: float) -> float:
        """Seconds from `since` until a health message shows `source` up (or not up)."""
        assert self.collector is not None

        def pred(m: dict[str, Any]) -> bool:
            st = m.get("sources", {}).get(source, {}).get("state")
            return m["topic"] == "health" and st is not None and (st == "up") == up

        return self.collector.wait_for(pred, timeout, since)["_t_recv"] - since

    def wait_data(self, topic: str, source: str, since: float, timeout: float) -> float:
        """Seconds from `since` to the first `topic` message from `source` captured after it."""
        assert self.collector is not None
        since_ns = int(since * 1e9)
        m = self.collector.wait_for(lambda m: m["topic"] == topic and m.get("source") == source
                                    and m["t_capture_ns"] >= since_ns, timeout, since)
        return m["t_capture_ns"] / 1e9 - since

    def frames(self, source: str, t0: float, t1: float) -> int:
        """Vision messages from `source` whose frames were captured in [t0, t1)."""
        assert self.collector is not None
        a, b = int(t0 * 1e9), int(t1 * 1e9)
        return len(self.collector.snapshot(lambda m: m["topic"] == "vision" and m.get("source") == source
                                           and a <= m["t_capture_ns"] < b))

    def count_frames(self, res: Result, source: str, windows: list[tuple[float, float]],
                     fps: float = CAMERA_FPS) -> None:
        """Frames lost while the source was up (the windows), against fps x time."""
        for t0, t1 in windows:
            expected = int((t1 - t0) * fps)
            res.count("frames", expected - self.frames(source, t0, t1), expected)

    def seq_gaps(self) -> int:
        """Messages missing between consecutive seqs of one run (the publisher never skips)."""
        assert self.collector is not None
        gaps = 0
        last: dict[str, int] = {}
        for m in self.collector.snapshot():
            prev = last.get(m["run_id"])
            if prev is not None and m["seq"] != prev + 1:
                gaps += max(0, m["seq"] - prev - 1)
            last[m["run_id"]] = m["seq"]
        return gaps


def sigstop(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGSTOP)


def sigcont(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGCONT)


def make_fake_bundles(tmp: Path) -> tuple[Path, str, str]:
    """Two tiny bundles (a manifest and one small file each) for pointer tests: promote
    verifies whole bundles, and tiny ones make a SIGKILL likely to land mid-swap."""
    from perceptd.daemon.bundle import set_pointer, sha256_file

    root = tmp / "fake-bundles"
    names = ("va", "vb")
    for name in names:
        d = root / name
        d.mkdir(parents=True)
        (d / "weights.bin").write_bytes(os.urandom(4096))
        manifest = {"version": name, "models": {}, "files": {"weights.bin": sha256_file(d / "weights.bin")}}
        (d / "manifest.json").write_text(json.dumps(manifest))
    set_pointer(root, "current", names[0])
    return root, names[0], names[1]
