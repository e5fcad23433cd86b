"""MTCNN face detection at run time: numpy/cv2 around three ONNX sessions (PNet, RNet, ONet).

The pipeline follows facenet-pytorch's ``detect_face`` (its weights, its box conventions) with
two changes for a camera daemon: the frame is first shrunk so its longest side is at most
``max_side`` pixels (the pyramid then costs a few milliseconds instead of tens), and the
minimum face size is given in pixels of the original frame.  The ONNX graphs take uint8 RGB
NHWC and normalise inside, so the numpy side only resizes and crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from perceptd.daemon.inference.session import SessionOptions, create_session, run_arrays

INPUT_NAME = "image"

# Defaults, used where the bundle's preprocessing dict does not say otherwise.
DEFAULTS: dict[str, Any] = {
    "thresholds": [0.6, 0.7, 0.7],  # face probability gates of PNet, RNet, ONet
    "min_face_size": 40,  # pixels of the original frame
    "scale_factor": 0.709,  # pyramid step (area halves every two levels)
    "max_side": 320,  # the frame is shrunk to this longest side before the pyramid
    "nms": {"pnet_scale": 0.5, "pnet": 0.7, "rnet": 0.7, "onet": 0.7},
    "pnet_cell": 12,
    "pnet_stride": 2,
    "rnet_size": 24,
    "onet_size": 48,
}


@dataclass(frozen=True)
class Face:
    """One detected face, in pixels of the frame given to `FaceDetector.detect`."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float  # ONet face probability
    landmarks: tuple[tuple[float, float], ...] = ()  # eyes, nose, mouth corners (x, y)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best first.

    Overlap is IoU ("union") or intersection over the smaller area ("min", ONet's final
    pass, which also removes a small box nested in a bigger one).  Areas use MTCNN's +1
    pixel convention.
    """
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        if mode == "min":
            overlap = inter / np.minimum(area[i], area[rest])
        else:
            overlap = inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def pyramid_scales(height: int, width: int, min_face: float, factor: float, cell: int = 12) -> list[float]:
    """Scales at which a face of `min_face` px and larger fills PNet's `cell`-px window."""
    scale = cell / min_face
    side = min(height, width) * scale
    scales = []
    while side >= cell:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def resize_level(image: np.ndarray, scale: float) -> np.ndarray:
    """One pyramid level, sized as facenet-pytorch does (int(h*s+1), int(w*s+1))."""
    h, w = image.shape[:2]
    return cv2.resize(image, (int(w * scale + 1), int(h * scale + 1)), interpolation=cv2.INTER_AREA)


def pnet_boxes(
    reg: np.ndarray, prob: np.ndarray, scale: float, threshold: float, stride: int, cell: int
) -> np.ndarray:
    """PNet maps of one level -> candidate rows [x1, y1, x2, y2, score, dx1, dy1, dx2, dy2]."""
    ys, xs = np.nonzero(prob >= threshold)
    if ys.size == 0:
        return np.empty((0, 9), dtype=np.float32)
    xy = np.stack([xs, ys], axis=1).astype(np.float32)
    q1 = np.floor((stride * xy + 1) / scale)
    q2 = np.floor((stride * xy + cell) / scale)
    return np.concatenate(
        [q1, q2, prob[ys, xs][:, None], reg[:, ys, xs].T], axis=1
    ).astype(np.float32)


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (RNet/ONet take square crops)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply RNet/ONet box offsets (fractions of the +1-pixel box size)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, :4] = boxes[:, :4] + reg * np.stack([w, h, w, h], axis=1)
    return out


def crops(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N,size,size,3] crops of the boxes, clamped to the image; and which boxes had one."""
    h, w = image.shape[:2]
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x1 = np.maximum(b[:, 0], 1) - 1
    y1 = np.maximum(b[:, 1], 1) - 1
    x2 = np.minimum(b[:, 2], w)
    y2 = np.minimum(b[:, 3], h)
    valid = (x2 > x1) & (y2 > y1)
    out = np.empty((int(valid.sum()), size, size, 3), dtype=np.uint8)
    for j, k in enumerate(np.flatnonzero(valid)):
        patch = image[y1[k] : y2[k], x1[k] : x2[k]]
        out[j] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out, valid


class FaceDetector:
    """MTCNN over three ONNX sessions; `detect` takes a BGR frame (cv2's order)."""

    def __init__(
        self,
        pnet_path: Path | str,
        rnet_path: Path | str,
        onet_path: Path | str,
        preprocessing: dict[str, Any] | None = None,
        options: SessionOptions | None = None,
        **overrides: Any,
    ) -> None:
        cfg = {**DEFAULTS, **(preprocessing or {}), **overrides}
        self.thresholds = [float(t) for t in cfg["thresholds"]]
        self.min_face_size = float(cfg["min_face_size"])
        self.scale_factor = float(cfg["scale_factor"])
        self.max_side = int(cfg["max_side"]) if cfg["max_side"] else 0
        self.nms = {**DEFAULTS["nms"], **cfg["nms"]}
        self.cell = int(cfg["pnet_cell"])
        self.stride = int(cfg["pnet_stride"])
        self.rnet_size = int(cfg["rnet_size"])
        self.onet_size = int(cfg["onet_size"])
        self.input_name = str(cfg.get("input_name", INPUT_NAME))
        if not 0.0 < self.scale_factor < 1.0:
            raise ValueError(f"face scale_factor must be in (0,1), got {self.scale_factor}")
        self.pnet = create_session(pnet_path, options)
        self.rnet = create_session(rnet_path, options)
        self.onet = create_session(onet_path, options)
        self.sessions = (self.pnet, self.rnet, self.onet)

    def detect(self, frame: np.ndarray, is_rgb: bool = False) -> list[Face]:
        """Faces in a uint8 HxWx3 frame (BGR unless `is_rgb`), best score first."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected a uint8 HxWx3 frame, got {frame.dtype} {frame.shape}")
        image, shrink = self._working_image(frame, is_rgb)
        min_face = max(float(self.cell), self.min_face_size * shrink)
        boxes = self._propose(image, min_face)
        if len(boxes):
            boxes = self._refine(image, boxes)
        if len(boxes) == 0:
            return []
        boxes, landmarks = self._output(image, boxes)
        return self._to_faces(boxes, landmarks, shrink, frame.shape)

    def _working_image(self, frame: np.ndarray, is_rgb: bool) -> tuple[np.ndarray, float]:
        h, w = frame.shape[:2]
        shrink = min(1.0, self.max_side / max(h, w)) if self.max_side else 1.0
        if shrink < 1.0:
            size = (max(1, round(w * shrink)), max(1, round(h * shrink)))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            shrink = frame.shape[1] / w
        return (frame if is_rgb else cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)), shrink

    def _propose(self, image: np.ndarray, min_face: float) -> np.ndarray:
        """PNet over the pyramid -> squared candidate boxes [N,5] (x1,y1,x2,y2,score)."""
        h, w = image.shape[:2]
        found = []
        for scale in pyramid_scales(h, w, min_face, self.scale_factor, self.cell):
            level = resize_level(image, scale)
            reg, prob = run_arrays(self.pnet, None, {self.input_name: level[None]})
            cand = pnet_boxes(reg[0], prob[0], scale, self.thresholds[0], self.stride, self.cell)
            if len(cand):
                found.append(cand[nms(cand[:, :4], cand[:, 4], self.nms["pnet_scale"])])
        if not found:
            return np.empty((0, 5), dtype=np.float32)
        cand = np.concatenate(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], self.nms["pnet"])]
        bw = (cand[:, 2] - cand[:, 0])[:, None]
        bh = (cand[:, 3] - cand[:, 1])[:, None]
        moved = cand[:, :4] + cand[:, 5:9] * np.concatenate([bw, bh, bw, bh], axis=1)
        return square(np.concatenate([moved, cand[:, 4:5]], axis=1))

    def _refine(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """RNet: keep, regress and square the candidates it believes are faces."""
        batch, valid = crops(image, boxes, self.rnet_size)
        if len(batch) == 0:
            return boxes[:0]
        boxes = boxes[valid]
        reg, prob = run_arrays(self.rnet, None, {self.input_name: batch})
        ok = prob > self.thresholds[1]
        boxes = np.concatenate([boxes[ok, :4], prob[ok, None]], axis=1)
        keep = nms(boxes[:, :4], boxes[:, 4], self.nms["rnet"])
        return square(regress(boxes[keep], reg[ok][keep]))

    def _output(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ONet: final score, box regression and landmarks; "min" NMS."""
        batch, valid = crops(image, boxes, self.onet_size)
        if len(batch) == 0:
            return boxes[:0], np.empty((0, 5, 2), np.float32)
        boxes = boxes[valid]
        reg, marks, prob = run_arrays(self.onet, None, {self.input_name: batch})
        ok = prob > self.thresholds[2]
        boxes = np.concatenate([boxes[ok, :4], prob[ok, None]], axis=1)
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        marks = marks[ok]
        points = np.stack(
            [w * marks[:, :5] + boxes[:, 0:1] - 1, h * marks[:, 5:] + boxes[:, 1:2] - 1], axis=2
        )
        boxes = regress(boxes, reg[ok])
        keep = nms(boxes[:, :4], boxes[:, 4], self.nms["onet"], mode="min")
        return boxes[keep], points[keep]

    @staticmethod
    def _to_faces(
        boxes: np.ndarray, points: np.ndarray, shrink: float, shape: tuple[int, ...]
    ) -> list[Face]:
        h, w = shape[:2]
        boxes = boxes.astype(np.float64)
        boxes[:, :4] /= shrink
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        points = points.astype(np.float64) / shrink
        faces = [
            Face(
                box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                score=float(b[4]),
                landmarks=tuple((float(x), float(y)) for x, y in p),
            )
            for b, p in zip(boxes, points, strict=True)
        ]
        return sorted(faces, key=lambda f: -f.score)
