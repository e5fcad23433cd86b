"""Export target for the YAMNet audio tagger (patches in; scores, feature, shared-space vector)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from perceptd.daemon.inference.audio_frontend import DEFAULT_PARAMS, LogMel, patches
from perceptd.export.target import FEATURE_TOL, PROB_TOL, ExportContext, ExportTarget
from perceptd.models.audio_tagger import (
    AudioTagger,
    audioset_class_names,
    class_texts,
    load_yamnet,
    source_info,
)

SPEECH_FILES = ("turn_on_the_kitchen_lights", "switch_the_lamp_off", "navigate_home", "play_some_music")


def _patches(path: Path, fe: LogMel) -> np.ndarray:
    pcm, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if sr != DEFAULT_PARAMS.sample_rate:
        raise ValueError(f"{path}: sample rate {sr}, expected {DEFAULT_PARAMS.sample_rate}")
    p = fe.params
    return patches(fe(pcm.mean(axis=1)), p.patch_hop_frames, p.patch_frames)


def parity_inputs(audio_dir: Path) -> list[tuple[np.ndarray, ...]]:
    """Patches of real speech (onsets, words, tails) and of silence: one by one and batched."""
    fe = LogMel(DEFAULT_PARAMS)
    speech = np.concatenate([_patches(audio_dir / f"{n}.wav", fe) for n in SPEECH_FILES])
    silence = _patches(audio_dir / "silence.wav", fe)
    singles = [(p[None],) for p in speech[::2]] + [(silence[:1],)]
    return [*singles, (np.concatenate([speech, silence[:2]]),)]


def preprocessing() -> dict:
    p = DEFAULT_PARAMS
    return {
        **p.to_preprocessing(),
        "window": "hann_periodic",
        "mel_scale": "htk",
        "magnitude": "abs(rfft)",
        "patch_seconds": p.patch_frames * p.hop_samples / p.sample_rate,
        "patch_hop_seconds": p.patch_hop_frames * p.hop_samples / p.sample_rate,
        "input_layout": "patches [B, 96 frames, 64 mel] = log(mel + 0.001)",
        "scores": "sigmoid probabilities, multi-label",
        "embed": "L2-normalised scores @ class_embeddings (MiniLM of audio_class_texts.json)",
    }


def targets(ctx: ExportContext) -> list[ExportTarget]:
    names = audioset_class_names()
    texts = class_texts(names)
    module = AudioTagger(load_yamnet(), ctx.embed_texts(texts)).eval()
    parity = parity_inputs(ctx.samples_dir / "audio")
    return [
        ExportTarget(
            name="audio",
            module=module,
            example_inputs=(torch.from_numpy(parity[-1][0][:2].copy()),),
            input_names=["patches"],
            output_names=["scores", "embeddings", "embed"],
            dynamic_axes={
                "patches": {0: "batch"},
                "scores": {0: "batch"},
                "embeddings": {0: "batch"},
                "embed": {0: "batch"},
            },
            parity_inputs=parity,
            tolerances={"scores": PROB_TOL, "embeddings": FEATURE_TOL, "embed": FEATURE_TOL},
            preprocessing=preprocessing(),
            source=source_info(),
            labels=names,
            extra_files={"audio_class_texts.json": json.dumps(texts, indent=0).encode()},
        )
    ]
