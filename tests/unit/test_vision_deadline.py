"""The vision stage's deadline: batches sized from the measured per-frame time so the oldest
frame taken still makes its capture -> output budget; a replay's block queue is exempt."""

from __future__ import annotations

import time

import numpy as np

from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.pipeline.vision_stage import Prepared, VisionStage, VisionStageConfig
from perceptd.daemon.sources.base import Frame


def _prepared(cam: str, age_s: float) -> Prepared:
    t = time.monotonic_ns() - int(age_s * 1e9)
    return Prepared(Frame(cam, 0, t, np.zeros((4, 4, 3), np.uint8)), np.zeros(1, np.float32))


def _stage(policy: str, deadline_ms: float = 50.0) -> tuple[VisionStage, BoundedQueue[Prepared]]:
    inbox: BoundedQueue[Prepared] = BoundedQueue(
        "prepared", 8, policy, key=(lambda p: p.frame.source_id) if policy == "latest" else None,
        stamp=lambda p: p.frame.t_capture_ns / 1e9)
    cfg = VisionStageConfig(max_batch=8, deadline_ms=deadline_ms)
    return VisionStage(inbox, BoundedQueue("f", 8, "block"), BoundedQueue("p", 8, "block"),
                       lambda: None, cfg), inbox  # pyright: ignore[reportArgumentType]


def test_batch_is_what_the_oldest_frame_can_afford() -> None:
    stage, inbox = _stage("latest")
    stage._s_per_frame = 0.010  # measured: 10 ms per frame
    for cam in "abcdef":
        inbox.put(_prepared(cam, 0.015))
    # 50 ms budget, the oldest is 15 ms old: 35 ms left -> 3 frames of 10 ms
    assert stage.batch_limit() == 3
    inbox.put(_prepared("g", 0.045))  # 5 ms left: one frame (10 ms) cannot make it ...
    assert stage.batch_limit() == 8  # ... so its lateness is decided: drain at the best cost
    stage._s_per_frame = 0.004  # 4 ms per frame: one still makes it
    assert stage.batch_limit() == 1


def test_no_measurement_yet_or_no_deadline_or_a_replay_takes_max_batch() -> None:
    stage, inbox = _stage("latest")
    inbox.put(_prepared("a", 0.04))
    assert stage.batch_limit() == 8  # nothing measured yet
    stage, inbox = _stage("latest", deadline_ms=0)
    stage._s_per_frame = 0.010
    inbox.put(_prepared("a", 0.04))
    assert stage.batch_limit() == 8
    stage, inbox = _stage("block")
    stage._s_per_frame = 0.010
    inbox.put(_prepared("a", 0.04))
    assert stage.deadline_s == 0 and stage.batch_limit() == 8
