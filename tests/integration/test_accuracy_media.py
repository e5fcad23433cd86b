"""Events on real recordings and photos (media/, fetched from packages at set-up; sources and
licences in samples/LICENSES.md): confusable sounds stay apart, a weak modality does not
override a confident one, and a sound event declared by prompt alone fires on its own sound.

Everything runs through `perceptd probe`'s path (the ONNX bundle, fused like the daemon)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perceptd.daemon.config import load_config
from perceptd.daemon.inference.models import load_models
from perceptd.daemon.inference.session import SessionOptions
from perceptd.daemon.probe import run_probe

REPO = Path(__file__).resolve().parents[2]
MEDIA = REPO / "media"


@pytest.fixture(scope="module")
def media() -> dict:
    path = MEDIA / "manifest.json"
    if not path.exists():
        pytest.fail(f"{path} missing: scripts/setup.sh fetches the evaluation media")
    return json.loads(path.read_text(encoding="utf-8"))


def _clips(media: dict, label: str) -> list[Path]:
    return [REPO / s["path"] for s in media["sounds"] if s["label"] == label]


def _image(media: dict, name: str) -> Path:
    return next(REPO / i["path"] for i in media["images"] if Path(i["path"]).name == name)


@pytest.fixture(scope="module")
def default_probe(default_config, bundle):
    models = load_models(bundle, default_config.events, SessionOptions("cpu", 1))

    def probe(image: Path | None = None, audio: Path | None = None) -> set[str]:
        res, _ = run_probe(default_config, str(image) if image else None,
                           str(audio) if audio else None, None, models=models, speech=False)
        return {n for n, e in res.events.items() if e["fires"]}

    return probe


def _fraction(paths: list[Path], probe, want: str, never: set[str]) -> tuple[float, list]:
    wrong = []
    right = 0
    for p in paths:
        fired = probe(audio=p)
        right += want in fired
        if fired & never:
            wrong.append((p.name, sorted(fired)))
    return right / len(paths), wrong


@pytest.mark.parametrize(("label", "event", "rival"), [
    ("dog", "dog_barking", "cat_present"),
    ("doorbell", "doorbell", "alarm_sounding"),
    ("alarm", "alarm_sounding", "doorbell"),
    ("music", "music_playing", "speech"),
    ("speech", "speech", "music_playing"),
])
def test_confusable_sounds_stay_apart(media, default_probe, label, event, rival) -> None:
    clips = _clips(media, label)
    assert clips, f"no {label} clips in media/"
    recall, wrong = _fraction(clips, default_probe, event, {rival})
    assert recall >= 0.8, f"{label}: {event} fired on {recall:.0%} of {len(clips)} clips"
    assert not wrong, f"{label} clips fired the rival {rival}: {wrong}"


def test_animal_sounds_fire_no_cat(media, default_probe) -> None:
    """A real dog, cow, horse, duck or rooster is not a cat (the tagger's 'Animal' is no
    evidence): before class relevance, cat_present fired on most of them."""
    others = [p for k in ("dog", "cow", "horse", "duck", "chicken", "sheep", "pig")
              for p in _clips(media, k)]
    fired = [p.name for p in others if "cat_present" in default_probe(audio=p)]
    assert len(others) >= 15
    assert not fired, fired


def test_contradiction_photo_and_sound(media, default_probe, samples_dir) -> None:
    """The espresso photo with a real barking dog: no cat is announced (vision is sure it is a
    coffee, audio hears a dog, not a cat), the bark is; the cat photo with the same bark: both."""
    dog = _clips(media, "dog")[0]
    coffee = default_probe(image=samples_dir / "images" / "coffee.jpg", audio=dog)
    assert "cat_present" not in coffee and "dog_barking" in coffee, coffee
    cat = default_probe(image=samples_dir / "images" / "cat.jpg", audio=dog)
    assert {"cat_present", "dog_barking"} <= cat, cat


def test_photos_raise_their_event_only(media, default_probe) -> None:
    cats = [REPO / i["path"] for i in media["images"] if i["label"] == "cat"]
    negatives = [REPO / i["path"] for i in media["images"]
                 if i["label"] in ("landscape", "food", "kitchenware", "object")]
    assert cats and len(negatives) >= 10
    assert all("cat_present" in default_probe(image=p) for p in cats)
    fired = {p.name: sorted(f) for p in negatives if (f := default_probe(image=p))}
    assert not fired, fired


def test_prompt_only_sound_events(media, tmp_path, default_config, bundle) -> None:
    """Sound events declared by a prompt alone (no training): each class's clips fire their
    own event and not the confusable one."""
    cfg_text = (REPO / "config.yaml").read_text(encoding="utf-8")
    head, _, _ = cfg_text.partition("\nevents:")
    sounds = {"cow_mooing": "a cow mooing", "horse_neighing": "a horse neighing",
              "duck_quacking": "a duck quacking", "rooster_crowing": "a rooster crowing",
              "sheep_bleating": "a sheep bleating"}
    events = "\nevents:\n" + "".join(
        f'  - {{name: {n}, prompts: ["{p}"], modalities: [audio], threshold_on: 0.7, '
        f'threshold_off: 0.5}}\n' for n, p in sounds.items())
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(head.replace("dir: bundle\n", f"dir: {REPO / 'bundle'}\n") + events,
                        encoding="utf-8")
    cfg = load_config(cfg_path)
    models = load_models(bundle, cfg.events, SessionOptions("cpu", 1))
    own = {"cow": "cow_mooing", "horse": "horse_neighing", "duck": "duck_quacking",
           "sheep": "sheep_bleating"}
    right = total = 0
    bad = []
    for label, event in own.items():
        for p in _clips(media, label):
            res, _ = run_probe(cfg, None, str(p), None, models=models, speech=False)
            fired = {n for n, e in res.events.items() if e["fires"]}
            total += 1
            right += fired == {event}
            if fired - {event}:
                bad.append((p.name, sorted(fired)))
    assert total >= 10
    assert not bad, bad
    assert right / total >= 0.8, f"{right}/{total}"
