"""Audio tagging at run time: YAMNet patches -> AudioSet probabilities + shared-space vector.

The graph takes log-mel patches (made by :mod:`audio_frontend` in numpy), so patches from many
microphones batch into one call; outputs are ``scores`` [B, 521] (sigmoid probabilities),
``embeddings`` [B, 1024] and ``embed`` [B, 384] (the probability-weighted class-text vector in
the MiniLM space, L2-normalised).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perceptd.daemon.inference.audio_frontend import LogMel, MelParams, patches
from perceptd.daemon.inference.session import SessionOptions, create_session, run_arrays

OUTPUTS = ("scores", "embeddings", "embed")


@dataclass(frozen=True)
class AudioOutput:
    """One batch of tagger outputs (row i belongs to patch i)."""

    scores: np.ndarray  # [B, 521] probabilities
    embeddings: np.ndarray  # [B, 1024]
    embed: np.ndarray  # [B, 384] shared space

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def top_k(scores: np.ndarray, labels: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
    """Best ``k`` (label, probability) per row of ``scores`` [B, C] (or one row [C])."""
    s = np.atleast_2d(scores)
    k = min(k, s.shape[1])
    idx = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(s, idx, axis=1).argsort(axis=1)[:, ::-1]
    idx = np.take_along_axis(idx, order, axis=1)
    return [[(labels[int(j)], float(row[j])) for j in r] for row, r in zip(s, idx, strict=True)]


class AudioTagger:
    """The exported tagger graph plus its labels and front-end constants."""

    def __init__(
        self,
        onnx_path: Path | str,
        preprocessing: Mapping[str, Any] | None = None,
        labels: Sequence[str] | None = None,
        opts: SessionOptions | None = None,
    ) -> None:
        self.mel_params = MelParams.from_preprocessing(preprocessing or {})
        self.frontend = LogMel(self.mel_params)
        self.session = create_session(onnx_path, opts)
        shapes = {o.name: o.shape for o in self.session.get_outputs()}
        self._dims = tuple(int(shapes[name][-1]) for name in OUTPUTS)
        n_classes = self._dims[0]
        self.labels = list(labels) if labels else [f"class_{i}" for i in range(n_classes)]
        if len(self.labels) != n_classes:
            raise ValueError(f"{onnx_path}: {len(self.labels)} labels for {n_classes} outputs")
        p = self.mel_params
        self.infer(np.zeros((1, p.patch_frames, p.mel_bins), np.float32))  # warm-up

    def infer(self, batch: np.ndarray) -> AudioOutput:
        """``batch`` [B, 96, 64] log-mel patches -> :class:`AudioOutput`."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if len(x) == 0:  # ONNX Runtime rejects a zero batch on some providers
            return AudioOutput(*(np.zeros((0, d), np.float32) for d in self._dims))
        scores, emb, embed = run_arrays(self.session, list(OUTPUTS), {"patches": x})
        return AudioOutput(scores, emb, embed)

    def patches(self, pcm: np.ndarray) -> np.ndarray:
        """Whole-signal helper: 16 kHz float PCM -> [N, 96, 64] patches (0.48 s apart)."""
        p = self.mel_params
        return patches(self.frontend(pcm), p.patch_hop_frames, p.patch_frames)

    def top_k(self, scores: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        return top_k(scores, self.labels, k)
