"""pytest fixtures around the rigs; every child process is killed and reaped at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.rigs.ffmpeg_stream import FfmpegStream, StreamKind, ffmpeg_available, make_video
from tests.rigs.pulse import PulseMic, pulse_unavailable_reason

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(scope="session")
def test_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s, 30 fps, 640x480 H.264 MP4 of the cat photo (made once per session)."""
    if not ffmpeg_available():
        pytest.skip("ffmpeg is not installed")
    out = tmp_path_factory.mktemp("video") / "cat_2s.mp4"
    return make_video(SAMPLES / "images" / "cat.jpg", out, seconds=2.0)


@pytest.fixture
def ffmpeg_streams(tmp_path: Path) -> Iterator[Callable[..., FfmpegStream]]:
    """Factory: ``ffmpeg_streams(media, kind="udp"|"http")`` -> a started FfmpegStream."""
    if not ffmpeg_available():
        pytest.skip("ffmpeg is not installed")
    made: list[FfmpegStream] = []

    def make(media: Path | str, kind: StreamKind = "udp", **kw: object) -> FfmpegStream:
        stream = FfmpegStream(media, kind=kind, log_dir=tmp_path, **kw)  # type: ignore[arg-type]
        made.append(stream)
        return stream.start()

    yield make
    for stream in made:
        stream.stop()


@pytest.fixture
def pulse_mic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[PulseMic]:
    """A running private PulseAudio with virtual mic; this process's env points at it so
    that sounddevice's ``pulse`` device (``PulseMic.device``) reaches it."""
    reason = pulse_unavailable_reason()
    if reason:
        pytest.skip(reason)
    runtime = tmp_path / "pulse-runtime"
    runtime.mkdir()
    mic = PulseMic(runtime)
    for key, value in mic.env.items():
        monkeypatch.setenv(key, value)
    try:
        yield mic.start()
    finally:
        mic.close()
