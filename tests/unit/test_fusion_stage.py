"""The fusion stage judges each command on its own words (real bundle: text encoder, command
matcher, ONNX fusion head), whatever other source's command is newer on the timeline; and its
events flow one way: fusion -> sample tap (sample id stamped) -> publish queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from perceptd.daemon.bundle import verify_bundle
from perceptd.daemon.fusion.fused import PublishSink
from perceptd.daemon.fusion.timeline import ModalityOutput
from perceptd.daemon.inference.models import load_models
from perceptd.daemon.inference.session import SessionOptions
from perceptd.daemon.pipeline.fusion_stage import FusionStage
from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.pipeline.text_stage import TextCommand, TextStage
from perceptd.daemon.samples.config import SamplesConfig
from perceptd.daemon.samples.logger import SampleLogger
from perceptd.daemon.samples.store import SampleStore
from perceptd.daemon.samples.tap import SampleTap

S = 1_000_000_000


@pytest.fixture(scope="module")
def stage_parts(bundle_dir, default_config):
    cfg = default_config
    models = load_models(verify_bundle(bundle_dir), cfg.events, SessionOptions("cpu", 1), False)
    return cfg, (lambda: models)


def _outputs(stage_parts, *commands: TextCommand) -> list[ModalityOutput]:
    """What the text stage hands to fusion for these commands."""
    cfg, models = stage_parts
    q: BoundedQueue[ModalityOutput] = BoundedQueue("fusion", 16, "block")
    prompts = [list(e.prompts) for e in cfg.events]
    TextStage(BoundedQueue("commands", 4, "block"), q, models, prompts).process(list(commands))
    return [q.get(timeout=1) for _ in commands]


def _run(stage_parts, steps: list[tuple[int, list[ModalityOutput]]],
         samples: SampleLogger | None = None) -> list:
    """Fusion's messages as the publish queue got them; with `samples`, wired as the daemon
    does with logging on: fusion -> sample tap -> publish queue, rows to `on_evaluate`."""
    cfg, models = stage_parts
    publish: BoundedQueue = BoundedQueue("publish", 1024, "block")
    fusion = FusionStage(BoundedQueue("in", 4, "block"), publish, models, cfg.events,
                         sink=SampleTap(samples, PublishSink(publish)) if samples else None,
                         on_evaluate=samples.on_evaluate if samples else None)
    for now, items in steps:
        fusion.step(items, now)
    out = []
    while (item := publish.get(timeout=0)) is not None:
        out.append(item.payload)
    return out


def test_an_older_spoken_command_is_judged_on_its_own_words(stage_parts) -> None:
    """Spoken "turn on the kitchen lights" is stamped at the end of speech (t=10 s) and reaches
    fusion after a typed "play some music" (t=10.5 s) from another source: it still becomes
    lights_on, and lights_on fires, though the newest text on the timeline is the typed one."""
    typed, spoken = _outputs(stage_parts, TextCommand("play some music", "control", 10 * S + S // 2),
                             TextCommand("turn on the kitchen lights", "speech", 10 * S, "mic0"))
    msgs = _run(stage_parts, [(10 * S + S // 2, [typed]), (11 * S, [spoken])])
    verdicts = {m.text: m for m in msgs if m.topic == "command"}
    assert verdicts["play some music"].event == "play_music"
    assert verdicts["turn on the kitchen lights"].accepted
    assert verdicts["turn on the kitchen lights"].event == "lights_on"
    starts = [m.event for m in msgs if m.topic.startswith("event.") and m.phase == "start"]
    assert "lights_on" in starts and "play_music" in starts


def test_a_command_older_than_its_window_is_refused(stage_parts) -> None:
    """A transcript that reaches fusion after its window closed becomes nothing: it never
    borrows the event of whatever other command is in the window."""
    typed, late = _outputs(stage_parts, TextCommand("play some music", "control", 20 * S),
                           TextCommand("turn on the kitchen lights", "speech", 10 * S, "mic0"))
    msgs = _run(stage_parts, [(20 * S, [typed]), (20 * S + S // 10, [late])])
    verdicts = {m.text: m for m in msgs if m.topic == "command"}
    assert verdicts["turn on the kitchen lights"].accepted is False
    assert verdicts["turn on the kitchen lights"].event is None


def _commands_only(tmp_path: Path) -> SamplesConfig:
    """Samples on, only the command and label triggers (no low-confidence, random, ...)."""
    return SamplesConfig.model_validate({
        "enabled": True, "dir": str(tmp_path / "samples"), "encryption": {"enabled": False},
        "triggers": {"low_confidence": False, "disagreement": False, "random_per_hour": 0}})


def test_a_sampled_event_reaches_the_publisher_with_the_id_its_sample_is_written_under(
        stage_parts, tmp_path: Path) -> None:
    """Fusion hands the lights_on start to the sample tap and takes nothing back: the tap
    stamps the id of the command sample it took, the message reaches the publish queue with
    it, and the writer thread stores the sample under that id, labelled with the event.  A
    `label now` request is served by the same evaluation through `on_evaluate`."""
    cfg, models = stage_parts
    logger = SampleLogger(_commands_only(tmp_path), cfg.events, models)
    assert logger.start()
    try:
        captured = logger.capture("lights_on")  # answered at once; fusion writes it later
        (spoken,) = _outputs(stage_parts, TextCommand("turn on the kitchen lights", "speech",
                                                      10 * S, "mic0"))
        msgs = _run(stage_parts, [(10 * S, [spoken]), (20 * S, [])], samples=logger)
    finally:
        logger.close()
    events = [m for m in msgs if m.topic.startswith("event.")]
    (start,) = [m for m in events if m.event == "lights_on" and m.phase == "start"]
    assert start.sample_id is not None
    sampled = {m.sample_id: m for m in events if m.sample_id is not None}
    kinds = {e.name: e.kind for e in cfg.events}
    assert all(m.phase == "start" and kinds[m.event] == "command" for m in sampled.values())
    with SampleStore(tmp_path / "samples") as store:
        sample = store.get(start.sample_id)
        assert (sample.trigger, sample.event, sample.labels) == ("command", "lights_on",
                                                                 {"lights_on": 1})
        assert store.get(captured).labels == {"lights_on": 1}
        assert {i.id for i in store.list()} == {*sampled, captured}  # each id on the wire is stored


def test_with_samples_off_fusion_hands_events_straight_to_the_publisher(stage_parts) -> None:
    (spoken,) = _outputs(stage_parts, TextCommand("turn on the kitchen lights", "speech",
                                                  10 * S, "mic0"))
    msgs = _run(stage_parts, [(10 * S, [spoken]), (20 * S, [])])
    events = [m for m in msgs if m.topic.startswith("event.")]
    assert ("lights_on", "start") in {(m.event, m.phase) for m in events}
    assert {m.sample_id for m in events} == {None}
