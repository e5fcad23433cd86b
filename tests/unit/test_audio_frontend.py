"""YAMNet log-mel front end against independent references (scipy, the HTK formula)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import fft as sfft
from scipy import signal

from perceptd.daemon.inference.audio_frontend import (
    MelParams,
    PatchStreamer,
    log_mel,
    mel_matrix,
    patches,
)

SR = 16000


def _read(path: Path) -> np.ndarray:
    pcm, sr = sf.read(str(path), dtype="float32")
    assert sr == SR
    return pcm


def _reference_mel(
    n_fft: int = 512, n_mels: int = 64, fmin: float = 125.0, fmax: float = 7500.0
) -> np.ndarray:
    """Triangles written out band by band from the HTK formula, one FFT bin at a time."""

    def mel(f: float) -> float:
        return 1127.0 * np.log(1.0 + f / 700.0)

    lo, hi = mel(fmin), mel(fmax)
    edges = [lo + (hi - lo) * i / (n_mels + 1) for i in range(n_mels + 2)]
    out = np.zeros((n_fft // 2 + 1, n_mels))
    for k in range(1, n_fft // 2 + 1):  # TF leaves the DC bin out
        m = mel(k * SR / n_fft)
        for b in range(n_mels):
            left, center, right = edges[b], edges[b + 1], edges[b + 2]
            if left < m <= center:
                out[k, b] = (m - left) / (center - left)
            elif center < m < right:
                out[k, b] = (right - m) / (right - center)
    return out


def _reference_log_mel(pcm: np.ndarray) -> np.ndarray:
    """scipy's periodic Hann + rfft per frame, in float64, no shared code with the module."""
    win = signal.get_window("hann", 400, fftbins=True)
    n = 1 + (len(pcm) - 400) // 160
    mags = np.stack([np.abs(sfft.rfft(pcm[i * 160 : i * 160 + 400] * win, n=512)) for i in range(n)])
    return np.log(mags @ _reference_mel() + 0.001)


def test_mel_matrix_matches_the_htk_triangles() -> None:
    m = mel_matrix()
    assert m.shape == (257, 64) and m.dtype == np.float32
    np.testing.assert_allclose(m, _reference_mel(), atol=1e-6)
    freqs = np.arange(257) * SR / 512
    assert not m[0].any(), "DC bin must carry no weight"
    assert not m[freqs < 125.0].any() and not m[freqs > 7500.0].any()
    assert m.max() <= 1.0 and np.all(m.max(axis=0) > 0.5)
    assert np.all(np.diff(m.argmax(axis=0)) >= 0), "band peaks must rise with the band index"


def test_log_mel_matches_scipy_reference_on_speech(samples_dir: Path) -> None:
    pcm = _read(samples_dir / "audio" / "turn_on_the_kitchen_lights.wav")
    ours = log_mel(pcm)
    ref = _reference_log_mel(pcm.astype(np.float64))
    assert ours.shape == ref.shape == (1 + (len(pcm) - 400) // 160, 64)
    assert np.abs(ours - ref).max() < 1e-3
    assert ours.dtype == np.float32


def test_tone_peaks_in_the_band_around_its_frequency() -> None:
    t = np.arange(SR) / SR
    lm = log_mel((0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32))
    edges = np.linspace(1127 * np.log1p(125 / 700), 1127 * np.log1p(7500 / 700), 66)
    centers_hz = 700.0 * (np.exp(edges[1:-1] / 1127.0) - 1.0)
    assert int(np.median(lm.argmax(axis=1))) == int(np.abs(centers_hz - 1000.0).argmin())


def test_silence_is_the_log_offset_and_short_input_gives_nothing() -> None:
    lm = log_mel(np.zeros(SR, np.float32))
    np.testing.assert_allclose(lm, np.log(0.001), rtol=1e-6)
    assert log_mel(np.zeros(399, np.float32)).shape == (0, 64)
    assert patches(log_mel(np.zeros(15599, np.float32))).shape == (0, 96, 64)
    assert patches(log_mel(np.zeros(15600, np.float32))).shape == (1, 96, 64)


def test_patches_are_96_frames_every_48() -> None:
    lm = np.arange(300 * 64, dtype=np.float32).reshape(300, 64)
    p = patches(lm)
    assert p.shape == (1 + (300 - 96) // 48, 96, 64)
    np.testing.assert_array_equal(p[2], lm[96:192])


def test_streamer_equals_offline_and_emits_every_480_ms(samples_dir: Path) -> None:
    pcm = _read(samples_dir / "audio" / "navigate_home.wav")
    pcm = pcm[: len(pcm) // 512 * 512]
    offline = patches(log_mel(pcm))
    streamer = PatchStreamer()
    got, starts, ready_at = [], [], []
    for i in range(len(pcm) // 512):
        p, s = streamer.push(pcm[i * 512 : (i + 1) * 512])
        got.extend(p)
        starts.extend(s)
        ready_at.extend([(i + 1) * 512] * len(p))
    assert len(got) == len(offline) >= 5
    np.testing.assert_allclose(np.stack(got), offline, atol=1e-5)
    assert starts == [i * 7680 for i in range(len(offline))]
    span = streamer.patch_span_samples
    assert span == 15600
    # each patch is emitted with the first chunk that completes it, not later
    for s, r in zip(starts, ready_at, strict=True):
        assert s + span <= r < s + span + 512


def test_params_round_trip_through_a_preprocessing_dict() -> None:
    p = MelParams(log_offset=0.01, patch_hop_frames=24)
    assert MelParams.from_preprocessing({**p.to_preprocessing(), "unrelated": 1}) == p

