"""Trigger decisions and rate caps (pure logic), and the samples config section."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from perceptd.daemon.config import ConfigError, parse_config
from perceptd.daemon.events.config import EventConfig
from perceptd.daemon.samples.config import CapsConfig, SamplesConfig, TriggersConfig
from perceptd.daemon.samples.triggers import Candidate, RateCaps, TriggerPolicy, disagreement

EVENTS = [
    EventConfig(name="cat_present", prompts=["a cat"], modalities=["vision", "audio"]),
    EventConfig(name="lights_on", kind="command", prompts=["turn on the lights"],
                modalities=["text", "audio"]),
]


def policy(**kw) -> TriggerPolicy:
    return TriggerPolicy(TriggersConfig(**kw), CapsConfig(), EVENTS, random.Random(0))


def test_low_confidence_band_around_threshold() -> None:
    p = policy(band=0.1)
    ms, use = np.array([0.5, 0, 0.5, 0]), np.array([1, 0, 1, 0])
    assert p.assess("cat_present", 0.45, ms, use) == Candidate("low_confidence", "cat_present")
    assert p.assess("cat_present", 0.61, ms, use) is None
    assert policy(low_confidence=False).assess("cat_present", 0.5, ms, use) is None


def test_disagreement_needs_two_used_modalities() -> None:
    assert disagreement(np.array([0.9, 0, 0.1, 0]), np.array([1, 0, 1, 0]), 0.8, 0.2)
    assert not disagreement(np.array([0.9, 0, 0.1, 0]), np.array([1, 0, 0, 0]), 0.8, 0.2)
    assert not disagreement(np.array([0.9, 0, 0.5, 0]), np.array([1, 0, 1, 0]), 0.8, 0.2)
    p = policy()
    c = p.assess("cat_present", 0.95, np.array([0.95, 0, 0.05, 0]), np.array([1, 0, 1, 0]))
    assert c == Candidate("disagreement", "cat_present")


def test_command_start_labels_its_context() -> None:
    p = policy()
    c = p.on_start("lights_on", 0.9, np.zeros(4), np.array([0, 0, 1, 1]))
    assert c == Candidate("command", "lights_on", "lights_on")
    assert policy(command=False).on_start("lights_on", 0.9, np.zeros(4), np.ones(4)) is None


def test_min_interval_and_caps() -> None:
    p = TriggerPolicy(TriggersConfig(min_interval_s=10), CapsConfig(
        per_hour=3, per_trigger_per_hour={"low_confidence": 2}), EVENTS)
    c = Candidate("low_confidence", "cat_present")
    assert p.admit(c, 0.0) and not p.admit(c, 5.0) and p.admit(c, 11.0)
    assert not p.admit(c, 30.0)  # per-trigger cap 2 per hour
    assert p.rejected["cap:low_confidence"] == 1 and p.rejected["interval:low_confidence"] == 1
    label = Candidate("label", "cat_present", "cat_present")
    assert p.admit(label, 31.0)  # labels skip the interval; total cap 3 now full
    assert not p.admit(label, 32.0)
    assert p.admit(c, 3600.0 + 11.0)  # the hour slid


def test_rate_caps_sliding_window() -> None:
    caps = RateCaps(CapsConfig(per_hour=100, per_trigger_per_hour={"random": 2}), window_s=10)
    assert [caps.allow("random", t) for t in (0, 1, 2, 11, 12)] == [True, True, False, True, True]


def test_random_trigger_rate() -> None:
    p = policy(random_per_hour=3600)  # one per second on average
    hits = sum(p.random_due(t * 0.1) for t in range(10 * 600))
    assert 450 < hits < 750
    assert not any(policy(random_per_hour=0).random_due(t) for t in range(100))


def test_samples_config_defaults_resolve_against_the_config_file(tmp_path: Path) -> None:
    cfg = parse_config({"samples": {"encryption": {"enabled": True}}}, base_dir=tmp_path)
    assert cfg.samples.dir == tmp_path / "state" / "samples"
    assert cfg.samples.encryption.key_file == tmp_path / "state" / "samples.key"
    assert cfg.samples.raw_media.frames is False and cfg.samples.enabled
    assert SamplesConfig().retention.keep_labelled


@pytest.mark.parametrize("bad, field", [
    ({"caps": {"per_trigger_per_hour": {"sometimes": 3}}}, "samples.caps"),
    ({"triggers": {"confident": 0.2, "contradicting": 0.5}}, "samples.triggers"),
    ({"retention": {"max_bytes": -1}}, "samples.retention.max_bytes"),
    ({"unknown": 1}, "samples.unknown"),
])
def test_bad_samples_config_names_the_field(bad, field) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"samples": bad})
    assert any(line.startswith(field) for line in err.value.lines), err.value.lines
