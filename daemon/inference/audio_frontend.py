"""YAMNet's log-mel front end in numpy, offline and streaming.

The recipe is YAMNet's own (``features.py`` of the TF model, RECIPES.md 2b): periodic Hann
window of 400 samples, hop 160, 512-point rfft magnitude, 64 HTK-mel bands 125-7500 Hz from TF's
``linear_to_mel_weight_matrix`` (which drops the DC bin), ``log(mel + 0.001)``, then patches of
96 frames (0.96 s) every 48 frames (0.48 s).  Kept in numpy so the daemon needs no torch and the
graph stays a pure encoder that takes patches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MelParams:
    """Front-end constants; the bundle manifest's ``preprocessing`` dict carries the same keys."""

    sample_rate: int = 16000
    window_samples: int = 400
    hop_samples: int = 160
    fft_size: int = 512
    mel_bins: int = 64
    fmin_hz: float = 125.0
    fmax_hz: float = 7500.0
    log_offset: float = 0.001
    patch_frames: int = 96
    patch_hop_frames: int = 48

    @classmethod
    def from_preprocessing(cls, pre: Mapping[str, Any]) -> MelParams:
        """Build from a manifest ``preprocessing`` dict, ignoring keys that are not ours."""
        known = cls.__dataclass_fields__
        return cls(**{k: type(getattr(cls, k))(v) for k, v in pre.items() if k in known})

    def to_preprocessing(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


DEFAULT_PARAMS = MelParams()


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale as TF uses it: 1127 * ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_matrix(p: MelParams = DEFAULT_PARAMS) -> np.ndarray:
    """TF's linear_to_mel_weight_matrix: [fft_size // 2 + 1, mel_bins] float32, DC row zero."""
    n_bins = p.fft_size // 2 + 1
    freqs = np.linspace(0.0, p.sample_rate / 2.0, n_bins)[1:]
    spec_mel = hz_to_mel(freqs)[:, None]
    edges = np.linspace(hz_to_mel(p.fmin_hz), hz_to_mel(p.fmax_hz), p.mel_bins + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (spec_mel - lower) / (center - lower)
    down = (upper - spec_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(up, down))
    return np.vstack([np.zeros((1, p.mel_bins)), weights]).astype(np.float32)


def periodic_hann(n: int) -> np.ndarray:
    """Periodic Hann window (tf.signal.hann_window default, scipy ``fftbins=True``)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


@dataclass(frozen=True)
class LogMel:
    """A reusable front end: precomputed window and mel matrix (build once per stream/model)."""

    params: MelParams = field(default_factory=MelParams)
    window: np.ndarray = field(init=False, repr=False)
    mel: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", periodic_hann(self.params.window_samples))
        object.__setattr__(self, "mel", mel_matrix(self.params))

    def __call__(self, pcm: np.ndarray) -> np.ndarray:
        """float32 PCM at ``sample_rate`` -> [frames, mel_bins] log-mel (no padding: TF's
        ``pad_end=False``; frames = 1 + (len - window) // hop, 0 if shorter than a window)."""
        p = self.params
        x = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if x.size < p.window_samples:
            return np.zeros((0, p.mel_bins), np.float32)
        frames = np.lib.stride_tricks.sliding_window_view(x, p.window_samples)[:: p.hop_samples]
        spec = np.abs(np.fft.rfft(frames * self.window, n=p.fft_size, axis=-1))
        return np.log(spec.astype(np.float32) @ self.mel + np.float32(p.log_offset))


def log_mel(pcm_f32_16k: np.ndarray, params: MelParams = DEFAULT_PARAMS) -> np.ndarray:
    """One-shot log-mel of a whole signal (see :class:`LogMel`)."""
    return LogMel(params)(pcm_f32_16k)


def patches(logmel: np.ndarray, hop: int = 48, frames: int = 96) -> np.ndarray:
    """[T, 64] log-mel -> [N, frames, 64] patches every ``hop`` frames (no end padding)."""
    t = logmel.shape[0]
    if t < frames:
        return np.zeros((0, frames, logmel.shape[1]), np.float32)
    view = np.lib.stride_tricks.sliding_window_view(logmel, frames, axis=0)[::hop]
    return np.ascontiguousarray(view.transpose(0, 2, 1), dtype=np.float32)


class PatchStreamer:
    """Turns a stream of PCM chunks (e.g. 512 samples) into YAMNet patches as they complete.

    The first patch is ready after 0.975 s of audio (96 frames), then one every 0.48 s.  The
    output equals ``patches(log_mel(whole_signal))`` exactly: frames are computed once, on the
    samples that complete them, and only the unconsumed tail of samples/frames is kept.
    """

    def __init__(self, params: MelParams = DEFAULT_PARAMS) -> None:
        self._fe = LogMel(params)
        self._p = params
        self._pcm = np.zeros(0, np.float32)  # samples from the next frame's start on
        self._frames = np.zeros((0, params.mel_bins), np.float32)  # from the next patch's start
        self._patch_index = 0

    @property
    def patch_hop_samples(self) -> int:
        return self._p.patch_hop_frames * self._p.hop_samples

    @property
    def patch_span_samples(self) -> int:
        """Samples covered by one patch (15,600 = 0.975 s at the defaults)."""
        return (self._p.patch_frames - 1) * self._p.hop_samples + self._p.window_samples

    def push(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add samples; return (patches [n, 96, 64], start sample of each patch [n] int64)."""
        p = self._p
        self._pcm = np.concatenate([self._pcm, np.asarray(chunk, np.float32).reshape(-1)])
        if self._pcm.size >= p.window_samples:
            n_new = 1 + (self._pcm.size - p.window_samples) // p.hop_samples
            used = (n_new - 1) * p.hop_samples + p.window_samples
            self._frames = np.concatenate([self._frames, self._fe(self._pcm[:used])])
            self._pcm = self._pcm[n_new * p.hop_samples :]
        n = max(0, 1 + (len(self._frames) - p.patch_frames) // p.patch_hop_frames)
        out = patches(self._frames, p.patch_hop_frames, p.patch_frames)[:n]
        self._frames = self._frames[n * p.patch_hop_frames :]
        starts = (self._patch_index + np.arange(n, dtype=np.int64)) * self.patch_hop_samples
        self._patch_index += n
        return out, starts

    def reset(self) -> None:
        """Forget buffered audio (e.g. after a gap in the source)."""
        self._pcm = np.zeros(0, np.float32)
        self._frames = np.zeros((0, self._p.mel_bins), np.float32)
        self._patch_index = 0
