"""Export target for Silero VAD: one 32 ms step, state in and out, dynamic stream batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from perceptd.daemon.inference import vad as rt
from perceptd.export.target import FEATURE_TOL, PROB_TOL, ExportContext, ExportTarget
from perceptd.models.vad import (
    CHUNK_SAMPLES,
    CONTEXT_SAMPLES,
    SAMPLE_RATE,
    STATE_SIZE,
    SileroVad,
    load_silero_vad,
    source_info,
)

SPEECH_FILES = ("turn_on_the_kitchen_lights", "switch_the_lamp_off", "navigate_home", "play_some_music")


def _read(path: Path) -> np.ndarray:
    pcm, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise ValueError(f"{path}: sample rate {sr}, expected {SAMPLE_RATE}")
    return pcm.mean(axis=1)


@torch.no_grad()
def _stream_inputs(model: SileroVad, pcm: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The real (audio, state) input of every chunk when the file is streamed through the model."""
    n = pcm.size // CHUNK_SAMPLES
    ctx = np.zeros(CONTEXT_SAMPLES, np.float32)
    state = torch.zeros(2, 1, STATE_SIZE)
    out = []
    for i in range(n):
        chunk = pcm[i * CHUNK_SAMPLES : (i + 1) * CHUNK_SAMPLES]
        audio = np.concatenate([ctx, chunk])[None].astype(np.float32)
        out.append((audio, state.numpy().copy()))
        _, state = model(torch.from_numpy(audio), state)
        ctx = chunk[-CONTEXT_SAMPLES:]
    return out


def parity_inputs(model: SileroVad, audio_dir: Path) -> list[tuple[np.ndarray, ...]]:
    """Speech chunks with the states they really meet (silence, onsets, mid-word, tails) as
    single-stream steps, plus a batch of 8 streams at different positions."""
    per_file = {name: _stream_inputs(model, _read(audio_dir / f"{name}.wav")) for name in SPEECH_FILES}
    singles = [steps[i] for steps in per_file.values() for i in range(0, len(steps), 9)]
    picks = [steps[i] for steps in per_file.values() for i in (len(steps) // 3, len(steps) // 2)]
    batch = (np.concatenate([a for a, _ in picks]), np.concatenate([s for _, s in picks], axis=1))
    silence = _stream_inputs(model, _read(audio_dir / "silence.wav"))[:3]
    return [*singles, *silence, batch]


def preprocessing() -> dict:
    return {
        "sample_rate": SAMPLE_RATE,
        "chunk_samples": CHUNK_SAMPLES,
        "context_samples": CONTEXT_SAMPLES,
        "state_size": STATE_SIZE,
        "state_shape": [2, "batch", STATE_SIZE],
        "input_layout": "audio [B, context + chunk] float32 in [-1, 1]; state [2, B, 128] zeros at start",
        "threshold": rt.THRESHOLD,
        "neg_threshold": rt.NEG_THRESHOLD,
        "min_speech_ms": rt.MIN_SPEECH_MS,
        "min_silence_ms": rt.MIN_SILENCE_MS,
        "speech_pad_ms": rt.SPEECH_PAD_MS,
    }


def targets(ctx: ExportContext) -> list[ExportTarget]:
    model = load_silero_vad()
    parity = parity_inputs(model, ctx.samples_dir / "audio")
    example = tuple(torch.from_numpy(a) for a in parity[-1])
    return [
        ExportTarget(
            name="vad",
            module=model,
            example_inputs=example,
            input_names=["audio", "state"],
            output_names=["prob", "state_out"],
            dynamic_axes={
                "audio": {0: "batch"},
                "state": {1: "batch"},
                "prob": {0: "batch"},
                "state_out": {1: "batch"},
            },
            parity_inputs=parity,
            tolerances={"prob": PROB_TOL, "state_out": FEATURE_TOL},
            preprocessing=preprocessing(),
            source=source_info(),
        )
    ]
