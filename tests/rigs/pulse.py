"""A real microphone stand-in: a private PulseAudio with a virtual microphone.

PulseAudio runs in the foreground as a child of the test (a daemonised one lingers as a
zombie here and blocks a restart) with its own XDG_RUNTIME_DIR. A null sink ``vsink``
(16 kHz mono) is what ``play()`` speaks into; ``vmic`` remaps its monitor as a capture
source and is the default source, so sounddevice's ALSA ``pulse`` device hears whatever is
played. A ``pacat < /dev/zero`` keeper holds the sink running: without it the first capture
callback comes 1.5-2 s late and that audio is lost.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

RATE = 16_000
TOOLS = ("pulseaudio", "pactl", "pacat", "paplay")


def pulse_unavailable_reason() -> str | None:
    """None when the rig can run, else why not (for pytest.skip)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"PulseAudio rig needs {', '.join(missing)} (apt-get install pulseaudio " \
            "pulseaudio-utils libasound2-plugins)"
    return None


class PulseMic:
    """A private PulseAudio server with sink ``vsink`` and virtual microphone ``vmic``."""

    sink = "vsink"
    source = "vmic"
    device = "pulse"  # the sounddevice/PortAudio (ALSA plugin) device name that reaches it

    def __init__(self, runtime_dir: Path | str | None = None) -> None:
        self._own_dir = runtime_dir is None
        self.runtime_dir = Path(runtime_dir or tempfile.mkdtemp(prefix="pulse-rig-"))
        self.runtime_dir.chmod(0o700)
        self.log_path = self.runtime_dir / "pulseaudio.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.keeper: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def env(self) -> dict[str, str]:
        """What a client process (or this one, for sounddevice) needs to reach the server."""
        return {
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "PULSE_SERVER": f"unix:{self.runtime_dir / 'pulse' / 'native'}",
        }

    def _child_env(self) -> dict[str, str]:
        # HOME too: PulseAudio writes ~/.config/pulse; keep that in the private dir
        return {**os.environ, **self.env, "HOME": str(self.runtime_dir)}

    def _pactl(self, *args: str, timeout: float = 5.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pactl", *args], env=self._child_env(), capture_output=True, text=True,
            timeout=timeout, check=False,
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> PulseMic:
        """Start the server, wait until it answers, set defaults, start the sink keeper."""
        reason = pulse_unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        if self.running:
            return self
        cmd = [
            "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--system=false",
            "--disallow-exit", "--use-pid-file=no",
            "--load=module-native-protocol-unix auth-anonymous=1",
            f"--load=module-null-sink sink_name={self.sink} rate={RATE} channels=1",
            f"--load=module-remap-source source_name={self.source} master={self.sink}.monitor",
            "--load=module-always-sink",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=self._child_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while self._pactl("info", timeout=2.0).returncode != 0:
            if not self.running:
                raise RuntimeError(f"pulseaudio exited at start: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"pulseaudio did not answer in {timeout}s: {self.log_tail()}")
            time.sleep(0.05)
        for args in (("set-default-sink", self.sink), ("set-default-source", self.source)):
            res = self._pactl(*args)
            if res.returncode != 0:
                raise RuntimeError(f"pactl {' '.join(args)} failed: {res.stderr.strip()}")
        with open("/dev/zero", "rb") as zeros:  # endless silence keeps the sink running
            self.keeper = subprocess.Popen(
                ["pacat", "--raw", f"--rate={RATE}", "--channels=1", "--format=s16le",
                 "-d", self.sink],
                env=self._child_env(), stdin=zeros,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        return self

    def play(
        self, wav: Path | str, block: bool = True, timeout: float = 30.0
    ) -> subprocess.Popen[bytes] | None:
        """'Speak' a WAV into the virtual microphone (paplay -d vsink)."""
        proc = subprocess.Popen(
            ["paplay", "-d", self.sink, str(wav)], env=self._child_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        if not block:
            return proc
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=5)
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"paplay {wav} failed: {err.decode(errors='replace').strip()}")
        return None

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL the keeper and the server and reap them (the microphone 'vanishes')."""
        for attr in ("keeper", "proc"):
            proc: subprocess.Popen[bytes] | None = getattr(self, attr)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            setattr(self, attr, None)

    def restart(self, timeout: float = 10.0) -> PulseMic:
        self.kill()
        return self.start(timeout)

    def close(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def log_tail(self, n: int = 800) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> PulseMic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
