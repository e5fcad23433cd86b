"""What one model contributes to a bundle: the module, its real parity inputs, its metadata.

Each module in ``export/targets/`` returns a list of these; ``export/onnx_export.py`` turns
them into ONNX files and ``export/bundle.py`` writes the manifest.  Keeping the description
declarative means the exporter, the parity check and the manifest never special-case a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Tolerances fixed by the product: probabilities must match to 1e-4, raw logits/features to 1e-3.
PROB_TOL = 1e-4
FEATURE_TOL = 1e-3


@dataclass
class ExportTarget:
    """One ONNX file of the bundle."""

    name: str  # manifest key and file stem: "vision", "face_pnet", "vad", "audio", "text", ...
    module: torch.nn.Module  # eval mode, weights loaded
    example_inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    parity_inputs: list[tuple[np.ndarray, ...]]  # real inputs (photos, speech, sentences)
    tolerances: dict[str, float]  # per output name: PROB_TOL or FEATURE_TOL
    preprocessing: dict[str, Any]  # constants the daemon-side runtime needs
    source: dict[str, str]  # {"package", "version", "license", "notes"?}
    labels: list[str] | None = None  # written to <name>_labels.json
    extra_files: dict[str, bytes] = field(default_factory=dict)  # written beside the model


@dataclass
class ExportContext:
    """What target builders may use: the text encoder for class-name embeddings, real media."""

    embed_texts: Callable[[list[str]], np.ndarray]  # list of strings -> [N, 384] float32, L2-normed
    samples_dir: Path  # repo samples/ (images/, audio/)
    work_dir: Path  # scratch space
