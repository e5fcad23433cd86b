"""A real network camera stand-in: ffmpeg serving a photo or video on loopback.

UDP MPEG-TS (H.264) behaves like a typical IP camera pushing a stream; HTTP MJPEG like a
cheap webcam server (one client at a time: ffmpeg exits when the client disconnects, so a
test that reconnects calls ``restart()``). ffmpeg runs as a child of the test and is killed
and reaped by ``stop()``; every wait here has a deadline.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

StreamKind = Literal["udp", "http"]
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
_TCP_LISTEN = "0A"  # state code in /proc/net/tcp


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None


def free_port(kind: StreamKind) -> int:
    """A loopback port nobody uses right now (UDP for MPEG-TS, TCP for HTTP)."""
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tcp_listening(port: int) -> bool:
    """Is something listening on 127.0.0.1:port? Read from /proc so that probing does not
    consume ffmpeg's single HTTP client slot."""
    want = f"0100007F:{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == _TCP_LISTEN and (local == want or local.endswith(f":{port:04X}")):
                return True
    return False


def make_video(
    photo: Path | str,
    out: Path | str,
    seconds: float = 2.0,
    fps: int = 30,
    size: tuple[int, int] = (640, 480),
) -> Path:
    """Encode a still photo into a short H.264 MP4 (a 'file camera' for tests)."""
    out = Path(out)
    w, h = size
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-loop", "1", "-framerate", str(fps), "-i", str(photo), "-t", f"{seconds:.3f}",
        "-vf", f"scale={w}:{h},format=yuv420p", "-c:v", "libx264", "-preset", "ultrafast",
        "-g", str(fps), "-r", str(fps), str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if res.returncode != 0 or not out.exists():
        raise RuntimeError(f"ffmpeg could not make {out}: {res.stderr.strip()[-500:]}")
    return out


class FfmpegStream:
    """Serve ``media`` (a photo, looped forever, or a video, looped) at size/fps on loopback."""

    def __init__(
        self,
        media: Path | str,
        kind: StreamKind = "udp",
        size: tuple[int, int] = (640, 480),
        fps: int = 30,
        port: int | None = None,
        log_dir: Path | str | None = None,
    ) -> None:
        self.media = Path(media)
        if not self.media.exists():
            raise FileNotFoundError(f"no such media file: {self.media}")
        self.kind: StreamKind = kind
        self.size = size
        self.fps = fps
        self.port = port or free_port(kind)
        self._log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="ffstream-"))
        self.log_path = self._log_dir / f"ffmpeg-{kind}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        if self.kind == "udp":
            return f"udp://127.0.0.1:{self.port}"
        return f"http://127.0.0.1:{self.port}/cam.mjpg"

    def command(self) -> list[str]:
        w, h = self.size
        if self.media.suffix.lower() in PHOTO_SUFFIXES:
            source = ["-loop", "1", "-framerate", str(self.fps), "-re", "-i", str(self.media)]
        else:
            source = ["-re", "-stream_loop", "-1", "-i", str(self.media)]
        vf = ["-vf", f"scale={w}:{h},fps={self.fps}"]
        if self.kind == "udp":
            out = [
                "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
                "-g", str(self.fps), "-pix_fmt", "yuv420p",
                "-f", "mpegts", f"udp://127.0.0.1:{self.port}?pkt_size=1316",
            ]
        else:
            out = ["-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg", "-listen", "1", self.url]
        return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *source, *vf, *out]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, ready_timeout: float = 10.0) -> FfmpegStream:
        """Start serving; for HTTP, wait until ffmpeg listens (bounded)."""
        if self.running:
            return self
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        finally:
            log.close()
        self.starts += 1
        if self.kind == "http":
            deadline = time.monotonic() + ready_timeout
            while not tcp_listening(self.port):
                if not self.running:
                    raise RuntimeError(f"ffmpeg exited at start: {self.log_tail()}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"ffmpeg did not listen on {self.url} in {ready_timeout}s")
                time.sleep(0.02)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Kill ffmpeg (like a camera losing power) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def restart(self) -> FfmpegStream:
        self.stop()
        return self.start()

    def log_tail(self, n: int = 800) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> FfmpegStream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
