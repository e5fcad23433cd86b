"""Capture sources against real components: ffmpeg network cameras, video files, WAV
replay and a PulseAudio virtual microphone. No mocks; every wait has a deadline.

Fixtures come from tests/rigs/fixtures.py (``pytest_plugins`` in tests/conftest.py).
Measured figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf

from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.sources import (
    CHUNK_SAMPLES,
    SAMPLE_RATE,
    AudioChunk,
    Backoff,
    CameraConfig,
    CameraSource,
    Frame,
    MicrophoneConfig,
    MicrophoneSource,
    SourceError,
    SourceState,
    WavFileConfig,
    WavFileSource,
)
from perceptd.daemon.sources.camera import RateLimiter
from perceptd.daemon.sources.microphone import AudioRing
from perceptd.daemon.sources.wavfile import load_audio
from tests.rigs.ffmpeg_stream import FfmpegStream
from tests.rigs.pulse import PulseMic

SPEECH = "turn_on_the_kitchen_lights.wav"


# -- helpers ---------------------------------------------------------------------------
class StateLog:
    """Records every on_state call: (monotonic s, state, reason)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, SourceState, str]] = []
        self._lock = threading.Lock()

    def __call__(self, source_id: str, state: SourceState, reason: str) -> None:
        with self._lock:
            self.events.append((time.monotonic(), state, reason))

    def states(self) -> list[SourceState]:
        with self._lock:
            return [s for _, s, _ in self.events]


def wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def collect(q: BoundedQueue, n: int, timeout: float) -> list:
    """Up to n items, giving up at the deadline."""
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < n and (left := deadline - time.monotonic()) > 0:
        out.extend(q.get_batch(n - len(out), 0.05, timeout=min(left, 0.5)))
    return out


def drain(q: BoundedQueue) -> list:
    out: list = []
    while (item := q.get(timeout=0)) is not None:
        out.append(item)
    return out


def camera_cfg(uri: str, **kw: object) -> CameraConfig:
    base: dict[str, object] = {
        "id": "cam", "uri": uri, "fps": None, "open_timeout_s": 3.0, "read_timeout_s": 1.0,
        "backoff_initial_s": 0.2, "backoff_max_s": 1.0,
    }
    return CameraConfig(**{**base, **kw})


def check_frames(frames: list[Frame], expected: np.ndarray) -> float:
    """Shape, dtype, seq and timestamp order; returns the mean abs difference to the photo."""
    assert all(f.image.shape == (480, 640, 3) and f.image.dtype == np.uint8 for f in frames)
    seqs = [f.seq for f in frames]
    stamps = [f.t_capture_ns for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
    return float(np.abs(frames[-1].image.astype(np.int16) - expected.astype(np.int16)).mean())


def photo_640(samples_dir: Path, name: str = "cat.jpg") -> np.ndarray:
    img = cv2.imread(str(samples_dir / "images" / name))
    return cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA)


def normalized_xcorr_peak(signal: np.ndarray, template: np.ndarray) -> tuple[float, int]:
    """max over lags of <template, window> / (|template| |window|), and its lag."""
    x = template.astype(np.float64)
    y = signal.astype(np.float64)
    n = len(y) + len(x) - 1
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)
    corr = corr[: len(y) - len(x) + 1]
    energy = np.concatenate([[0.0], np.cumsum(y * y)])
    window = np.sqrt(energy[len(x):] - energy[: len(y) - len(x) + 1])
    ncc = corr / (np.linalg.norm(x) * np.maximum(window, 1e-12))
    lag = int(np.argmax(ncc))
    return float(ncc[lag]), lag


# -- pure helpers (fast) -----------------------------------------------------------------
def test_backoff_grows_caps_and_resets() -> None:
    b = Backoff(0.5, 4.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5
    j = Backoff(1.0, 1.0, jitter=0.5)
    assert all(0.5 <= j.next() <= 1.0 for _ in range(100))
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)


def test_rate_limiter_keeps_the_target_rate() -> None:
    rng = np.random.default_rng(0)
    src = (np.arange(300) * 1e9 / 30 + rng.normal(0, 4e6, 300)).astype(np.int64)  # 10 s @30
    for fps, lo, hi in [(10, 98, 102), (12, 115, 122), (30, 299, 300), (None, 300, 300)]:
        lim = RateLimiter(fps)
        kept = sum(lim.admit(int(t)) for t in src)
        assert lo <= kept <= hi, (fps, kept)


def test_audio_ring_keeps_the_latest_samples() -> None:
    ring = AudioRing(1000)
    data = np.arange(2600, dtype=np.float32)
    for i in range(0, 2600, 512):
        ring.write(data[i : i + 512])
    assert np.array_equal(ring.latest(700), data[-700:])
    assert np.array_equal(ring.latest(5000), data[-1000:])


def test_wav_loader_resamples_and_mixes_down(tmp_path: Path) -> None:
    t = np.arange(48_000) / 48_000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1)
    sf.write(tmp_path / "s.wav", (0.5 * stereo).astype(np.float32), 48_000)
    pcm = load_audio(tmp_path / "s.wav")
    assert pcm.dtype == np.float32 and len(pcm) == SAMPLE_RATE
    peak_hz = np.argmax(np.abs(np.fft.rfft(pcm))) * SAMPLE_RATE / len(pcm)
    assert abs(peak_hz - 440) < 2 and abs(np.abs(pcm).max() - 0.5) < 0.02


def test_unreadable_wav_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    q: BoundedQueue[AudioChunk] = BoundedQueue("a", 8, "block")
    with pytest.raises(SourceError, match="broken.wav"):
        WavFileSource(WavFileConfig(path=bad), q)
    with pytest.raises(SourceError, match="missing.wav"):
        WavFileSource(WavFileConfig(path=tmp_path / "missing.wav"), q)


# -- cameras -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["udp", "http"])
def test_network_camera_frames_loss_and_recovery(
    kind: str, ffmpeg_streams: Callable[..., FfmpegStream], samples_dir: Path
) -> None:
    stream = ffmpeg_streams(samples_dir / "images" / "cat.jpg", kind)
    q: BoundedQueue[Frame] = BoundedQueue("frames", 64, "drop_oldest")
    log = StateLog()
    cam = CameraSource(camera_cfg(stream.url), q, log)
    t0 = time.monotonic()
    cam.start()
    try:
        first = collect(q, 1, timeout=10)
        assert first, f"no frame in 10 s; {cam.stats.last_error}; ffmpeg: {stream.log_tail()}"
        first_frame_s = time.monotonic() - t0
        frames = first + collect(q, 14, timeout=15)
        assert len(frames) == 15 and cam.state == SourceState.UP
        diff = check_frames(frames, photo_640(samples_dir))
        assert diff < 12, f"decoded frame differs from the photo: mean abs diff {diff:.1f}"

        t_kill = time.monotonic()
        stream.stop()
        assert wait_for(lambda: cam.state != SourceState.UP, 15), "still up 15 s after the kill"
        to_reconnecting_s = time.monotonic() - t_kill
        assert cam.state == SourceState.RECONNECTING
        drain(q)

        t_restart = time.monotonic()
        stream.start()
        back = collect(q, 5, timeout=30)
        assert len(back) == 5, f"no frames after restart: {cam.stats.last_error}"
        recovery_s = time.monotonic() - t_restart
        assert cam.state == SourceState.UP
        assert back[0].seq > frames[-1].seq and back[0].t_capture_ns > frames[-1].t_capture_ns
        stats = cam.stats
        assert stats.reconnects >= 1 and stats.read_errors >= 1
        assert log.states()[:3] == [SourceState.UP, SourceState.RECONNECTING, SourceState.UP]
        print(
            f"\n[{kind}] first frame {first_frame_s:.2f} s, reconnecting {to_reconnecting_s:.2f}"
            f" s after kill, frames back {recovery_s:.2f} s after restart, diff {diff:.1f},"
            f" stats {stats}"
        )
    finally:
        assert cam.stop(timeout=5)
    assert cam.state == SourceState.DOWN


@pytest.mark.parametrize("uri", ["/dev/video9", "/nonexistent/camera.mp4"])
def test_missing_camera_goes_down_without_crashing(uri: str) -> None:
    q: BoundedQueue[Frame] = BoundedQueue("frames", 4, "drop_oldest")
    log = StateLog()
    cfg = camera_cfg(uri, backoff_initial_s=0.05, backoff_max_s=0.1, down_after_failures=3)
    cam = CameraSource(cfg, q, log)
    cam.start()
    try:
        expected = [SourceState.RECONNECTING, SourceState.DOWN]  # it starts as down: not opened
        assert wait_for(lambda: log.states() == expected, 5), log.events
        assert cam.state == SourceState.DOWN
        assert cam.running  # still retrying in the background
        assert cam.stats.open_failures >= 3 and cam.stats.last_error
    finally:
        assert cam.stop(timeout=5)
    assert q.depth == 0


def test_video_file_is_paced_in_real_time_and_ends(test_video: Path) -> None:
    q: BoundedQueue[Frame] = BoundedQueue("frames", 256, "block")
    log = StateLog()
    cam = CameraSource(camera_cfg(str(test_video)), q, log)
    t0 = time.monotonic()
    cam.start()
    try:
        assert cam.wait_finished(timeout=10), "file source did not finish"
        elapsed = time.monotonic() - t0
    finally:
        cam.stop(timeout=5)
    frames = drain(q)
    assert len(frames) == 60
    span_s = (frames[-1].t_capture_ns - frames[0].t_capture_ns) / 1e9
    assert 1.8 <= span_s <= 2.3, span_s  # 59 intervals at 30 fps = 1.97 s
    assert log.states() == [SourceState.UP, SourceState.DOWN]
    assert log.events[-1][2] == "end of file"
    print(f"\n[file] 60 frames over {span_s:.2f} s ({59 / span_s:.1f} fps), done in {elapsed:.2f}s")


def test_looped_file_is_rate_limited_at_the_source(test_video: Path) -> None:
    q: BoundedQueue[Frame] = BoundedQueue("frames", 256, "block")
    cam = CameraSource(camera_cfg(str(test_video), loop=True, fps=10.0), q)
    cam.start()
    try:
        time.sleep(2.5)  # crosses the 2 s end of the file: it must loop, not end
        assert cam.running and cam.state == SourceState.UP
    finally:
        assert cam.stop(timeout=5)
    frames = drain(q)
    stats = cam.stats
    rate = (len(frames) - 1) / ((frames[-1].t_capture_ns - frames[0].t_capture_ns) / 1e9)
    assert 9.0 <= rate <= 11.0, rate
    assert stats.skipped_rate >= 2 * len(frames) - 5  # 2 of every 3 frames are rate skips
    assert sum(q.dropped_total.values()) == 0  # rate skips are not queue drops
    print(f"\n[file loop fps=10] {len(frames)} frames, {rate:.1f} fps, {stats.skipped_rate} skips")


def test_looped_photo_is_a_still_camera(samples_dir: Path) -> None:
    q: BoundedQueue[Frame] = BoundedQueue("frames", 64, "drop_oldest")
    uri = str(samples_dir / "images" / "coffee.jpg")
    cam = CameraSource(camera_cfg(uri, loop=True, fps=10.0, width=640, height=480), q)
    cam.start()
    try:
        time.sleep(1.05)
        assert cam.state == SourceState.UP
    finally:
        assert cam.stop(timeout=5)
    frames = drain(q)
    assert 9 <= len(frames) <= 12, len(frames)
    assert check_frames(frames, photo_640(samples_dir, "coffee.jpg")) < 3


# -- audio -------------------------------------------------------------------------------
def test_wav_source_is_real_time(samples_dir: Path) -> None:
    wav = samples_dir / "audio" / SPEECH
    q: BoundedQueue[AudioChunk] = BoundedQueue("audio", 512, "drop_oldest")
    src = WavFileSource(WavFileConfig(id="wav", path=wav), q)
    src.start()
    try:
        time.sleep(2.0)
    finally:
        assert src.stop(timeout=5)
    chunks = drain(q)
    span_s = (chunks[-1].t_capture_ns - chunks[0].t_capture_ns) / 1e9
    rate = (len(chunks) - 1) / span_s
    assert 30.0 <= rate <= 32.5, rate  # 16000 / 512 = 31.25 chunks/s
    assert 60 <= len(chunks) <= 64
    steps_ms = np.diff([c.t_capture_ns for c in chunks]) / 1e6
    assert abs(float(np.median(steps_ms)) - 32.0) < 2.0
    assert all(c.pcm.shape == (CHUNK_SAMPLES,) and c.pcm.dtype == np.float32 for c in chunks)
    ref = load_audio(wav)
    assert np.array_equal(np.concatenate([c.pcm for c in chunks]), ref[: len(chunks) * 512])
    step = float(np.median(steps_ms))
    print(f"\n[wav] {len(chunks)} chunks, {rate:.2f} chunks/s, median step {step:.2f} ms")


def test_wav_source_as_fast_as_accepted_loses_nothing(samples_dir: Path) -> None:
    wav = samples_dir / "audio" / SPEECH
    q: BoundedQueue[AudioChunk] = BoundedQueue("audio", 4, "block")
    log = StateLog()
    src = WavFileSource(WavFileConfig(id="wav", path=wav, realtime=False), q, log)
    src.start()
    got: list[AudioChunk] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (src.wait_finished(0) and q.depth == 0):
        got.extend(q.get_batch(8, 0.01, timeout=0.1))
    assert src.wait_finished(timeout=1)
    assert len(got) == src.n_chunks and [c.seq for c in got] == list(range(src.n_chunks))
    assert np.array_equal(np.concatenate([c.pcm for c in got]), src.pcm)
    assert sum(q.dropped_total.values()) == 0
    assert log.states() == [SourceState.UP, SourceState.DOWN]


def test_pulse_virtual_mic_captures_speech_and_recovers(
    pulse_mic: PulseMic, samples_dir: Path
) -> None:
    wav = samples_dir / "audio" / SPEECH
    ref = load_audio(wav)
    q: BoundedQueue[AudioChunk] = BoundedQueue("audio", 1024, "drop_oldest")
    log = StateLog()
    cfg = MicrophoneConfig(
        id="mic", device=pulse_mic.device, backoff_initial_s=0.2, backoff_max_s=1.0,
        stall_timeout_s=1.5,
    )
    mic = MicrophoneSource(cfg, q, log)
    t0 = time.monotonic()
    mic.start()
    try:
        assert wait_for(lambda: mic.state == SourceState.UP, 10), mic.stats
        up_s = time.monotonic() - t0
        drain(q)

        t_play_ns = time.monotonic_ns()
        pulse_mic.play(wav, timeout=20)
        time.sleep(0.6)  # the capture side lags the sink by its buffering
        chunks = drain(q)
        captured = np.concatenate([c.pcm for c in chunks])
        assert len(captured) > len(ref), "captured less audio than was played"
        ncc, lag = normalized_xcorr_peak(captured, ref)
        assert ncc > 0.9, f"captured audio does not match the WAV (ncc {ncc:.3f})"
        steps_ms = np.diff([c.t_capture_ns for c in chunks]) / 1e6
        assert np.all(steps_ms > 0) and abs(float(np.median(steps_ms)) - 32.0) < 3.0
        # monotonic time of the WAV's first sample, from the stamps: play -> capture latency
        t_first_ns = chunks[0].t_capture_ns - (CHUNK_SAMPLES - 1 - lag) * 1e9 / SAMPLE_RATE
        latency_ms = (t_first_ns - t_play_ns) / 1e6

        t_kill = time.monotonic()
        pulse_mic.kill()
        assert wait_for(lambda: mic.state != SourceState.UP, 5), "still up 5 s after the kill"
        to_reconnecting_s = time.monotonic() - t_kill
        assert mic.state == SourceState.RECONNECTING
        # stay down until a reopen has failed: recovery then needs the device re-scan
        assert wait_for(lambda: mic.stats.open_failures >= 1, 5), mic.stats
        assert mic.state in (SourceState.RECONNECTING, SourceState.DOWN)

        t_restart = time.monotonic()
        pulse_mic.start()
        assert wait_for(lambda: mic.state == SourceState.UP, 15), mic.stats
        drain(q)
        assert collect(q, 10, timeout=5), "no audio after the restart"
        recovery_s = time.monotonic() - t_restart
        stats = mic.stats
        assert stats.reconnects == 1 and stats.read_errors >= 1
        print(
            f"\n[mic] up {up_s:.2f} s, ncc {ncc:.4f}, play->stamp latency {latency_ms:.0f} ms,"
            f" reconnecting {to_reconnecting_s:.2f} s after kill, up {recovery_s:.2f} s after"
            f" restart, stats {stats}"
        )
    finally:
        assert mic.stop(timeout=5)
    assert mic.state == SourceState.DOWN


def test_missing_microphone_goes_down_without_crashing() -> None:
    q: BoundedQueue[AudioChunk] = BoundedQueue("audio", 4, "drop_oldest")
    log = StateLog()
    cfg = MicrophoneConfig(
        id="mic", device="no-such-microphone", backoff_initial_s=0.05, backoff_max_s=0.1,
        down_after_failures=3,
    )
    mic = MicrophoneSource(cfg, q, log)
    mic.start()
    try:
        expected = [SourceState.RECONNECTING, SourceState.DOWN]
        assert wait_for(lambda: log.states() == expected, 5), log.events
        assert mic.running and "no-such-microphone" in mic.stats.last_error
    finally:
        assert mic.stop(timeout=5)
