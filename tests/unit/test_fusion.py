"""The ONNX fusion head: weights are an explanation that sums to 1, absent means absent,
and the default vocabulary ranks real commands right (polarity included)."""

from __future__ import annotations

import numpy as np
import pytest

from perceptd.daemon.fusion.head import FusionModel
from perceptd.daemon.fusion.space import MODALITIES, compile_events
from perceptd.daemon.inference.text import TextModel

TEXT = MODALITIES.index("text")


@pytest.fixture(scope="module")
def text_model(bundle) -> TextModel:
    return TextModel(bundle.model_path("text"), bundle.file("text_tokenizer.json"))


@pytest.fixture(scope="module")
def space(bundle, default_config, text_model):
    return compile_events(default_config.events, text_model.embed, bundle)


@pytest.fixture(scope="module")
def head(bundle) -> FusionModel:
    return FusionModel(bundle.model_path("fusion"))


def _text_scores(text: str, text_model, head, space) -> dict[str, float]:
    x = np.zeros((len(MODALITIES), 384), np.float32)
    x[TEXT] = text_model.embed([text])[0]
    mask = np.zeros(len(MODALITIES), np.float32)
    mask[TEXT] = 1
    r = head.fuse(x, mask, space)
    return dict(zip(space.names, r.scores[0].tolist(), strict=True))


@pytest.mark.parametrize(
    ("text", "event"),
    [
        ("switch the lamp on", "lights_on"),
        ("what a lovely song, play it again", "play_music"),
        ("switch the lamp off", "lights_off"),
        ("turn off the lights please", "lights_off"),
        ("take me to the nearest gas station", "start_navigation"),
        ("volume up", "volume_up"),
        ("volume down", "volume_down"),
    ],
)
def test_commands_rank_first(text: str, event: str, text_model, head, space) -> None:
    scores = _text_scores(text, text_model, head, space)
    best = max(scores, key=scores.get)
    assert best == event, sorted(scores.items(), key=lambda kv: -kv[1])[:3]


def test_on_off_pair_fires_only_the_right_one(text_model, head, space, default_config) -> None:
    thr = {e.name: e.threshold_on for e in default_config.events}
    scores = _text_scores("switch the lamp off", text_model, head, space)
    assert scores["lights_off"] >= thr["lights_off"]
    assert scores["lights_on"] < thr["lights_on"]


def test_unrelated_sentence_fires_nothing(text_model, head, space, default_config) -> None:
    thr = {e.name: e.threshold_on for e in default_config.events}
    for text in ["what's the weather like", "good morning", "I had pasta for lunch"]:
        scores = _text_scores(text, text_model, head, space)
        assert all(scores[n] < thr[n] for n in scores), (text, scores)


def test_weights_sum_to_one_over_present_modalities(text_model, head, space) -> None:
    rng = np.random.default_rng(0)
    x = text_model.embed(["a cat", "a person's face", "a dog barking", "turn on the lights"])
    for mask in ([1, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1], [1, 0, 0, 0]):
        m = np.array(mask, np.float32)
        r = head.fuse(x, m, space)
        w = r.weights[0]  # [E,M]
        usable = space.allowed * m[None, :]
        has_any = usable.sum(-1) > 0
        np.testing.assert_allclose(w[has_any].sum(-1), 1.0, atol=1e-5)
        assert np.all(w[:, m == 0] == 0)
        assert np.all(r.scores[0][~has_any] == 0)
        # whatever sits in an absent slot changes nothing
        x2 = x.copy()
        x2[m == 0] = rng.normal(size=(int((m == 0).sum()), 384)).astype(np.float32)
        r2 = head.fuse(x2, m, space)
        np.testing.assert_allclose(r2.scores, r.scores, atol=1e-6)
        np.testing.assert_allclose(r2.weights, r.weights, atol=1e-6)


def test_weights_follow_the_evidence(text_model, head, space) -> None:
    """With a cat-like vision vector and a command text, cat_present leans on vision and
    lights_on on text: the weights explain which input drove each event."""
    x = np.zeros((len(MODALITIES), 384), np.float32)
    x[MODALITIES.index("vision")] = text_model.embed(["a photo of a tabby cat"])[0]
    x[MODALITIES.index("audio")] = text_model.embed(["speech"])[0]
    x[TEXT] = text_model.embed(["turn on the lights"])[0]
    mask = np.array([1, 0, 1, 1], np.float32)
    r = head.fuse(x, mask, space)
    cat = space.index("cat_present")
    lights = space.index("lights_on")
    assert r.weights[0, cat, MODALITIES.index("vision")] > 0.9
    assert r.weights[0, lights, TEXT] > 0.9
    assert r.scores[0, cat] > 0.5 and r.scores[0, lights] > 0.5
