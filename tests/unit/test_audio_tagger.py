"""YAMNet tagger through the bundle's ONNX graph on real speech, silence and a tone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from perceptd.daemon.inference.audio_tagger import AudioOutput, AudioTagger, top_k
from perceptd.daemon.inference.session import SessionOptions
from perceptd.daemon.inference.text import TextModel

SR = 16000


def _read(path: Path) -> np.ndarray:
    pcm, sr = sf.read(str(path), dtype="float32")
    assert sr == SR
    return pcm


def _manifest_entry(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / "manifest.json").read_text())["models"]["audio"]


@pytest.fixture(scope="module")
def tagger(bundle_dir: Path) -> AudioTagger:
    labels = json.loads((bundle_dir / "audio_labels.json").read_text())
    return AudioTagger(
        bundle_dir / "audio.onnx",
        _manifest_entry(bundle_dir)["preprocessing"],
        labels,
        SessionOptions(device="cpu"),
    )


def test_labels_and_preprocessing_in_the_bundle(bundle_dir: Path, tagger: AudioTagger) -> None:
    entry = _manifest_entry(bundle_dir)
    assert len(tagger.labels) == 521 and tagger.labels[0] == "Speech" and "Silence" in tagger.labels
    pre = entry["preprocessing"]
    assert (pre["window_samples"], pre["hop_samples"], pre["fft_size"], pre["mel_bins"]) == (
        400,
        160,
        512,
        64,
    )
    assert (pre["patch_frames"], pre["patch_hop_frames"], pre["log_offset"]) == (96, 48, 0.001)
    assert "MIT" in entry["source"]["license"] and "w-hc/torch_audioset" in entry["source"]["license"]


def test_speech_is_tagged_speech(samples_dir: Path, tagger: AudioTagger) -> None:
    """Every patch that lies mostly inside the utterance (1.04-2.30 s by energy) has Speech in
    its top 3."""
    pcm = _read(samples_dir / "audio" / "turn_on_the_kitchen_lights.wav")
    patches = tagger.patches(pcm)
    starts = np.arange(len(patches)) * 0.48
    inside = [i for i, s in enumerate(starts) if min(s + 0.975, 2.30) - max(s, 1.04) > 0.6]
    assert len(inside) >= 2
    out = tagger.infer(patches[inside])
    for row in tagger.top_k(out.scores, k=3):
        assert "Speech" in [label for label, _ in row], row


def test_silence_is_tagged_silence(samples_dir: Path, tagger: AudioTagger) -> None:
    out = tagger.infer(tagger.patches(_read(samples_dir / "audio" / "silence.wav")))
    assert len(out) >= 3
    for row in tagger.top_k(out.scores, k=1):
        assert row[0][0] == "Silence" and row[0][1] > 0.5, row


def test_a_1khz_tone_is_a_beep_or_sine(tagger: AudioTagger) -> None:
    t = np.arange(2 * SR) / SR
    out = tagger.infer(tagger.patches((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)))
    for row in tagger.top_k(out.scores, k=3):
        assert {"Beep, bleep", "Sine wave"} & {label for label, _ in row}, row


def test_outputs_shapes_norms_and_batch_independence(samples_dir: Path, tagger: AudioTagger) -> None:
    pcm = np.concatenate(
        [_read(samples_dir / "audio" / f"{n}.wav") for n in ("navigate_home", "play_some_music")]
    )
    patches = tagger.patches(pcm)[:8]
    out = tagger.infer(patches)
    assert isinstance(out, AudioOutput)
    assert out.scores.shape == (8, 521) and out.embeddings.shape == (8, 1024) and out.embed.shape == (8, 384)
    assert np.all((out.scores >= 0) & (out.scores <= 1))
    np.testing.assert_allclose(np.linalg.norm(out.embed, axis=1), 1.0, atol=1e-5)
    one_by_one = [tagger.infer(p[None]) for p in patches]
    np.testing.assert_allclose(np.concatenate([o.scores for o in one_by_one]), out.scores, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([o.embed for o in one_by_one]), out.embed, atol=1e-5)
    empty = tagger.infer(patches[:0])
    assert empty.scores.shape == (0, 521) and empty.embed.shape == (0, 384)


def test_embed_lands_near_the_right_sentence(
    samples_dir: Path, bundle_dir: Path, tagger: AudioTagger
) -> None:
    """The audio vector lives in the MiniLM space: speech is nearest 'someone is speaking',
    silence nearest 'it is completely silent', among everyday sound descriptions."""
    text = TextModel(
        bundle_dir / "text.onnx", bundle_dir / "text_tokenizer.json", SessionOptions(device="cpu")
    )
    sentences = [
        "someone is speaking",
        "a dog is barking",
        "music is playing",
        "the doorbell is ringing",
        "glass is breaking",
        "an alarm is going off",
        "a baby is crying",
        "it is completely silent",
    ]
    s = text.embed(sentences)
    speech = tagger.patches(_read(samples_dir / "audio" / "turn_on_the_kitchen_lights.wav"))[2:4]
    silence = tagger.patches(_read(samples_dir / "audio" / "silence.wav"))[:1]
    for patches, want in ((speech, "someone is speaking"), (silence, "it is completely silent")):
        cos = tagger.infer(patches).embed @ s.T
        for row in cos:
            assert sentences[int(row.argmax())] == want, dict(zip(sentences, row.round(2), strict=True))


def test_top_k_orders_by_probability() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.8, 0.0, 0.2, 0.1]], np.float32)
    labels = ["a", "b", "c", "d"]
    assert top_k(scores, labels, 3) == [
        [("b", pytest.approx(0.9)), ("d", pytest.approx(0.7)), ("c", pytest.approx(0.5))],
        [("a", pytest.approx(0.8)), ("c", pytest.approx(0.2)), ("d", pytest.approx(0.1))],
    ]
    assert [x[0] for x in top_k(scores[0], labels, 10)[0]] == ["b", "d", "c", "a"]


def test_class_texts_come_from_the_data_file_and_match_the_bundle(bundle_dir: Path) -> None:
    """models/data/audioset_class_sentences.json names real AudioSet classes, and the texts the
    export embeds from it are the bundle's audio_class_texts.json byte for byte."""
    from perceptd.models.audio_tagger import audioset_class_names, class_sentences, class_texts

    names = audioset_class_names()
    sentences = class_sentences()
    assert len(sentences) > 100
    assert set(sentences) <= set(names)
    exported = (bundle_dir / "audio_class_texts.json").read_bytes()
    assert json.dumps(class_texts(names), indent=0).encode() == exported  # as export/targets/audio.py
