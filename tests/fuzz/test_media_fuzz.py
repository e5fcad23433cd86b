"""Broken media through the real code paths: probe (image, audio, text) in-process and on the
command line, a camera source pointed at broken video files, WAV replay of broken files.  Every
input ends in a result or one clear error line; nothing else escapes."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.sources.base import SourceError, SourceState
from perceptd.daemon.sources.camera import CameraConfig, CameraSource
from perceptd.daemon.sources.wavfile import WavFileConfig, WavFileSource, load_audio
from perceptd.errors import UserError
from tests.fuzz.media import REPO, image_corpus, video_corpus, wav_corpus
from tests.rigs.ffmpeg_stream import ffmpeg_available, make_video


@pytest.fixture(scope="module")
def probe(default_config):
    from perceptd.daemon.probe import run_probe

    state = {"models": None}

    def run(**kw):
        res, state["models"] = run_probe(default_config, kw.get("image"), kw.get("audio"), kw.get("text"),
                                         models=state["models"], speech=False)
        return res

    return run


def test_broken_images_through_probe(probe, tmp_path) -> None:
    outcomes = {}
    for p in image_corpus(tmp_path):
        try:
            res = probe(image=str(p))
            assert np.isfinite([e["score"] for e in res.events.values()]).all(), p.name
            outcomes[p.name] = "ok"
        except UserError as exc:
            assert str(exc).count("\n") == 0 and p.name in str(exc)
            outcomes[p.name] = "error"
    assert outcomes["empty.jpg"] == outcomes["huge_png_header.png"] == "error"
    assert outcomes["gray.png"] == outcomes["truncated_35040.jpg"] == "ok"


def test_broken_wavs_through_loader_source_and_probe(probe, tmp_path) -> None:
    q: BoundedQueue = BoundedQueue("audio", 4, "drop_oldest")
    refused = set()
    for p in wav_corpus(tmp_path):
        try:
            pcm = load_audio(p)
        except SourceError as exc:
            assert str(exc).count("\n") == 0 and str(p) in str(exc)
            with pytest.raises(SourceError):
                WavFileSource(WavFileConfig(path=p), q)
            with pytest.raises(UserError):
                probe(audio=str(p))
            refused.add(p.name)
            continue
        assert pcm.dtype == np.float32 and pcm.ndim == 1 and np.isfinite(pcm).all()
        assert WavFileSource(WavFileConfig(path=p), q).n_chunks >= 1
        res = probe(audio=str(p))
        assert np.isfinite([e["score"] for e in res.events.values()]).all(), p.name
    assert {"zero_length.wav", "header_only.wav", "nan.wav", "inf.wav", "rate_1hz.wav",
            "garbage.wav", "empty_data.wav"} <= refused
    assert not {"rate_8000.wav", "rate_96000.wav", "six_channels.wav", "u8.wav"} & refused


def test_text_zero_length_and_huge(probe) -> None:
    with pytest.raises(UserError):
        probe(text="")
    with pytest.raises(UserError):
        probe(text=" \t\n")
    res = probe(text="turn on the lights " * 50_000)  # ~1 MB: the tokenizer truncates at 256
    assert np.isfinite(res.events["lights_on"]["score"])


@pytest.mark.skipif(not ffmpeg_available(), reason="ffmpeg is not installed")
def test_camera_on_broken_video_files(tmp_path) -> None:
    good = make_video(REPO / "samples" / "images" / "cat.jpg", tmp_path / "good.mp4", seconds=1.0,
                      fps=10, size=(160, 120))
    for p in video_corpus(tmp_path / "videos", good):
        q: BoundedQueue = BoundedQueue("frames", 1000, "drop_oldest")
        cfg = CameraConfig(id="cam", uri=str(p), fps=None, open_timeout_s=2, read_timeout_s=1,
                           backoff_initial_s=0.05, backoff_max_s=0.1, down_after_failures=2)
        src = CameraSource(cfg, q)
        src.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and src.running and src.stats.open_failures < 2:
            time.sleep(0.05)
        assert src.stop(5), p.name
        st = src.stats
        frames = q.get_batch(1000, 0, timeout=0.1)
        assert all(f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3
                   for f in frames), p.name
        if not frames:
            assert st.last_error and "\n" not in st.last_error, (p.name, st)
        assert st.state in (SourceState.DOWN, SourceState.RECONNECTING, SourceState.UP), p.name


def test_probe_cli_one_line_errors(tmp_path) -> None:
    paths = image_corpus(tmp_path / "img", flips=0)
    bad = [p for p in paths if p.name in ("empty.jpg", "huge_png_header.png")]
    wavs = [p for p in wav_corpus(tmp_path / "wav") if p.name == "nan.wav"]
    for args in [["--image", str(bad[1])], ["--audio", str(wavs[0])], ["--text", ""]]:
        res = subprocess.run([sys.executable, "-m", "perceptd", "probe", "-c", str(REPO / "config.yaml"),
                              *args], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert res.returncode != 0, args
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error")]
        assert len(lines) == 1 and "Traceback" not in res.stderr, (args, res.stderr[-500:])
