"""Camera encoder at run time: frame -> ImageNet probabilities, 1280-d feature, shared-space embed.

The ONNX graph takes uint8 RGB and does the float scaling and layout itself, so the only
per-frame work here is one cv2 resize and a channel swap of the small 224x224 result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from perceptd.daemon.inference.session import Runner, SessionOptions, create_session

INPUT_SIZE = 224
INPUT_NAME = "image"
OUTPUT_NAMES = ("probs", "features", "embed")

# cv2.INTER_AREA costs 1.2 ms for 640x480 -> 224 and 6 ms from 1080p on one core; bilinear
# costs 0.15 ms at any source size with the same top-5 on the sample photos.
_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


def preprocess(
    frame_bgr: np.ndarray,
    size: int = INPUT_SIZE,
    resize: str = "bilinear",
    center_crop: bool = False,
) -> np.ndarray:
    """BGR frame (any size) -> uint8 [size,size,3] RGB for the graph.

    The whole frame is squashed to a square by default: a camera event at the edge of the
    picture matters more than the exact aspect ratio.  ``center_crop`` takes the central
    square instead (a view, so still one resize).
    """
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxWx3 BGR frame, got {frame_bgr.dtype} {frame_bgr.shape}")
    if center_crop:
        h, w = frame_bgr.shape[:2]
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        frame_bgr = frame_bgr[y : y + s, x : x + s]
    small = cv2.resize(frame_bgr, (size, size), interpolation=_INTERPOLATION[resize])
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class VisionOutput:
    probs: np.ndarray  # [B,1000] float32 softmax
    features: np.ndarray  # [B,1280] float32 pooled features (input of adapters)
    embed: np.ndarray  # [B,384] float32, L2-normalised, in the MiniLM space


class VisionModel:
    """One ONNX Runtime session of the vision encoder plus its label list."""

    def __init__(
        self,
        onnx_path: Path | str,
        preprocessing: dict[str, Any],
        labels: list[str],
        options: SessionOptions | None = None,
    ) -> None:
        self.preprocessing = dict(preprocessing)
        self.input_size = int(preprocessing.get("input_size", INPUT_SIZE))
        self.resize = str(preprocessing.get("resize", "bilinear"))
        self.center_crop = bool(preprocessing.get("center_crop", False))
        if self.resize not in _INTERPOLATION:
            raise ValueError(f"vision preprocessing.resize: unknown method {self.resize!r}")
        self.labels = list(labels)
        self.session = create_session(onnx_path, options)
        self._runner = Runner(self.session)  # IO binding on CUDA: one input copy per batch
        self._input = self.session.get_inputs()[0].name
        if len(self.labels) != self.session.get_outputs()[0].shape[1]:
            raise ValueError(
                f"{onnx_path}: {len(self.labels)} labels for "
                f"{self.session.get_outputs()[0].shape[1]} classes"
            )

    def preprocess(self, frame_bgr: np.ndarray) -> np.ndarray:
        """The bundle's preprocessing for one BGR frame."""
        return preprocess(frame_bgr, self.input_size, self.resize, self.center_crop)

    def infer(self, batch: np.ndarray) -> VisionOutput:
        """uint8 [B,224,224,3] RGB (from `preprocess`, stacked) -> outputs for the batch."""
        if batch.ndim == 3:
            batch = batch[None]
        out = self._runner.run({self._input: np.ascontiguousarray(batch, dtype=np.uint8)})
        return VisionOutput(probs=out["probs"], features=out["features"], embed=out["embed"])

    def top_k(self, probs_row: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The k most probable (label, probability) pairs, most probable first."""
        k = max(0, min(k, probs_row.shape[-1]))
        idx = np.argpartition(-probs_row, k - 1)[:k] if k else np.empty(0, dtype=np.int64)
        idx = idx[np.argsort(-probs_row[idx])]
        return [(self.labels[i], float(probs_row[i])) for i in idx]
