"""WAV replay source: a file played as if a microphone captured it (demo, tests, replay).

The whole file is decoded, mixed to mono and resampled to 16 kHz up front, so a bad file
fails at construction with one clear line rather than in the capture thread.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field

from perceptd.daemon.sources.base import (
    CHUNK_SAMPLES,
    SAMPLE_RATE,
    SOURCE_ID,
    AudioChunk,
    Sink,
    Source,
    SourceError,
    SourceState,
    StateCallback,
)

log = logging.getLogger(__name__)


class WavFileConfig(BaseModel):
    """Replay a sound file as 512-sample chunks at 16 kHz mono."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["wavfile"] = Field(default="wavfile", description="plugin tag")
    id: str = Field(default="wav0", pattern=SOURCE_ID, description="source id in events and metrics")
    path: Path = Field(description="WAV (or FLAC/OGG) file; any rate and channel count")
    loop: bool = Field(default=False, description="restart at the end instead of going down")
    realtime: bool = Field(
        default=True,
        description="pace chunks at 16 kHz real time; false: as fast as the queue accepts "
        "(use a 'block' queue to lose nothing)",
    )


def resample(pcm: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited (FFT) resampling: exact anti-aliasing without scipy in the daemon."""
    if rate_in == rate_out or len(pcm) == 0:
        return pcm.astype(np.float32, copy=False)
    n_out = max(1, round(len(pcm) * rate_out / rate_in))
    spec = np.fft.rfft(pcm.astype(np.float64))
    keep = min(len(spec), n_out // 2 + 1)
    out_spec = np.zeros(n_out // 2 + 1, dtype=np.complex128)
    out_spec[:keep] = spec[:keep]
    out = np.fft.irfft(out_spec, n_out) * (n_out / len(pcm))
    return out.astype(np.float32)


MIN_RATE, MAX_RATE = 1000, 384_000  # Hz: outside this a header is broken, not exotic
MAX_SECONDS = 3600.0  # decoded and resampled in memory: a bigger file is refused, not an OOM


def load_audio(path: Path | str, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a sound file to float32 mono at ``rate``; SourceError names the file on failure."""
    p = Path(path)
    try:
        info = sf.info(str(p))
        if not MIN_RATE <= info.samplerate <= MAX_RATE:
            raise SourceError(f"audio file {p}: sample rate {info.samplerate} Hz is outside "
                              f"{MIN_RATE}-{MAX_RATE} Hz")
        if info.frames / info.samplerate > MAX_SECONDS:
            raise SourceError(f"audio file {p}: {info.frames / info.samplerate:.0f} s is longer than "
                              f"{MAX_SECONDS:.0f} s")
        data, file_rate = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise SourceError(f"cannot read audio file {p}: {exc}") from None
    if data.shape[0] == 0:
        raise SourceError(f"audio file {p} holds no samples")
    if not np.isfinite(data).all():  # NaN would poison the VAD's recurrent state for good
        raise SourceError(f"audio file {p} holds NaN or infinite samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(mono, int(file_rate), rate)


class WavFileSource(Source):
    """Offers a file's audio as ``AudioChunk``s, paced in real time or as fast as accepted."""

    kind = "wavfile"

    def __init__(
        self,
        cfg: WavFileConfig,
        out: Sink,
        on_state: StateCallback | None = None,
    ) -> None:
        super().__init__(cfg.id, out, on_state)
        self.cfg = cfg
        pcm = load_audio(cfg.path)
        pad = (-len(pcm)) % CHUNK_SAMPLES  # the last partial chunk is completed with silence
        self.pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.float32)])
        self.duration_s = len(pcm) / SAMPLE_RATE

    @property
    def n_chunks(self) -> int:
        return len(self.pcm) // CHUNK_SAMPLES

    def _run(self) -> None:
        self._set_state(SourceState.UP, f"replaying {self.cfg.path.name}")
        chunk_ns = CHUNK_SAMPLES * 1_000_000_000 // SAMPLE_RATE
        t0 = time.monotonic_ns()
        played = 0  # chunks since t0, across loops: the schedule never drifts
        while not self._stop.is_set():
            for i in range(self.n_chunks):
                if self.cfg.realtime:
                    # the chunk is "captured" once its last sample has been played
                    due = t0 + (played + 1) * chunk_ns
                    if self._sleep((due - time.monotonic_ns()) / 1e9):
                        return
                elif self._stop.is_set():
                    return
                pcm = self.pcm[i * CHUNK_SAMPLES : (i + 1) * CHUNK_SAMPLES].copy()
                t_ns = time.monotonic_ns()
                chunk = AudioChunk(self.source_id, self._next_seq(t_ns), t_ns, pcm)
                if not self._offer(chunk, wait=not self.cfg.realtime) and self.out.closed:
                    self._set_state(SourceState.DOWN, "queue closed")
                    return
                played += 1
            if not self.cfg.loop:
                self._set_state(SourceState.DOWN, "end of file")
                return
