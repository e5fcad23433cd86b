"""config.yaml validation: the default passes, every mistake is one line naming the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from perceptd.daemon.config import ConfigError, load_config

REQUIRED_EVENTS = {
    "person_present", "dog_barking", "cat_present", "baby_crying", "doorbell", "glass_breaking",
    "alarm_sounding", "speech", "music_playing", "lights_on", "lights_off", "play_music",
    "start_navigation",
}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perceptd", *args], capture_output=True, text=True, timeout=60
    )


def test_default_config_is_valid_and_has_the_vocabulary(default_config) -> None:
    names = {e.name for e in default_config.events}
    assert REQUIRED_EVENTS <= names
    for e in default_config.events:
        assert e.prompts and e.modalities and e.threshold_off <= e.threshold_on


def test_check_config_ok(repo_root: Path) -> None:
    r = _cli("check-config", "-c", str(repo_root / "config.yaml"))
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout and "events" in r.stdout


@pytest.mark.parametrize(
    ("yaml_text", "field", "value"),
    [
        ("runtime:\n  device: tpu\n", "runtime.device", "'tpu'"),
        ("runtime:\n  intra_op_threads: 0\n", "runtime.intra_op_threads", "0"),
        ("runtime:\n  gpu_resize: maybe\n", "runtime.gpu_resize", "'maybe'"),
        ("fusion:\n  tick_ms: fast\n", "fusion.tick_ms", "'fast'"),
        ("colour: blue\n", "colour", "'blue'"),
        ("pipeline:\n  audio: {policy: latest}\n", "pipeline.audio", "'latest' is for frames"),
        ("pipeline:\n  fusion: {max_age_ms: 100}\n", "pipeline.fusion", "max_age_ms"),
        ("vision:\n  deadline_ms: -5\n", "vision.deadline_ms", "-5"),
        (
            "events:\n - name: a\n   prompts: [x]\n   modalities: [smell]\n",
            "events[0].modalities[0]",
            "'smell'",
        ),
        (
            "events:\n - name: a\n   prompts: [x]\n   modalities: [text]\n"
            "   threshold_on: 0.3\n   threshold_off: 0.6\n",
            "events[0]",
            "threshold_off",
        ),
    ],
)
def test_check_config_names_the_field(tmp_path: Path, yaml_text: str, field: str, value: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    r = _cli("check-config", "-c", str(cfg))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), r.stderr
    assert any(field in line and value in line for line in lines), r.stderr
    assert "Traceback" not in r.stderr


def test_duplicate_event_names_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "events:\n"
        " - {name: a, prompts: [x], modalities: [text]}\n"
        " - {name: a, prompts: [y], modalities: [text]}\n"
    )
    with pytest.raises(ConfigError, match="duplicate event name 'a'"):
        load_config(cfg)


def test_broken_yaml_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("runtime: [\n")
    r = _cli("check-config", "-c", str(cfg))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "not valid YAML at line" in r.stderr


def test_schema_is_json_schema() -> None:
    r = _cli("check-config", "--schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert schema["additionalProperties"] is False
    assert "events" in schema["properties"]


def test_errors_name_the_event_and_hint_misspelled_fields(tmp_path: Path) -> None:
    """Issue 18: `events[0] (cat_present): …` instead of a cut-off dict, and "did you mean"."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "fusion:\n  tick_msec: 50\n"
        "sources:\n  cameras:\n    - {id: cam0, uri: /dev/video0, fsp: 10}\n"
        "events:\n"
        "  - {name: cat_present, prompts: [a cat], modalities: [vision], require: [audio]}\n"
        "  - {name: dog, prompts: [a dog], modalites: [vision]}\n"
    )
    r = _cli("check-config", "-c", str(cfg))
    assert r.returncode == 2
    lines = [ln.removeprefix(f"error: {cfg}: ") for ln in r.stderr.strip().splitlines()]
    assert "fusion.tick_msec: unknown field; did you mean tick_ms? (value 50)" in lines, lines
    assert "sources.cameras[0].fsp (cam0): unknown field; did you mean fps? (value 10)" in lines, lines
    assert ("events[0] (cat_present): require ['audio'] must also be listed in modalities"
            in lines), lines
    assert "events[1].modalities (dog): required field missing" in lines, lines
    assert any(ln.startswith("events[1].modalites (dog): unknown field; did you mean modalities?")
               for ln in lines), lines
    assert not any("{" in ln for ln in lines), lines  # no dict dumped into a line
