"""Camera encoder at run time: frame -> ImageNet probabilities, 1280-d feature, shared-space embed.

The ONNX graph takes uint8 RGB and does the float scaling and layout itself, so the only
per-frame work on the host is one cv2 resize and a channel swap of the small 224x224 result.
On a GPU even that moves to the device when the bundle has ``vision_resize`` (a resize graph):
the raw frames of a batch are staged in pinned memory, copied once, resized on the device, and
the resized tensor goes straight into the encoder (IO binding, no host round trip).  With
``cuda_graph`` the encoder runs at a fixed batch (padded) so ONNX Runtime can replay a
captured CUDA graph instead of launching every kernel.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from perceptd.daemon.inference.session import (
    FixedBatchRunner,
    Runner,
    SessionOptions,
    create_session,
    cuda_graph_active,
    device_of,
    provider_of,
)
from perceptd.daemon.inference.staging import StagingBuffers

log = logging.getLogger(__name__)

INPUT_SIZE = 224
INPUT_NAME = "image"
RESIZE_INPUT = "frame"  # vision_resize.onnx: uint8 BGR [B,H,W,3] -> "image"
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
    frame_bgr = crop_frame(frame_bgr, center_crop)
    small = cv2.resize(frame_bgr, (size, size), interpolation=_INTERPOLATION[resize])
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def crop_frame(frame_bgr: np.ndarray, center_crop: bool) -> np.ndarray:
    """The checked frame, or its central square (a view): the host part of either resize."""
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxWx3 BGR frame, got {frame_bgr.dtype} {frame_bgr.shape}")
    if not center_crop:
        return frame_bgr
    h, w = frame_bgr.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return frame_bgr[y : y + s, x : x + s]


@dataclass(frozen=True)
class VisionRuntime:
    """Where the vision path does its work (config ``runtime``); the defaults suit CPU and GPU."""

    device_resize: Literal["auto", "on", "off"] = "auto"  # auto: when the encoder runs on a GPU
    cuda_graph: bool = False  # fixed batch (padded) + CUDA graph replay of the encoder
    pinned: bool = True  # page-locked staging buffers for batches copied to a GPU
    max_batch: int = 8  # the stage's max batch: staging buffer rows and the fixed batch
    io_binding: bool | None = None  # None: on a GPU (forced on in tests to run the GPU path on a CPU)


@dataclass(frozen=True)
class VisionOutput:
    probs: np.ndarray  # [B,1000] float32 softmax
    features: np.ndarray  # [B,1280] float32 pooled features (input of adapters)
    embed: np.ndarray  # [B,384] float32, L2-normalised, in the MiniLM space


class VisionModel:
    """The vision encoder (+ the optional device-side resize) and its label list."""

    def __init__(
        self,
        onnx_path: Path | str,
        preprocessing: dict[str, Any],
        labels: list[str],
        options: SessionOptions | None = None,
        resize_path: Path | str | None = None,
        runtime: VisionRuntime | None = None,
    ) -> None:
        options = options or SessionOptions()
        rt = runtime or VisionRuntime()
        self.preprocessing = dict(preprocessing)
        self.input_size = int(preprocessing.get("input_size", INPUT_SIZE))
        self.resize = str(preprocessing.get("resize", "bilinear"))
        self.center_crop = bool(preprocessing.get("center_crop", False))
        if self.resize not in _INTERPOLATION:
            raise ValueError(f"vision preprocessing.resize: unknown method {self.resize!r}")
        self.labels = list(labels)
        item = (self.input_size, self.input_size, 3)
        profile = ((INPUT_NAME, (1 if not rt.cuda_graph else rt.max_batch, *item), (rt.max_batch, *item),
                    (rt.max_batch, *item)),)  # one TensorRT engine for every batch size the stage sends
        self.session = create_session(onnx_path, dataclasses.replace(options, cuda_graph=rt.cuda_graph,
                                                                     trt_profile=profile))
        on_gpu = device_of(self.session) == "cuda"
        self._runner = Runner(self.session, bind=rt.io_binding)  # IO binding on CUDA
        self._input = self.session.get_inputs()[0].name
        if len(self.labels) != self.session.get_outputs()[0].shape[1]:
            raise ValueError(
                f"{onnx_path}: {len(self.labels)} labels for "
                f"{self.session.get_outputs()[0].shape[1]} classes"
            )
        wants_resize = rt.device_resize == "on" or (rt.device_resize == "auto" and on_gpu)
        self.device_resize = wants_resize and resize_path is not None and self.resize == "bilinear"
        self._resize = Runner(create_session(resize_path, dataclasses.replace(options, cuda_graph=False)),
                              host_outputs=[], bind=rt.io_binding) \
            if self.device_resize and resize_path is not None else None
        # a fixed padded batch only pays for a captured graph (on a CPU it is forced by tests)
        self.cuda_graph = cuda_graph_active(self.session)
        self.fixed: FixedBatchRunner | None = None
        if rt.cuda_graph and self._runner.bound and (self.cuda_graph or not on_gpu):
            self.fixed = FixedBatchRunner(self.session, rt.max_batch, self._runner.device)
        self.staging = StagingBuffers(rt.max_batch, pinned=rt.pinned and on_gpu)
        log.info("event=vision_path provider=%s %s",
                 provider_of(self.session).removesuffix("ExecutionProvider"),
                 " ".join(f"{k}={v}" for k, v in self.path().items()))

    def path(self) -> dict[str, Any]:
        """Where the work happens (status and benchmarks report it beside the providers)."""
        return {"resize": "device" if self.device_resize else "host", "pinned": self.staging.pinned,
                "fixed_batch": self.fixed.batch if self.fixed else 0, "cuda_graph": self.cuda_graph}

    def preprocess(self, frame_bgr: np.ndarray) -> np.ndarray:
        """The host side of the bundle's preprocessing for one BGR frame.

        With the device-side resize that is only the optional crop: the frame itself is staged.
        """
        if not self.device_resize:
            return preprocess(frame_bgr, self.input_size, self.resize, self.center_crop)
        return crop_frame(frame_bgr, self.center_crop)

    def infer(self, batch: np.ndarray) -> VisionOutput:
        """Stacked `preprocess` outputs ([B,...] or one item) -> outputs for the batch."""
        return self.infer_batch(list(batch[None] if batch.ndim == 3 else batch))

    def infer_batch(self, items: list[np.ndarray]) -> VisionOutput:
        """`preprocess` outputs of any number of frames -> outputs in the same order.

        Items are grouped by shape (cameras of different sizes cannot share a resize call)
        and cut into chunks of at most ``max_batch``.
        """
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item.shape, []).append(i)
        parts: list[tuple[list[int], VisionOutput]] = []
        step = self.staging.max_batch
        for idx in groups.values():
            for k in range(0, len(idx), step):
                chunk = idx[k : k + step]
                with self.staging.batch([items[i] for i in chunk]) as (rows, full):
                    parts.append((chunk, self._infer_rows(rows, full)))
        if len(parts) == 1 and parts[0][0] == list(range(len(items))):
            return parts[0][1]
        order = np.argsort(np.concatenate([np.asarray(c) for c, _ in parts]), kind="stable")
        return VisionOutput(*(np.concatenate([getattr(o, f) for _, o in parts])[order]
                              for f in ("probs", "features", "embed")))

    def _infer_rows(self, rows: np.ndarray, full: np.ndarray) -> VisionOutput:
        n = len(rows)
        if self.fixed is not None:
            if self._resize is None:
                out = self.fixed.run(full, n)
            else:  # resize the whole padded buffer straight into the graph's fixed input
                with self.fixed.lock:
                    self._resize.run({RESIZE_INPUT: full}, outputs={INPUT_NAME: self.fixed.input})
                    out = self.fixed.run_bound(n)
        else:
            feed = rows if self._resize is None else self._resize.run({RESIZE_INPUT: rows})[INPUT_NAME]
            out = self._runner.run({self._input: feed})
        return VisionOutput(probs=out["probs"], features=out["features"], embed=out["embed"])

    def top_k(self, probs_row: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The k most probable (label, probability) pairs, most probable first."""
        k = max(0, min(k, probs_row.shape[-1]))
        idx = np.argpartition(-probs_row, k - 1)[:k] if k else np.empty(0, dtype=np.int64)
        idx = idx[np.argsort(-probs_row[idx])]
        return [(self.labels[i], float(probs_row[i])) for i in idx]
