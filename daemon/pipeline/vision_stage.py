"""Vision: frames -> preprocess (+ motion gate) -> batched encoder across cameras (+ faces).

Preprocessing (cv2 resize, releases the GIL) runs in its own thread and overlaps inference
(ONNX Runtime, releases the GIL).  Frames of all cameras share one batch, and `workers`
inference threads keep that many batches in flight, so a CPU's cores all run the encoder (one
ORT thread each, no spinning pool) while outputs still leave in capture order.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from perceptd.daemon.fusion.timeline import ModalityExtra, ModalityOutput
from perceptd.daemon.messages import Face, Outbound, VisionMessage
from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.pipeline.worker import Worker
from perceptd.daemon.sources.base import Frame

if TYPE_CHECKING:
    from perceptd.daemon.inference.models import ModelSet


class VisionStageConfig(BaseModel):
    """Batching, motion gating and face detection of the vision path."""

    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(default=8, ge=1, le=256, description="frames per encoder call (all cameras)")
    max_wait_ms: float = Field(
        default=0.0, ge=0, le=1000, description="longest a frame waits for its batch to fill (0: a batch is "
        "what is queued; measured: the same CPU cost as 5 ms and half the p50 at 2 streams)"
    )
    workers: int = Field(
        default=0, ge=0, le=16,
        description="encoder batches in flight at once (threads); 0: one per CPU core, at most 4",
    )
    motion_threshold: float = Field(
        default=0.0, ge=0, le=255,
        description="skip frames whose mean absolute change (0-255, on a 32x24 thumbnail) "
        "since the last inferred frame is below this; 0 disables the gate",
    )
    motion_max_skip_s: float = Field(
        default=2.0, gt=0, le=3600, description="infer at least this often even without motion"
    )
    face_interval_s: float = Field(
        default=0.5, ge=0, le=3600, description="face detection period per camera (0: every frame)"
    )
    faces: bool = Field(default=True, description="run the MTCNN face detector")
    face_min_score: float = Field(
        default=0.9, ge=0, le=1, description="detection score from which a face is evidence of a person "
        "(MTCNN scores owls and helmets 0.75-0.85, real faces 0.95-1.0); weaker ones are only "
        "reported in the vision message",
    )
    top_k: int = Field(default=5, ge=1, le=20, description="labels published per frame")
    nice: int = Field(
        default=0, ge=0, le=19,
        description="scheduling niceness of the encoder threads (Linux; 0: same as the rest): "
        "capture, audio, commands and fusion get the CPU first when vision saturates it",
    )
    deadline_ms: float = Field(
        default=50.0, ge=0, le=60_000,
        description="capture -> vision output budget of a live camera frame: batches are sized "
        "from the measured encoder time so the oldest frame taken still makes it, and frames "
        "published later are counted (deadline_misses); 0: off (batches of max_batch). Replayed "
        "files are never held to it",
    )


@dataclass(frozen=True)
class Prepared:
    frame: Frame
    tensor: np.ndarray  # VisionModel.preprocess: 224x224 RGB, or the BGR frame for a device resize


class PreprocessStage(Worker[Frame]):
    name = "preprocess"

    def __init__(self, inbox: BoundedQueue[Frame], out: BoundedQueue[Prepared],
                 models: Callable[[], ModelSet], cfg: VisionStageConfig) -> None:
        super().__init__(inbox)
        self.out = out
        self.models = models
        self.cfg = cfg
        self.gated = 0  # frames skipped by the motion gate
        self._last_thumb: dict[str, np.ndarray] = {}
        self._last_t: dict[str, int] = {}

    def _moved(self, f: Frame) -> bool:
        if self.cfg.motion_threshold <= 0:
            return True
        small = cv2.resize(f.image, (32, 24), interpolation=cv2.INTER_AREA)
        thumb = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.int16)
        prev = self._last_thumb.get(f.source_id)
        stale = f.t_capture_ns - self._last_t.get(f.source_id, 0) > self.cfg.motion_max_skip_s * 1e9
        if prev is not None and not stale and np.abs(thumb - prev).mean() < self.cfg.motion_threshold:
            return False
        self._last_thumb[f.source_id] = thumb
        self._last_t[f.source_id] = f.t_capture_ns
        return True

    def process(self, items: list[Frame]) -> None:
        vision = self.models().vision
        for f in items:
            if not self._moved(f):
                self.gated += 1
                continue
            self.out.put(Prepared(f, vision.preprocess(f.image)), timeout=1.0)

    def finish(self) -> None:
        self.out.close()

    def stats(self) -> dict:
        return {**super().stats(), "motion_gated": self.gated}


class VisionStage(Worker[Prepared]):
    name = "vision"

    def __init__(self, inbox: BoundedQueue[Prepared], fusion: BoundedQueue[ModalityOutput],
                 publish: BoundedQueue[Outbound], models: Callable[[], ModelSet],
                 cfg: VisionStageConfig) -> None:
        super().__init__(inbox)
        self.batch = cfg.max_batch
        self.batch_wait_s = cfg.max_wait_ms / 1000
        self.threads = cfg.workers or min(4, len(os.sched_getaffinity(0)))
        self.nice = cfg.nice
        self._face_lock = threading.Lock()
        self.fusion = fusion
        self.publish = publish
        self.models = models
        self.cfg = cfg
        self._last_face_ns: dict[str, int] = {}
        self.keep_frames = False  # set when samples may store raw frames
        self.batches = 0
        self.infer_s = 0.0
        self.face_s = 0.0
        # live inbox only (a replay's block queue is never held to it): see batch_limit
        self.deadline_s = cfg.deadline_ms / 1000 if inbox.policy != "block" else 0.0
        self.deadline_misses = 0
        self._s_per_frame = 0.0  # moving average of encoder seconds per frame (batch / n)

    def batch_limit(self) -> int:
        """As many queued frames as the oldest can afford: (deadline - its age) / measured
        seconds per frame, between 1 and max_batch.  On a CPU a frame in a batch of 8 waits for
        the other 7 (~100 ms here), so a tight deadline takes 1-3; on a GPU the per-frame cost
        is small and batches stay large.  When the oldest cannot make it even alone (overload)
        its lateness is decided: the whole max_batch goes, at the best cost per frame, so the
        backlog drains instead of being served one frame per call."""
        if self.deadline_s <= 0 or self._s_per_frame <= 0:
            return self.batch
        oldest = self.inbox.oldest_stamp()
        if oldest is None:
            return self.batch
        afford = self.deadline_s - (time.monotonic() - oldest)
        if afford < self._s_per_frame:
            return self.batch
        return max(1, min(self.batch, int(afford / self._s_per_frame)))

    def process(self, items: list[Prepared]) -> None:
        m = self.models()  # one bundle per batch, even across a hot swap
        t0 = time.perf_counter()
        out = m.vision.infer_batch([p.tensor for p in items])
        dt = time.perf_counter() - t0
        with self._lock:
            self.infer_s += dt
            self.timings.observe("vision", m, dt)
            self.batches += 1
            per = dt / len(items)
            self._s_per_frame = per if self._s_per_frame <= 0 else 0.8 * self._s_per_frame + 0.2 * per
        tops = [tuple(m.vision.top_k(out.probs[i], self.cfg.top_k)) for i in range(len(items))]
        faces = [self._faces(m, p.frame) for p in items]
        to_fusion: list[ModalityOutput] = []
        to_publish: list[Outbound] = []
        for i, p in enumerate(items):
            self._outputs(m, p.frame, out, i, tops[i], faces[i], to_fusion, to_publish)
        with self.in_order():  # the whole batch in one hand-off per queue (one wake-up each)
            self.fusion.put_many(to_fusion)
            self.publish.put_many(to_publish)
        if self.deadline_s > 0:
            late_before = time.monotonic_ns() - int(self.deadline_s * 1e9)
            late = sum(p.frame.t_capture_ns < late_before for p in items)
            if late:
                with self._lock:
                    self.deadline_misses += late

    def _outputs(self, m, f: Frame, out, i: int, top, faces, to_fusion: list[ModalityOutput],
                 to_publish: list[Outbound]) -> None:
        """Frame i's fusion inputs (vision, and face when confident) and its vision message."""
        extra: ModalityExtra = {"features": out.features[i]}  # encoder feature: sample logging keeps it
        if self.keep_frames:
            extra["frame"] = f.image
        to_fusion.append(ModalityOutput("vision", f.source_id, f.t_capture_ns, out.embed[i], top,
                                        extra, probs=out.probs[i].copy()))
        confident = [fc for fc in faces or () if fc.score >= self.cfg.face_min_score]
        if confident:
            best = max(fc.score for fc in confident)
            to_fusion.append(ModalityOutput(
                "face", f.source_id, f.t_capture_ns, m.face_anchor,
                (("face", float(best)),), {"faces": faces},
            ))
        msg = VisionMessage(source=f.source_id, frame_seq=f.seq, top=top, faces=tuple(
            Face(box=tuple(float(v) for v in fc.box), score=float(fc.score))  # pyright: ignore[reportArgumentType]
            for fc in faces or ()
        ))
        to_publish.append(Outbound(msg, f.t_capture_ns))

    def _faces(self, m, f: Frame):
        if not self.cfg.faces or m.face is None:
            return None
        with self._face_lock:  # several workers: one detection per camera per interval
            last = self._last_face_ns.get(f.source_id, 0)
            if f.t_capture_ns - last < self.cfg.face_interval_s * 1e9:
                return None
            self._last_face_ns[f.source_id] = f.t_capture_ns
        t0 = time.perf_counter()
        faces = m.face.detect(f.image)
        dt = time.perf_counter() - t0
        with self._lock:
            self.face_s += dt
            self.timings.observe("face", m, dt)
        return faces

    def stats(self) -> dict:
        return {**super().stats(), "batches": self.batches,
                "infer_ms_per_frame": 1e3 * self.infer_s / max(1, self.items),
                "face_s": round(self.face_s, 3), "deadline_ms": self.deadline_s * 1e3,
                "deadline_misses": self.deadline_misses}
