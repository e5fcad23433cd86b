"""Microphone source: a PortAudio input stream (sounddevice) in callback mode.

The callback only copies 512 samples, stamps them and offers them to the queue (never
waits). The source's own thread watches the stream: PortAudio reports a vanished device
(PulseAudio killed, USB mic unplugged) not through a status flag but by ending the stream
(``finished_callback`` fires, ``stream.active`` turns False); a stream that stops calling
back for ``stall_timeout_s`` counts as vanished too. The source then reopens with backoff;
when an open fails, PortAudio's device list is refreshed (``sd._terminate(); sd._initialize()``)
before the next try, because a device that came back is only listed after a re-scan.
That re-scan resets PortAudio for the whole process: any other open stream ends and, if it
belongs to another MicrophoneSource, reopens itself the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import ConfigDict, Field

from perceptd.daemon.sources.base import (
    CHUNK_SAMPLES,
    SAMPLE_RATE,
    SOURCE_ID,
    AudioChunk,
    Backoff,
    ReconnectConfig,
    Sink,
    Source,
    SourceState,
    StateCallback,
)

if TYPE_CHECKING:
    import sounddevice as sd

log = logging.getLogger(__name__)

# The host's reported input latency is trusted only within this bound (ns): some ALSA
# plugins report nonsense, and a wrong stamp is worse than the callback time.
_MAX_ADC_DELAY_NS = 500_000_000


class MicrophoneConfig(ReconnectConfig):
    """One microphone, read at 16 kHz mono in 512-sample blocks (the audio models' format)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["microphone"] = Field(default="microphone", description="plugin tag")
    id: str = Field(default="mic0", pattern=SOURCE_ID, description="source id in events and metrics")
    device: str | int | None = Field(
        default=None,
        description="PortAudio device name (substring, e.g. 'pulse') or index; "
        "null: the default input",
    )
    sample_rate: int = Field(
        default=SAMPLE_RATE,
        ge=SAMPLE_RATE,
        le=SAMPLE_RATE,
        description="fixed at 16000: use a device that resamples ('pulse', 'default', plughw)",
    )
    block: int = Field(
        default=CHUNK_SAMPLES, ge=CHUNK_SAMPLES, le=CHUNK_SAMPLES, description="fixed at 512 (32 ms)"
    )
    ring_seconds: float = Field(
        default=10.0, ge=0, le=600, description="recent audio kept for pre-roll (MicrophoneSource.recent)"
    )
    open_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="time allowed from opening to the first callback (ALSA's pulse device "
        "takes 1.3-2 s after PortAudio is initialised)",
    )
    stall_timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="a running stream without a callback for this long is lost"
    )
    use_adc_time: bool = Field(
        default=True,
        description="stamp chunks with the host-reported capture time of their last sample "
        "(bounded to 0.5 s before the callback) instead of the callback time",
    )


class AudioRing:
    """The most recent audio, for pre-roll (e.g. speech that began before VAD fired)."""

    def __init__(self, capacity: int) -> None:
        self._buf = np.zeros(max(capacity, 0), dtype=np.float32)
        self._written = 0
        self._lock = threading.Lock()

    def write(self, pcm: np.ndarray) -> None:
        n, cap = len(pcm), len(self._buf)
        if cap == 0:
            return
        with self._lock:
            if n >= cap:
                self._buf[:] = pcm[-cap:]
            else:
                start = self._written % cap
                end = min(start + n, cap)
                self._buf[start:end] = pcm[: end - start]
                self._buf[: n - (end - start)] = pcm[end - start :]
            self._written += n

    def latest(self, n: int) -> np.ndarray:
        """The last ``n`` samples (fewer if not yet captured), oldest first."""
        cap = len(self._buf)
        with self._lock:
            n = min(n, cap, self._written)
            if n <= 0:
                return np.zeros(0, dtype=np.float32)
            end = self._written % cap
            idx = np.arange(end - n, end) % cap
            return self._buf[idx].copy()


def _sounddevice() -> ModuleType:
    """Imported on first use: importing sounddevice initialises PortAudio (and fails without
    libportaudio), which config validation and camera-only daemons should not pay for."""
    import sounddevice

    return sounddevice


def refresh_portaudio() -> None:
    """Re-scan devices (a device that appeared after start is listed only after this)."""
    sd = _sounddevice()
    try:
        sd._terminate()
    except sd.PortAudioError:
        pass
    sd._initialize()


class MicrophoneSource(Source):
    """Captures one microphone and offers ``AudioChunk``s to ``out`` (never waits)."""

    kind = "microphone"

    def __init__(
        self,
        cfg: MicrophoneConfig,
        out: Sink,
        on_state: StateCallback | None = None,
    ) -> None:
        super().__init__(cfg.id, out, on_state)
        self.cfg = cfg
        self._ring = AudioRing(int(cfg.ring_seconds * cfg.sample_rate))
        self._finished = threading.Event()
        self._last_cb_ns = 0
        self._last_stamp_ns = 0

    def recent(self, seconds: float) -> np.ndarray:
        """The last ``seconds`` of captured audio (float32, 16 kHz), oldest first."""
        return self._ring.latest(int(seconds * self.cfg.sample_rate))

    # -- PortAudio thread ----------------------------------------------------------------
    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        now_ns = time.monotonic_ns()
        if status.input_overflow:
            self._count("overflows")
        pcm = indata[:, 0].copy()
        t_ns = now_ns
        if self.cfg.use_adc_time:
            last_adc = time_info.inputBufferAdcTime + (frames - 1) / self.cfg.sample_rate
            delay_ns = int((time_info.currentTime - last_adc) * 1e9)
            if 0 <= delay_ns <= _MAX_ADC_DELAY_NS:
                t_ns = now_ns - delay_ns
        t_ns = max(t_ns, self._last_stamp_ns + 1)  # a jittery host delay must not go backwards
        self._last_stamp_ns = t_ns
        self._ring.write(pcm)
        self._offer(AudioChunk(self.source_id, self._next_seq(t_ns), t_ns, pcm))
        self._last_cb_ns = now_ns

    # -- the source thread ---------------------------------------------------------------
    def _open(self) -> sd.InputStream:
        self._finished.clear()
        self._last_cb_ns = 0
        stream = _sounddevice().InputStream(
            device=self.cfg.device,
            samplerate=self.cfg.sample_rate,
            channels=1,
            dtype="float32",
            blocksize=self.cfg.block,
            callback=self._callback,
            finished_callback=self._finished.set,
        )
        try:
            stream.start()
        except Exception:
            _close(stream)
            raise
        return stream

    def _run(self) -> None:
        try:
            sd = _sounddevice()
        except OSError as exc:  # no libportaudio: this source is down, the daemon is not
            self._error(f"sounddevice unavailable: {exc}")
            self._set_state(SourceState.DOWN, "sounddevice unavailable")
            return
        backoff = Backoff(self.cfg.backoff_initial_s, self.cfg.backoff_max_s, jitter=0.1)
        refresh = False
        while not self._stop.is_set():
            try:
                if refresh:
                    refresh_portaudio()
                stream = self._open()
            except (sd.PortAudioError, ValueError) as exc:
                self._error(f"open {self.cfg.device!r}: {exc}", "open_failures")
                self._fail("open failed", self.cfg.down_after_failures)
                refresh = True
                if self._sleep(backoff.next()):
                    return
                continue
            try:
                reason = self._watch(stream, backoff)
            finally:
                _close(stream)
            if reason is None:
                return
            self._error(f"device {self.cfg.device!r}: {reason}", "read_errors")
            self._fail(reason, self.cfg.down_after_failures)
            refresh = False  # the device list is still valid; re-scan only if opening fails
            if self._sleep(backoff.next()):
                return

    def _watch(self, stream: sd.InputStream, backoff: Backoff) -> str | None:
        """Poll the open stream; the reason it was lost, or None when stopping."""
        t_open = time.monotonic_ns()
        open_ns = int(self.cfg.open_timeout_s * 1e9)
        stall_ns = int(self.cfg.stall_timeout_s * 1e9)
        up = False
        woke = resumed = t_open  # `resumed`: when this process last came back from a pause
        while not self._stop.wait(0.05):
            if self._finished.is_set() or not stream.active:
                return "stream finished (device gone)"
            last = self._last_cb_ns
            if last and not up:
                up = True
                self._mark_up(backoff, "audio arriving")
            now = time.monotonic_ns()
            if now - woke > stall_ns:  # this thread did not run either (SIGSTOP, VM pause, swap):
                resumed = now  # the device gets a full stall window to deliver what it buffered
            woke = now
            if not last and now - max(t_open, resumed) > open_ns:
                return "no audio after opening"
            if last and now - max(last, resumed) > stall_ns:
                return "audio callbacks stopped"
        return None


def _close(stream: sd.InputStream) -> None:
    try:
        stream.abort(ignore_errors=True)
        stream.close(ignore_errors=True)
    except _sounddevice().PortAudioError as exc:  # already gone with its host: nothing left to free
        log.debug("event=stream_close_failed error=%r", exc)
