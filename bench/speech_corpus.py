"""Spoken test material made on the spot: espeak-ng voices, pink noise at a chosen SNR.

Shared by the speech tests and `perceptd bench --asr`, so both measure the same sets:
commands of the default vocabulary (with the event each must give), near-misses that must
give no command (or at least not a wrong one), everyday sentences, and noise-only clips.
Needs espeak-ng and sox on PATH; nothing is committed as media.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16_000
VOICES = ("en-us", "en+f3", "en-gb")

# (phrase, event it must become) - the default vocabulary in config.yaml
COMMANDS: tuple[tuple[str, str], ...] = (
    ("turn on the lights", "lights_on"),
    ("turn off the lights", "lights_off"),
    ("play some music", "play_music"),
    ("start navigation", "start_navigation"),
    ("stop the music", "stop_music"),
    ("turn the volume up", "volume_up"),
    ("turn the volume down", "volume_down"),
    ("call mom", "call_contact"),
)
EXTRA_COMMANDS: tuple[tuple[str, str], ...] = (
    ("set the temperature to twenty degrees", "set_temperature"),
    ("switch the lamp off", "lights_off"),
    ("increase the volume", "volume_up"),
    ("give me directions", "start_navigation"),
)
# commands for things the vocabulary does not have: no event, and never a wrong one
NEAR_MISSES: tuple[str, ...] = (
    "turn on the fan", "turn off the fan", "open the garage door", "turn on the tv",
    "play a video", "start the car", "call a taxi", "lock the front door", "close the windows",
    "stop the timer", "turn off the alarm", "start the dishwasher",
)
NON_COMMANDS: tuple[str, ...] = (
    "what is the weather like today", "the cat is sleeping on the sofa",
    "I had a long day at work", "dinner will be ready in ten minutes",
    "my sister lives in London", "the train was late this morning",
)


@dataclass(frozen=True)
class Clip:
    path: Path
    text: str  # what was said ("" for noise)
    expected: str | None  # the command event it must give, None: no command
    voice: str
    snr_db: float | None  # None: clean
    kind: str  # command | near_miss | non_command | noise


def tools_missing() -> list[str]:
    return [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]


def synth(text: str, voice: str, out: Path, pad_s: float = 0.6) -> Path:
    """espeak-ng speech as 16 kHz mono s16 with `pad_s` of silence on each side."""
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True, timeout=30,
                   capture_output=True)
    subprocess.run(["sox", str(raw), "-r", str(SR), "-c", "1", "-b", "16", str(out),
                    "pad", str(pad_s), str(pad_s)], check=True, timeout=30, capture_output=True)
    raw.unlink()
    return out


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS 1/f noise (white noise shaped in the frequency domain)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return (x / np.sqrt(np.mean(x**2))).astype(np.float32)


def _speech_power(pcm: np.ndarray) -> float:
    """Mean power over the voiced part (frames within 30 dB of the loudest), so the silent
    padding does not flatter the SNR."""
    frames = pcm[: len(pcm) // 320 * 320].reshape(-1, 320)
    p = np.mean(frames.astype(np.float64) ** 2, axis=1)
    return float(np.mean(p[p >= p.max() * 1e-3]))


def add_noise(src: Path, out: Path, snr_db: float, seed: int) -> Path:
    pcm, sr = sf.read(src, dtype="float32")
    noise = pink_noise(len(pcm), np.random.default_rng(seed))
    noise *= np.sqrt(_speech_power(pcm) / 10 ** (snr_db / 10))
    mixed = pcm + noise
    peak = float(np.max(np.abs(mixed)))
    if peak > 0.99:  # keep the ratio, avoid clipping
        mixed *= 0.99 / peak
    sf.write(out, mixed, sr, subtype="PCM_16")
    return out


def noise_clip(out: Path, seconds: float, seed: int, rms: float = 0.05) -> Path:
    sf.write(out, pink_noise(int(seconds * SR), np.random.default_rng(seed)) * rms, SR,
             subtype="PCM_16")
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower())[:40]


def make_clips(root: Path, voices: tuple[str, ...] = VOICES[:2], snrs: tuple[float | None, ...] = (None,),
               commands: tuple[tuple[str, str], ...] = COMMANDS, near_misses: tuple[str, ...] = (),
               non_commands: tuple[str, ...] = (), noise: int = 0, pad_s: float = 0.6) -> list[Clip]:
    """Synthesize every (phrase, voice) once, then its noisy copies; noise-only clips last."""
    root.mkdir(parents=True, exist_ok=True)
    clips: list[Clip] = []
    said = [(t, e, "command") for t, e in commands] + [(t, None, "near_miss") for t in near_misses] \
        + [(t, None, "non_command") for t in non_commands]
    for i, (text, expected, kind) in enumerate(said):
        for v, voice in enumerate(voices):
            clean = synth(text, voice, root / f"{_slug(text)}-{_slug(voice)}.wav", pad_s)
            for snr in snrs:
                path = clean if snr is None else add_noise(
                    clean, root / f"{_slug(text)}-{_slug(voice)}-snr{snr:g}.wav", snr, 1000 * i + v)
                clips.append(Clip(path, text, expected, voice, snr, kind))
    for k in range(noise):
        clips.append(Clip(noise_clip(root / f"noise{k}.wav", 2.5, 7 + k, rms=0.03 + 0.04 * k),
                          "", None, "", None, "noise"))
    return clips
