"""The exported vision encoder on real photos: right classes, batch-invariant, meaningful embed."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from perceptd.daemon.inference.vision import VisionModel, preprocess

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "images"
PHOTOS = ("cat", "coffee", "astronaut", "motorcycle", "rocket", "space", "grass", "brick")
CAT_CLASSES = {"tabby cat", "a cat having a striped coat", "Egyptian Mau", "Persian cat",
               "Siamese cat", "tiger cat"}
COFFEE_CLASSES = {"espresso", "cup", "coffee mug", "tea cup"}


def _frame(name: str) -> np.ndarray:
    frame = cv2.imread(str(SAMPLES / f"{name}.jpg"), cv2.IMREAD_COLOR)
    assert frame is not None, f"sample photo {name}.jpg missing"
    return frame


@pytest.fixture(scope="module")
def model(bundle_dir: Path) -> VisionModel:
    manifest = json.loads((bundle_dir / "manifest.json").read_text(encoding="utf-8"))
    labels = json.loads((bundle_dir / "vision_labels.json").read_text(encoding="utf-8"))
    return VisionModel(
        bundle_dir / "vision.onnx", manifest["models"]["vision"]["preprocessing"], labels
    )


@pytest.fixture(scope="module")
def outputs(model: VisionModel):
    batch = np.stack([model.preprocess(_frame(n)) for n in PHOTOS])
    return dict(zip(PHOTOS, _rows(model.infer(batch)), strict=True))


def _rows(out):
    return [
        {"probs": out.probs[i], "features": out.features[i], "embed": out.embed[i]}
        for i in range(out.probs.shape[0])
    ]


def test_preprocess_is_one_small_rgb_uint8_image() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[..., 0] = 255  # pure blue in BGR
    x = preprocess(frame)
    assert x.shape == (224, 224, 3) and x.dtype == np.uint8
    assert (x[..., 2] == 255).all() and (x[..., 0] == 0).all()  # blue ends up last in RGB


def test_preprocess_rejects_non_image() -> None:
    with pytest.raises(ValueError):
        preprocess(np.zeros((224, 224), np.uint8))


def test_manifest_preprocessing_matches_graph(model: VisionModel) -> None:
    pre = model.preprocessing
    assert pre["input_size"] == 224 and pre["channel_order"] == "RGB"
    assert pre["dtype"] == "uint8" and pre["normalisation_in_graph"] is True
    assert len(model.labels) == 1000 and model.labels[281] == "tabby cat"


def test_cat_photo_has_a_cat_class_in_top5(model: VisionModel, outputs) -> None:
    top = model.top_k(outputs["cat"]["probs"], 5)
    assert CAT_CLASSES & {label for label, _ in top}, top


def test_coffee_photo_has_coffee_in_top5(model: VisionModel, outputs) -> None:
    top = model.top_k(outputs["coffee"]["probs"], 5)
    assert COFFEE_CLASSES & {label for label, _ in top}, top


def test_outputs_shapes_and_invariants(outputs) -> None:
    for name, o in outputs.items():
        assert o["probs"].shape == (1000,) and abs(float(o["probs"].sum()) - 1.0) < 1e-4, name
        assert o["features"].shape == (1280,) and np.isfinite(o["features"]).all(), name
        assert o["embed"].shape == (384,), name
        assert abs(float(np.linalg.norm(o["embed"])) - 1.0) < 1e-4, name


def test_batch_equals_single(model: VisionModel, outputs) -> None:
    single = model.infer(model.preprocess(_frame("motorcycle"))[None])
    np.testing.assert_allclose(single.probs[0], outputs["motorcycle"]["probs"], atol=1e-5)
    np.testing.assert_allclose(single.embed[0], outputs["motorcycle"]["embed"], atol=1e-5)


def test_top_k_is_sorted_and_bounded(model: VisionModel, outputs) -> None:
    top = model.top_k(outputs["coffee"]["probs"], 5)
    assert len(top) == 5
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True)
    assert model.top_k(outputs["coffee"]["probs"], 0) == []


def test_embed_lands_near_the_right_sentence(bundle_dir: Path, outputs) -> None:
    """Photos in the shared space: each is closest to its own sentence among the others."""
    from perceptd.daemon.inference.text import TextModel

    text = TextModel(bundle_dir / "text.onnx", bundle_dir / "text_tokenizer.json")
    sentences = {
        "cat": "a cat is here",
        "coffee": "a cup of coffee",
        "motorcycle": "a motorbike",
        "rocket": "a rocket launch",
    }
    s = text.embed(list(sentences.values()))
    cos = {n: s @ outputs[n]["embed"] for n in sentences}
    assert cos["cat"][0] > 0.5, cos["cat"]
    for i, name in enumerate(sentences):
        assert int(np.argmax(cos[name])) == i, (name, cos[name])
