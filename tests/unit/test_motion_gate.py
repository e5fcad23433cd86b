"""The motion gate skips frames that barely changed (counted), but not for longer than allowed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.pipeline.vision_stage import PreprocessStage, VisionStageConfig
from perceptd.daemon.sources.base import Frame


class _Vision:
    def preprocess(self, img: np.ndarray) -> np.ndarray:
        return img[:224, :224]


class _Models:
    vision = _Vision()


def _frames(images: list[np.ndarray], dt_s: float) -> list[Frame]:
    return [Frame("cam", i, int(i * dt_s * 1e9), im) for i, im in enumerate(images)]


def test_static_scene_is_gated_and_motion_passes() -> None:
    samples = Path(__file__).resolve().parents[2] / "samples" / "images"
    still = cv2.resize(cv2.imread(str(samples / "cat.jpg")), (640, 480))
    moved = cv2.resize(cv2.imread(str(samples / "coffee.jpg")), (640, 480))
    out: BoundedQueue = BoundedQueue("prepared", 100, "block")
    stage = PreprocessStage(BoundedQueue("frames", 1, "block"), out, lambda: _Models(),
                            VisionStageConfig(motion_threshold=4.0, motion_max_skip_s=10.0))
    stage.process(_frames([still, still, still, moved, moved], dt_s=0.1))
    assert stage.gated == 3 and out.depth == 2  # first frame, then the change


def test_gate_still_infers_after_max_skip() -> None:
    img = np.zeros((480, 640, 3), np.uint8)
    out: BoundedQueue = BoundedQueue("prepared", 100, "block")
    stage = PreprocessStage(BoundedQueue("frames", 1, "block"), out, lambda: _Models(),
                            VisionStageConfig(motion_threshold=4.0, motion_max_skip_s=1.0))
    stage.process(_frames([img] * 25, dt_s=0.1))  # 2.4 s of a frozen scene
    assert out.depth == 3 and stage.gated == 22
