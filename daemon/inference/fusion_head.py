"""The ONNX fusion head at run time: modality vectors + presence mask -> explained scores.

The session is opened here, like every other model's; what the head returns (`FusionResult`)
is fusion's type (`fusion/head.py`), read by the fusion stage and the sample logger.
"""

from __future__ import annotations

import numpy as np

from perceptd.daemon.fusion.head import FusionResult
from perceptd.daemon.fusion.space import EventSpace
from perceptd.daemon.inference.session import Runner, SessionOptions, create_session


class FusionModel:
    def __init__(self, onnx_path, opts: SessionOptions | None = None) -> None:
        self.session = create_session(onnx_path, opts)
        self._runner: tuple[EventSpace, Runner] | None = None

    def _runner_for(self, space: EventSpace) -> Runner:
        """The event tensors are constants of a bundle: on CUDA they go to the device once."""
        if self._runner is None or self._runner[0] is not space:
            constants = {
                "queries": space.queries, "prompt_mask": space.prompt_mask, "allowed": space.allowed,
                "calib": space.calib, "event_affine": space.affine, "competes": space.competes,
                "margin": space.margin, "required": space.required, "rel_vision": space.rel_vision,
                "rel_audio": space.rel_audio, "coverage": space.coverage,
                "from_matcher": space.from_matcher, "combine": space.combine,
            }
            self._runner = (space, Runner(self.session, constants,
                                          host_outputs=("scores", "weights", "modality_scores")))
        return self._runner[1]

    def fuse(self, x: np.ndarray, mask: np.ndarray, space: EventSpace,
             probs_vision: np.ndarray | None = None, probs_audio: np.ndarray | None = None,
             text_evidence: np.ndarray | None = None) -> FusionResult:
        """x [B,M,D] (anything where mask is 0), mask [B,M] in MODALITIES order; the classifier
        probabilities [B,C] of the vision and audio outputs (zeros: none, the class path is
        neutral) and the command matcher's log-odds [B,E] (zeros where no command)."""
        if x.ndim == 2:
            x, mask = x[None], mask[None]
        b = x.shape[0]
        n_events = len(space.names)
        out = self._runner_for(space).run({
            "x": np.ascontiguousarray(x, np.float32),
            "mask": np.ascontiguousarray(mask, np.float32),
            "probs_vision": _rows(probs_vision, b, space.rel_vision.shape[1]),
            "probs_audio": _rows(probs_audio, b, space.rel_audio.shape[1]),
            "text_evidence": _rows(text_evidence, b, n_events),
        })
        return FusionResult(out["scores"], out["weights"], out["modality_scores"], out["fused"])


def _rows(a: np.ndarray | None, b: int, width: int) -> np.ndarray:
    if a is None:
        return np.zeros((b, width), np.float32)
    return np.ascontiguousarray(np.reshape(a, (b, width)), np.float32)
