"""`perceptd probe` through the real CLI and the ONNX bundle: photos, speech, sentences."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMG = REPO / "samples" / "images"
AUD = REPO / "samples" / "audio"
CAT_CLASSES = {"tabby cat", "tiger cat", "Egyptian Mau", "Persian cat", "Siamese cat"}
UNRELATED_TO_CAT = {"dog_barking", "baby_crying", "doorbell", "glass_breaking", "alarm_sounding",
                    "speech", "music_playing", "lights_on", "lights_off", "play_music",
                    "start_navigation", "person_present", "vehicle_nearby"}


def probe(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "perceptd", "probe", "-c", str(REPO / "config.yaml"),
                        *args, "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def cat() -> dict:
    return probe("--image", str(IMG / "cat.jpg"))


def test_cat_photo_is_a_cat(cat: dict) -> None:
    top5 = {label for label, _p in cat["modalities"]["vision"]["top"][:5]}
    assert top5 & CAT_CLASSES, top5
    ev = cat["events"]
    assert all(ev["cat_present"]["score"] > ev[n]["score"] for n in UNRELATED_TO_CAT)
    assert ev["cat_present"]["weights"] == pytest.approx({"vision": 1.0})
    assert cat["faces"] == []


def test_astronaut_has_a_face_box() -> None:
    out = probe("--image", str(IMG / "astronaut.jpg"))
    assert len(out["faces"]) == 1
    x1, y1, x2, y2 = out["faces"][0]["box"]
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 220
    assert out["ranking"][0] == "person_present"


def test_spoken_command_audio() -> None:
    out = probe("--audio", str(AUD / "turn_on_the_kitchen_lights.wav"))
    segs = out["speech_segments"]
    assert len(segs) == 1 and set(segs[0]) >= {"start", "end"}
    assert 0.85 <= segs[0]["start"] <= 1.25 and 2.1 <= segs[0]["end"] <= 2.6
    top3 = [label for label, _p in out["modalities"]["audio"]["top"][:3]]
    assert "Speech" in top3
    assert out["events"]["speech"]["fires"]


@pytest.mark.parametrize(("text", "event"), [("switch the lamp on", "lights_on"),
                                             ("what a lovely song, play it again", "play_music")])
def test_text_ranks_the_command_first(text: str, event: str) -> None:
    out = probe("--text", text)
    assert out["ranking"][0] == event


def test_inputs_fuse_together() -> None:
    out = probe("--image", str(IMG / "cat.jpg"), "--audio", str(AUD / "silence.wav"),
                "--text", "turn on the lights")
    ev = out["events"]
    assert set(ev["cat_present"]["weights"]) == {"vision", "audio"}
    assert sum(ev["cat_present"]["weights"].values()) == pytest.approx(1.0, abs=1e-5)
    assert ev["lights_on"]["fires"] and ev["lights_on"]["weights"]["text"] > 0.9
    assert not ev["lights_off"]["fires"]


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not a jpeg")
    r = subprocess.run([sys.executable, "-m", "perceptd", "probe", "-c", str(REPO / "config.yaml"),
                        "--image", str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [f"error: {bad}: not a readable image"]


@pytest.mark.parametrize("option", ["--image", "--audio"])
def test_missing_file_says_no_such_file(tmp_path: Path, option: str) -> None:
    """Issue 18: one line naming the file, before any model loads; no OpenCV [ WARN ] line."""
    missing = tmp_path / ("missing.jpg" if option == "--image" else "missing.wav")
    r = subprocess.run([sys.executable, "-m", "perceptd", "probe", "-c", str(REPO / "config.yaml"),
                        option, str(missing)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"error: {option} {missing}: no such file"]
