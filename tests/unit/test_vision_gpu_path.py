"""The GPU-shaped vision paths, run on the CPU so a CI without a GPU still checks them.

On a GPU, camera frames are staged (pinned), resized on the device by the bundle's
``vision_resize`` graph, handed to the encoder as a device value (IO binding), and with
``cuda_graph`` run at a fixed padded batch.  The same ONNX Runtime calls work with device
"cpu", so every path is forced here and must give what the plain host path gives.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from perceptd.daemon.bundle import verify_bundle
from perceptd.daemon.inference.session import Runner, SessionOptions, create_session
from perceptd.daemon.inference.staging import StagingBuffers, cuda_runtime
from perceptd.daemon.inference.vision import RESIZE_INPUT, VisionModel, VisionRuntime, preprocess

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "images"
PHOTOS = ("cat", "coffee", "astronaut", "motorcycle", "rocket", "space", "grass", "brick")


def _camera_frames() -> list[np.ndarray]:
    """The photos as 640x480 camera frames, plus one at the photo's own size (mixed batch)."""
    raw = [cv2.imread(str(SAMPLES / f"{n}.jpg"), cv2.IMREAD_COLOR) for n in PHOTOS]
    assert all(f is not None for f in raw)
    return [cv2.resize(f, (640, 480), interpolation=cv2.INTER_AREA) for f in raw] + [raw[0]]


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path):
    return verify_bundle(bundle_dir)


def _model(bundle, rt: VisionRuntime) -> VisionModel:
    return VisionModel(bundle.model_path("vision"), bundle.preprocessing("vision"), bundle.labels("vision"),
                       SessionOptions("cpu", 1), bundle.model_path("vision_resize"), rt)


@pytest.fixture(scope="module")
def host_out(bundle):
    m = _model(bundle, VisionRuntime("off"))
    assert not m.device_resize and m.fixed is None
    return m.infer_batch([m.preprocess(f) for f in _camera_frames()])


def test_resize_graph_matches_the_cv2_host_path(bundle) -> None:
    """The device-side preprocessing computes what cv2 does, to one grey level of rounding."""
    sess = create_session(bundle.model_path("vision_resize"), SessionOptions("cpu", 1))
    for frame in _camera_frames():
        graph = sess.run(None, {RESIZE_INPUT: frame[None]})[0][0]
        host = preprocess(frame)
        assert graph.shape == host.shape == (224, 224, 3)
        diff = np.abs(graph.astype(np.int16) - host.astype(np.int16))
        assert diff.max() <= 1 and diff.mean() < 0.25  # ~1 pixel value in 9 rounds the other way


@pytest.mark.parametrize("rt", [
    VisionRuntime("on"),  # resize graph, plain runs
    VisionRuntime("on", io_binding=True),  # resized tensor handed over as an OrtValue
    VisionRuntime("off", cuda_graph=True, io_binding=True),  # fixed padded batch of 8
    VisionRuntime("on", cuda_graph=True, io_binding=True, max_batch=4),  # resize into the fixed input
], ids=["device-resize", "chained", "fixed-batch", "chained-fixed-batch"])
def test_every_gpu_shaped_path_gives_the_host_result(bundle, host_out, rt: VisionRuntime) -> None:
    m = _model(bundle, rt)
    assert m.device_resize == (rt.device_resize == "on")
    assert (m.fixed is not None) == rt.cuda_graph
    frames = _camera_frames()  # 9 frames of two sizes: grouped by shape, cut at max_batch, reordered
    out = m.infer_batch([m.preprocess(f) for f in frames])
    assert [m.top_k(p, 1)[0][0] for p in out.probs] == [m.top_k(p, 1)[0][0] for p in host_out.probs]
    assert m.top_k(out.probs[0], 1)[0][0] in {"Egyptian Mau", "tabby cat", "tiger cat"}
    cos = np.sum(out.embed * host_out.embed, axis=1)
    assert cos.min() > 0.999, cos
    tol = 0 if rt.device_resize == "off" else 0.02  # 1-grey-level rounding of the resize
    np.testing.assert_allclose(out.probs, host_out.probs, atol=tol + 1e-5)


def test_staging_reuses_buffers_and_never_shares_one() -> None:
    stage = StagingBuffers(max_batch=4, pinned=True)
    assert stage.pinned == (cuda_runtime() is not None)
    items = [np.full((2, 3), i, np.uint8) for i in range(3)]
    for _ in range(3):  # one caller at a time: one buffer, reused
        with stage.batch(items) as (rows, full):
            assert rows.shape == (3, 2, 3) and full.shape == (4, 2, 3)
            assert [int(r[0, 0]) for r in rows] == [0, 1, 2]
    assert stage.allocated == 1
    held, barrier = [], threading.Barrier(3)

    def hold() -> None:
        with stage.batch(items) as (rows, _):
            held.append(rows.base if rows.base is not None else rows)
            barrier.wait(timeout=10)

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len({id(b) for b in held}) == 3 and stage.allocated == 3  # concurrent: one each
    with pytest.raises(ValueError, match="1..4"):
        with stage.batch(items * 2):
            pass


def test_runner_feeds_a_device_value_to_the_next_session(bundle) -> None:
    """resize -> encoder without a host round trip: the first runner's output is an OrtValue
    bound straight as the second's input."""
    resize = Runner(create_session(bundle.model_path("vision_resize"), SessionOptions("cpu", 1)),
                    host_outputs=[], bind=True)
    enc = Runner(create_session(bundle.model_path("vision"), SessionOptions("cpu", 1)), bind=True)
    frame = _camera_frames()[1][None]
    value = resize.run({RESIZE_INPUT: frame})["image"]
    assert not isinstance(value, np.ndarray)
    out = enc.run({"image": value})
    assert bundle.labels("vision")[int(out["probs"][0].argmax())] in {"espresso", "cup", "coffee mug"}
