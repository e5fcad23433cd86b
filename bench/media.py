"""Benchmark inputs made from the sample media: 640x480 videos of the photos, a speech WAV.

Videos are H.264 (system ffmpeg + libx264) where available; otherwise OpenCV's own writer
(MPEG-4 part 2, 'mp4v'), and the codec used is recorded with the results.  Each stream gets
its own video (the photos in a different order, a slow pan so no two frames are equal).
The frame rate in the file only sets how fast a source replays it: 30 fps for real-time runs,
240 fps (the camera source's highest) for max-rate runs, where the `block` queues pace it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
CACHE = Path(__file__).resolve().parent / ".cache"
SIZE = (640, 480)
PHOTOS = ("cat", "coffee", "astronaut", "motorcycle", "rocket", "space", "grass", "brick")


def _frames(order: list[str], frames_per_photo: int) -> list[np.ndarray]:
    """Each photo resized to 640x480 and panned by a few pixels per frame."""
    out = []
    for name in order:
        img = cv2.imread(str(SAMPLES / "images" / f"{name}.jpg"))
        if img is None:
            raise FileNotFoundError(SAMPLES / "images" / f"{name}.jpg")
        big = cv2.resize(img, (SIZE[0] + 64, SIZE[1] + 48), interpolation=cv2.INTER_AREA)
        for k in range(frames_per_photo):
            dx = (k * 2) % 64
            out.append(np.ascontiguousarray(big[24 : 24 + SIZE[1], dx : dx + SIZE[0]]))
    return out


def _write_ffmpeg(frames: list[np.ndarray], fps: float, path: Path) -> None:
    """Encode once to an H.264 elementary stream, then mux it at `fps` (stream copy), so the
    30 fps and the 240 fps files hold the very same bitstream (the same decode cost)."""
    raw = CACHE / f"{path.name.split('_')[0]}.h264"  # one encode, shared by every cache dir
    if not raw.exists():
        enc = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
               "-s", f"{SIZE[0]}x{SIZE[1]}", "-r", "30", "-i", "-", "-c:v", "libx264",
               "-preset", "veryfast", "-bf", "0", "-pix_fmt", "yuv420p", "-g", "30",
               str(raw) + ".part.h264"]
        _ffmpeg(enc, b"".join(f.tobytes() for f in frames))
        Path(str(raw) + ".part.h264").rename(raw)
    _ffmpeg(["ffmpeg", "-loglevel", "error", "-y", "-r", f"{fps:g}", "-i", str(raw), "-c", "copy",
             str(path)], b"")


def _ffmpeg(cmd: list[str], stdin: bytes) -> None:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.stderr.decode(errors='replace')[-300:]}")


def _write_cv2(frames: list[np.ndarray], fps: float, path: Path) -> None:
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    if not wr.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    for f in frames:
        wr.write(f)
    wr.release()


def codec() -> str:
    return "h264" if shutil.which("ffmpeg") else "mpeg4"


def video(index: int, fps: float, seconds: float = 10.0, cache: Path = CACHE) -> Path:
    """The video of stream `index` (photos rotated by `index`), made once and cached.

    `fps` may be any rate (the load sweep replays files at a fraction of the max rate: 22.5);
    only the container's rate differs, the bitstream is the same.  Such one-off rates belong in
    a scratch `cache` (the sweep's work folder), not in bench/.cache, which gpu_prep.sh ships.
    A cached H.264 file is used even where ffmpeg is missing (carried to the GPU machine)."""
    cache.mkdir(parents=True, exist_ok=True)
    h264 = cache / f"stream{index % len(PHOTOS)}_{fps:g}fps_h264.mp4"
    if h264.exists():
        return h264
    path = cache / f"stream{index % len(PHOTOS)}_{fps:g}fps_{codec()}.mp4"
    if path.exists():
        return path
    k = index % len(PHOTOS)
    order = list(PHOTOS[k:] + PHOTOS[:k])
    n_frames = int(seconds * 30)  # the same frames whatever the nominal rate
    frames = _frames(order, max(1, n_frames // len(order)))
    tmp = path.with_suffix(".part.mp4")
    (_write_ffmpeg if codec() == "h264" else _write_cv2)(frames, fps, tmp)
    tmp.rename(path)
    return path


def speech_wav(cache: Path = CACHE) -> Path:
    """All sample phrases one after another (speech with pauses), 16 kHz mono."""
    import soundfile as sf

    cache.mkdir(parents=True, exist_ok=True)
    path = cache / "speech_loop.wav"
    if path.exists():
        return path
    parts = []
    for p in sorted((SAMPLES / "audio").glob("*.wav")):
        pcm, sr = sf.read(str(p), dtype="float32")
        if sr != 16_000:
            raise ValueError(f"{p}: expected 16 kHz, got {sr}")
        parts.append(pcm if pcm.ndim == 1 else pcm.mean(axis=1))
    sf.write(str(path), np.concatenate(parts), 16_000, subtype="PCM_16")
    return path


COMMANDS = ("turn on the lights", "play some music", "switch the lamp off", "louder please",
            "take me home", "call mom", "make it warmer", "stop the music")
