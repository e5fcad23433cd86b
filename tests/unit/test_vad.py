"""Silero VAD through the bundle's ONNX graph, and the segmenter's rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from perceptd.daemon.inference.session import SessionOptions
from perceptd.daemon.inference.vad import SpeechSegment, SpeechSegmenter, VadModel, detect_segments

SR = 16000
PAD_S = 1.0  # the sample WAVs are espeak-ng output padded with `sox ... pad 1 1`
EDGE_TOL_S = 0.150


def _read(path: Path) -> np.ndarray:
    pcm, sr = sf.read(str(path), dtype="float32")
    assert sr == SR
    return pcm


def true_speech_edges(pcm: np.ndarray) -> tuple[float, float]:
    """Where espeak's utterance really starts and ends, in seconds of the padded file.

    Rule: drop the 1.0 s pads (checked to be digital near-silence, |x| < 1e-3), split the raw
    espeak output into 10 ms frames, and call a frame "sound" when its RMS is within 40 dB of
    the loudest frame.  Start = 1.0 s + start of the first sound frame; end = 1.0 s + end of the
    last sound frame (espeak's own leading/trailing near-silence is thus excluded).
    """
    pad = int(PAD_S * SR)
    assert np.abs(pcm[:pad]).max() < 1e-3 and np.abs(pcm[-pad:]).max() < 1e-3
    raw = pcm[pad:-pad]
    frames = raw[: len(raw) // 160 * 160].reshape(-1, 160)
    db = 10.0 * np.log10((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(db > db.max() - 40.0)
    return PAD_S + loud[0] * 0.01, PAD_S + (loud[-1] + 1) * 0.01


@pytest.fixture(scope="module")
def vad_model(bundle_dir: Path) -> VadModel:
    pre = json.loads((bundle_dir / "manifest.json").read_text())["models"]["vad"]["preprocessing"]
    return VadModel(bundle_dir / "vad.onnx", pre, SessionOptions(device="cpu"))


def test_manifest_carries_the_streaming_constants(bundle_dir: Path) -> None:
    pre = json.loads((bundle_dir / "manifest.json").read_text())["models"]["vad"]["preprocessing"]
    assert (pre["sample_rate"], pre["chunk_samples"], pre["context_samples"]) == (16000, 512, 64)
    assert pre["state_shape"] == [2, "batch", 128]
    assert pre["neg_threshold"] < pre["threshold"]


def test_one_segment_at_the_true_speech_edges(samples_dir: Path, vad_model: VadModel) -> None:
    pcm = _read(samples_dir / "audio" / "turn_on_the_kitchen_lights.wav")
    start, end = true_speech_edges(pcm)
    assert 1.0 <= start < end <= len(pcm) / SR - 1.0
    segments = detect_segments(pcm, vad_model)
    assert len(segments) == 1, segments
    (s, e) = segments[0]
    assert abs(s - start) <= EDGE_TOL_S, (s, start)
    assert abs(e - end) <= EDGE_TOL_S, (e, end)


@pytest.mark.parametrize("name", ["switch_the_lamp_off", "navigate_home", "play_some_music"])
def test_other_commands_give_one_segment_each(samples_dir: Path, vad_model: VadModel, name: str) -> None:
    pcm = _read(samples_dir / "audio" / f"{name}.wav")
    start, end = true_speech_edges(pcm)
    segments = detect_segments(pcm, vad_model)
    assert len(segments) == 1, segments
    assert abs(segments[0][0] - start) <= EDGE_TOL_S and abs(segments[0][1] - end) <= EDGE_TOL_S


def test_silence_gives_no_segment_and_low_probabilities(samples_dir: Path, vad_model: VadModel) -> None:
    pcm = _read(samples_dir / "audio" / "silence.wav")
    assert detect_segments(pcm, vad_model) == []
    assert vad_model.probs(pcm).max() < 0.1


def test_speech_probabilities_are_high_inside_and_low_outside(samples_dir: Path, vad_model: VadModel) -> None:
    pcm = _read(samples_dir / "audio" / "turn_on_the_kitchen_lights.wav")
    start, end = true_speech_edges(pcm)
    p = vad_model.probs(pcm)
    t = (np.arange(len(p)) + 0.5) * 512 / SR
    assert p[t < start - 0.2].max() < 0.1
    assert np.median(p[(t > start + 0.1) & (t < end - 0.1)]) > 0.9


def test_batched_streams_equal_separate_streams(samples_dir: Path, vad_model: VadModel) -> None:
    """Three microphones through one batched step per chunk = each one run alone."""
    names = ["turn_on_the_kitchen_lights", "silence", "navigate_home"]
    pcms = [_read(samples_dir / "audio" / f"{n}.wav") for n in names]
    n = min(len(p) for p in pcms) // 512
    states = [vad_model.new_state() for _ in pcms]
    batched = np.stack(
        [vad_model.step(np.stack([p[i * 512 : (i + 1) * 512] for p in pcms]), states) for i in range(n)]
    )
    alone = np.stack([vad_model.probs(p[: n * 512]) for p in pcms], axis=1)
    np.testing.assert_allclose(batched, alone, atol=1e-6)
    # int16 input is scaled like float input
    s1, s2 = vad_model.new_state(), vad_model.new_state()
    chunk = pcms[0][20000:20512]
    as_int = np.round(chunk * 32768).astype(np.int16)[None]
    assert abs(vad_model.step(chunk[None], [s1])[0] - vad_model.step(as_int, [s2])[0]) < 1e-3


def test_state_reset_forgets_the_past(samples_dir: Path, vad_model: VadModel) -> None:
    pcm = _read(samples_dir / "audio" / "navigate_home.wav")
    state = vad_model.new_state()
    for i in range(60):
        vad_model.step(pcm[None, i * 512 : (i + 1) * 512], [state])
    assert np.abs(state.rnn).max() > 0
    state.reset()
    fresh = vad_model.new_state()
    chunk = pcm[None, :512]
    assert vad_model.step(chunk, [state])[0] == pytest.approx(vad_model.step(chunk, [fresh])[0], abs=1e-7)


# --- segmenter logic (no model) ---------------------------------------------------------------

CHUNK_S = 512 / SR  # 32 ms


def _probs(*runs: tuple[float, float]) -> list[float]:
    """(probability, seconds) runs -> one probability per 32 ms chunk."""
    return [p for p, sec in runs for _ in range(round(sec / CHUNK_S))]


def _segments(probs: list[float], **kw) -> list[SpeechSegment]:
    seg = SpeechSegmenter(**kw)
    out = seg.push_many(probs)
    last = seg.flush()
    return out + ([last] if last else [])


def test_segment_edges_include_padding() -> None:
    probs = _probs((0.0, 1.024), (0.9, 1.024), (0.0, 1.024))
    [s] = _segments(probs)
    assert s.start_sample == 32 * 512 - 480 and s.end_sample == 64 * 512 + 480
    assert s.start_s == pytest.approx(1.024 - 0.030) and s.end_s == pytest.approx(2.048 + 0.030)


def test_short_blips_are_dropped() -> None:
    assert _segments(_probs((0.0, 0.5), (0.9, 0.224), (0.0, 1.0))) == []  # 7 chunks = 224 ms
    assert len(_segments(_probs((0.0, 0.5), (0.9, 0.288), (0.0, 1.0)))) == 1  # 288 ms > 250 ms


def test_pauses_shorter_than_the_hangover_are_bridged() -> None:
    short_gap = _probs((0.9, 0.5), (0.1, 0.256), (0.9, 0.5), (0.0, 1.0))
    long_gap = _probs((0.9, 0.5), (0.1, 0.416), (0.9, 0.5), (0.0, 1.0))
    assert len(_segments(short_gap)) == 1
    assert len(_segments(long_gap)) == 2


def test_hysteresis_keeps_speech_between_the_thresholds() -> None:
    probs = _probs((0.0, 0.5), (0.9, 0.3), (0.4, 1.0), (0.9, 0.3), (0.0, 1.0))
    [s] = _segments(probs)
    assert s.duration_s > 1.6
    # a neg threshold equal to the threshold splits the same input
    assert len(_segments(probs, neg_threshold=0.5)) == 2


def test_segment_is_reported_when_the_hangover_ends() -> None:
    seg = SpeechSegmenter(min_silence_ms=300)
    reported_at = None
    for i, p in enumerate(_probs((0.9, 0.64), (0.0, 1.0))):
        if seg.push(p) is not None:
            reported_at = i
    first_silent = 20
    assert reported_at == first_silent + int(np.ceil(300 / (CHUNK_S * 1000)))
    assert not seg.in_speech


def test_pending_end_is_exposed_and_is_where_the_segment_closes() -> None:
    """Speculative recognition reads the pending end: the segment a close there would report
    is the one push reports after the hangover, unless speech resumes (then none is pending)."""
    seg = SpeechSegmenter(min_silence_ms=300)
    assert seg.pending_end is None and seg.pending_segment() is None
    assert seg.push_many(_probs((0.0, 0.32), (0.9, 0.64))) == []
    assert seg.pending_end is None and seg.pending_segment() is None  # speaking
    seg.push(0.1)  # first silent chunk: chunk 30
    assert seg.pending_end == 30 * 512
    pending = seg.pending_segment()
    assert pending == SpeechSegment(10 * 512 - 480, 30 * 512 + 480)
    seg.push(0.4)  # between the thresholds: still pending, same end
    assert seg.pending_end == 30 * 512
    seg.push(0.9)  # speech resumed: nothing pending
    assert seg.pending_end is None and seg.pending_segment() is None
    seg.push(0.1)
    assert seg.pending_end == 33 * 512
    pending = seg.pending_segment()
    closed = seg.push_many([0.0] * 12)
    assert closed == [pending] and pending == SpeechSegment(10 * 512 - 480, 33 * 512 + 480)
    assert seg.pending_end is None and seg.pending_segment() is None
    # too short to keep: nothing to speculate on
    seg.push_many(_probs((0.9, 0.16)))
    seg.push(0.0)
    assert seg.pending_end is not None and seg.pending_segment() is None


def test_open_speech_is_closed_by_flush() -> None:
    seg = SpeechSegmenter()
    assert seg.push_many(_probs((0.0, 0.32), (0.9, 0.64))) == []
    assert seg.in_speech and seg.speech_start_sample == 10 * 512
    last = seg.flush(total_samples=30 * 512 + 100)
    assert last is not None and last.end_sample == 30 * 512 + 100
    assert seg.flush() is None


def test_invalid_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="neg_threshold"):
        SpeechSegmenter(threshold=0.3, neg_threshold=0.5)


def test_from_preprocessing_uses_manifest_defaults_and_overrides() -> None:
    seg = SpeechSegmenter.from_preprocessing({"threshold": 0.6, "neg_threshold": 0.4}, threshold=0.7)
    assert (seg.threshold, seg.neg_threshold) == (0.7, 0.4)


def test_same_segments_as_silero_get_speech_timestamps() -> None:
    """Against the package's own offline rules on a random probability track."""
    import importlib.util

    pytest.importorskip("torch")
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        pytest.skip("silero-vad not installed")
    # load utils_vad alone: `import silero_vad` would set torch's thread count process-wide
    path = Path(spec.origin).parent / "utils_vad.py"
    mod_spec = importlib.util.spec_from_file_location("_silero_utils_vad", path)
    utils = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(utils)
    rng = np.random.default_rng(3)
    probs = np.clip(np.cumsum(rng.normal(0, 0.12, 3000)) % 2.0, 0, 1)
    probs = np.where(probs > 1, 2 - probs, probs).astype(float).tolist()
    ref = utils.get_speech_timestamps_from_probs(
        probs,
        threshold=0.5,
        neg_threshold=0.35,
        min_speech_duration_ms=250,
        min_silence_duration_ms=300,
        speech_pad_ms=30,
        audio_length_samples=len(probs) * 512,
    )
    ours = _segments(probs)
    assert len(ref) > 5
    assert [(s.start_sample, s.end_sample) for s in ours] == [(r["start"], r["end"]) for r in ref]
