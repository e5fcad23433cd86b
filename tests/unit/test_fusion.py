"""The ONNX fusion head: weights are an explanation that sums to 1, absent means absent,
commands come from the one matcher, and modalities combine by reliability (a weak vote
never overrides a confident contradiction; agreement raises confidence)."""

from __future__ import annotations

import numpy as np
import pytest

from perceptd.daemon.commands.evidence import scores_to_logodds
from perceptd.daemon.commands.matcher import CommandMatcher
from perceptd.daemon.events.config import EventConfig
from perceptd.daemon.fusion.space import MODALITIES, compile_events
from perceptd.daemon.inference.fusion_head import FusionModel
from perceptd.daemon.inference.text import TextModel

V, F, A, T = (MODALITIES.index(m) for m in ("vision", "face", "audio", "text"))


@pytest.fixture(scope="module")
def text_model(bundle) -> TextModel:
    return TextModel(bundle.model_path("text"), bundle.file("text_tokenizer.json"))


@pytest.fixture(scope="module")
def space(bundle, default_config, text_model):
    return compile_events(default_config.events, text_model.embed, bundle)


@pytest.fixture(scope="module")
def head(bundle) -> FusionModel:
    return FusionModel(bundle.model_path("fusion"))


@pytest.fixture(scope="module")
def matcher(default_config, text_model) -> CommandMatcher:
    return CommandMatcher(default_config.events, text_model.embed)


def _labels(bundle, modality: str) -> list[str]:
    return bundle.labels(modality)


def _probs(labels: list[str], mass: dict[str, float]) -> np.ndarray:
    p = np.zeros(len(labels), np.float32)
    for name, v in mass.items():
        p[labels.index(name)] = v
    return p


def _row(**present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.zeros((1, len(MODALITIES), 384), np.float32)
    mask = np.zeros((1, len(MODALITIES)), np.float32)
    for name, vec in present.items():
        i = MODALITIES.index(name)
        x[0, i], mask[0, i] = vec, 1
    return x, mask


def _text_scores(text: str, text_model, head, space, matcher) -> dict[str, float]:
    x, mask = _row(text=text_model.embed([text])[0])
    te = np.zeros((1, len(space.names)), np.float32)
    for name, lo in scores_to_logodds(matcher.match(text).scores):
        te[0, space.index(name)] = lo
    r = head.fuse(x, mask, space, text_evidence=te)
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
        ("I'd like to hear some tunes", "play_music"),
    ],
)
def test_commands_fire_only_the_right_one(text: str, event: str, text_model, head, space, matcher,
                                          default_config) -> None:
    thr = {e.name: e.threshold_on for e in default_config.events}
    scores = _text_scores(text, text_model, head, space, matcher)
    fired = [n for n, s in scores.items() if s >= thr[n]]
    assert fired == [event], sorted(scores.items(), key=lambda kv: -kv[1])[:3]


@pytest.mark.parametrize("text", ["what's the weather like", "good morning", "turn on the television",
                                  "turn on the fan", "I had pasta for lunch"])
def test_near_misses_and_chatter_fire_nothing(text, text_model, head, space, matcher,
                                              default_config) -> None:
    thr = {e.name: e.threshold_on for e in default_config.events}
    scores = _text_scores(text, text_model, head, space, matcher)
    assert all(scores[n] < thr[n] for n in scores), (text, scores)


def test_weights_sum_to_one_over_present_modalities(bundle, text_model, head, space) -> None:
    rng = np.random.default_rng(0)
    x = text_model.embed(["a cat", "a person's face", "a dog barking", "turn on the lights"])
    pv = rng.dirichlet(np.full(1000, 0.1)).astype(np.float32)[None]
    pa = rng.uniform(0, 1, (1, 521)).astype(np.float32) ** 3
    for mask in ([1, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1], [1, 0, 0, 0]):
        m = np.array(mask, np.float32)
        r = head.fuse(x, m, space, pv, pa)
        w = r.weights[0]  # [E,M]
        usable = space.allowed * m[None, :]
        has_any = usable.sum(-1) > 0
        np.testing.assert_allclose(w[has_any].sum(-1), 1.0, atol=1e-5)
        assert np.all(w[:, m == 0] == 0)
        assert np.all(r.scores[0][~has_any] == 0)
        # whatever sits in an absent slot changes nothing
        x2 = x.copy()
        x2[m == 0] = rng.normal(size=(int((m == 0).sum()), 384)).astype(np.float32)
        r2 = head.fuse(x2, m, space, pv, pa)
        np.testing.assert_allclose(r2.scores, r.scores, atol=1e-6)
        np.testing.assert_allclose(r2.weights, r.weights, atol=1e-6)


def test_generic_parents_are_no_evidence(bundle, text_model, head, space) -> None:
    """A tagger that says Animal and 'Domestic animals' but no cat class is no cat: the
    mixture vector of such a tagger once sat near every animal prompt."""
    labels = _labels(bundle, "audio")
    pa = _probs(labels, {"Animal": 0.95, "Domestic animals, pets": 0.9, "Dog": 0.92, "Bark": 0.42})
    x, mask = _row(audio=text_model.embed(["a dog barks"])[0])
    r = head.fuse(x, mask, space, None, pa[None])
    s = dict(zip(space.names, r.scores[0].tolist(), strict=True))
    assert s["dog_barking"] >= 0.7 > s["cat_present"], s
    assert s["cat_present"] < 0.4


def test_weak_audio_does_not_override_confident_vision(bundle, text_model, head, space) -> None:
    """The demo's espresso: vision is sure it is a coffee, audio faintly animal."""
    v = _probs(_labels(bundle, "vision"), {"espresso": 0.9, "tea cup": 0.05})
    a = _probs(_labels(bundle, "audio"), {"Silence": 0.12, "Animal": 0.11, "Cat": 0.05})
    x, mask = _row(vision=text_model.embed(["a cup of espresso"])[0],
                   audio=text_model.embed(["silence"])[0])
    r = head.fuse(x, mask, space, v[None], a[None])
    cat = space.index("cat_present")
    assert r.scores[0, cat] < 0.2
    assert r.weights[0, cat, V] > r.weights[0, cat, A]  # the confident modality explains it


def test_agreement_raises_confidence_and_a_clear_sound_is_heard(bundle, text_model, head,
                                                                 space) -> None:
    lv, la = _labels(bundle, "vision"), _labels(bundle, "audio")
    cat = space.index("cat_present")
    xv = text_model.embed(["a cat"])[0]
    both = head.fuse(*_row(vision=xv, audio=xv), space, _probs(lv, {"tabby cat": 0.6})[None],
                     _probs(la, {"Cat": 0.8, "Meow": 0.7})[None]).scores[0, cat]
    vision_only = head.fuse(*_row(vision=xv), space, _probs(lv, {"tabby cat": 0.6})[None]).scores[0, cat]
    assert both > vision_only > 0.5
    # a cat heard clearly while the camera shows the garden: there is a cat
    off_camera = head.fuse(*_row(vision=xv, audio=xv), space, _probs(lv, {"daisy": 0.9})[None],
                           _probs(la, {"Cat": 0.95, "Meow": 0.9})[None]).scores[0, cat]
    assert off_camera >= 0.5


def test_combine_modes(bundle, text_model) -> None:
    """`combine: all` needs every modality, `any` the strongest one; both stay explained."""
    from perceptd.daemon.bundle import Bundle

    assert isinstance(bundle, Bundle)
    evs = [EventConfig(name=f"cat_{mode}", prompts=["a cat"], modalities=["vision", "audio"],
                       combine=mode) for mode in ("sum", "any", "all")]
    sp = compile_events(evs, text_model.embed, bundle)
    fm = FusionModel(bundle.model_path("fusion"))
    lv, la = _labels(bundle, "vision"), _labels(bundle, "audio")
    xv = text_model.embed(["a cat"])[0]
    r = fm.fuse(*_row(vision=xv, audio=xv), sp, _probs(lv, {"tabby cat": 0.95})[None],
                _probs(la, {"Silence": 0.9})[None])
    s = dict(zip(sp.names, r.scores[0].tolist(), strict=True))
    assert s["cat_any"] > 0.9 and s["cat_sum"] > 0.5 > s["cat_all"], s
    np.testing.assert_allclose(r.weights[0].sum(-1), 1.0, atol=1e-5)


def test_relevance_keeps_each_class_with_its_event(bundle, space) -> None:
    """Compiled once per vocabulary: the doorbell is the doorbell's, not the alarm's; a dog's
    bark is not a cat's; generic parents belong to nobody."""
    la, lv = _labels(bundle, "audio"), _labels(bundle, "vision")
    rel = {n: {la[j] for j in np.flatnonzero(space.rel_audio[i])} for i, n in enumerate(space.names)}
    assert "Doorbell" in rel["doorbell"] and "Doorbell" not in rel["alarm_sounding"]
    assert "Bark" in rel["dog_barking"] and "Bark" not in rel["cat_present"]
    assert {"Cat", "Meow"} <= rel["cat_present"]
    assert not any("Animal" in r or "Domestic animals, pets" in r for r in rel.values())
    vis = {lv[j] for j in np.flatnonzero(space.rel_vision[space.index("cat_present")])}
    assert "tabby cat" in vis and "espresso" not in vis
