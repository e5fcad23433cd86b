"""What the fusion head returns.  The head itself (its ONNX session) is run by inference
(`inference/fusion_head.FusionModel`); fusion only defines the result it hands on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perceptd.daemon.fusion.space import MODALITIES


@dataclass(frozen=True)
class FusionResult:
    """Per batch row b and event e: score, weights and per-modality scores over MODALITIES."""

    scores: np.ndarray  # [B,E]
    weights: np.ndarray  # [B,E,M]
    modality_scores: np.ndarray  # [B,E,M]
    fused: np.ndarray | None  # [B,E,D]; None on CUDA, where it is left on the device


def modality_index(name: str) -> int:
    return MODALITIES.index(name)
