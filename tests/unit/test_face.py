"""MTCNN over the exported ONNX stages: one face on the astronaut, none on textures."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from perceptd.daemon.inference.face import FaceDetector, nms, pyramid_scales

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "images"
# facenet-pytorch's own MTCNN (full resolution, min face 20) puts the astronaut's face at
# about (180, 60, 269, 173) in the 512x512 photo.
ASTRONAUT_FACE = (180.0, 60.0, 269.0, 173.0)


def _frame(name: str) -> np.ndarray:
    frame = cv2.imread(str(SAMPLES / f"{name}.jpg"), cv2.IMREAD_COLOR)
    assert frame is not None, f"sample photo {name}.jpg missing"
    return frame


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def detector(bundle_dir: Path) -> FaceDetector:
    manifest = json.loads((bundle_dir / "manifest.json").read_text(encoding="utf-8"))
    return FaceDetector(
        bundle_dir / "face_pnet.onnx",
        bundle_dir / "face_rnet.onnx",
        bundle_dir / "face_onet.onnx",
        manifest["models"]["face_pnet"]["preprocessing"],
    )


def test_astronaut_has_one_face_over_the_face(detector: FaceDetector) -> None:
    faces = detector.detect(_frame("astronaut"))
    assert len(faces) == 1, faces
    f = faces[0]
    assert f.score > 0.95
    assert _iou(f.box, ASTRONAUT_FACE) > 0.8, f.box
    x1, y1, x2, y2 = f.box
    assert 150 <= x1 < x2 <= 300 and 40 <= y1 < y2 <= 200, f.box
    assert len(f.landmarks) == 5
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in f.landmarks), f.landmarks


def test_box_is_in_pixels_of_the_given_frame(detector: FaceDetector) -> None:
    """A 640x480 frame (scaled 1.25 x 0.9375) gets a box scaled the same way."""
    faces = detector.detect(cv2.resize(_frame("astronaut"), (640, 480)))
    assert len(faces) == 1, faces
    expected = (180 * 1.25, 60 * 0.9375, 269 * 1.25, 173 * 0.9375)
    assert _iou(faces[0].box, expected) > 0.7, faces[0].box


def test_rgb_input_flag(detector: FaceDetector) -> None:
    bgr = _frame("astronaut")
    a = detector.detect(bgr)
    b = detector.detect(np.ascontiguousarray(bgr[..., ::-1]), is_rgb=True)
    assert len(a) == len(b) == 1
    np.testing.assert_allclose(a[0].box, b[0].box, atol=1e-3)


@pytest.mark.parametrize("name", ["grass", "brick", "cat", "coffee"])
def test_no_face_on_photos_without_people(detector: FaceDetector, name: str) -> None:
    assert detector.detect(_frame(name)) == []


def test_tiny_and_blank_frames_give_no_face(detector: FaceDetector) -> None:
    assert detector.detect(np.zeros((8, 8, 3), np.uint8)) == []
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []


def test_rejects_non_image(detector: FaceDetector) -> None:
    with pytest.raises(ValueError):
        detector.detect(np.zeros((480, 640), np.uint8))


def test_nms_union_and_min() -> None:
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [50, 50, 59, 59], [2, 2, 5, 5]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # IoU: the two big boxes overlap 0.68; the small nested box has IoU 0.16 with them.
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]
    # Intersection over the smaller area: the nested box swallows both big ones.
    assert nms(boxes, scores, 0.7, mode="min").tolist() == [3, 2]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).size == 0


def test_pyramid_stops_at_the_pnet_window() -> None:
    scales = pyramid_scales(240, 320, 20.0, 0.709)
    assert scales[0] == pytest.approx(12 / 20)
    assert all(240 * s >= 12 for s in scales) and 240 * scales[-1] * 0.709 < 12
    assert pyramid_scales(10, 10, 20.0, 0.709) == []
