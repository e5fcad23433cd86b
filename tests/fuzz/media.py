"""Broken media corpora: truncated and damaged JPEGs, odd images, broken videos, WAVs with wrong
rates, channel counts, formats and lengths.  Deterministic (seeded) so a failure reproduces."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
CAT = REPO / "samples" / "images" / "cat.jpg"
SPEECH = REPO / "samples" / "audio" / "turn_on_the_kitchen_lights.wav"


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims a huge size (decompression-bomb shape) with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def _write_files(out: Path, items: dict[str, bytes]) -> list[Path]:
    """Each (file name, bytes) written under `out`; the paths, in order."""
    paths = []
    for name, raw in items.items():
        p = out / name
        p.write_bytes(raw)
        paths.append(p)
    return paths


def image_corpus(out: Path, flips: int = 12, seed: int = 11) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = CAT.read_bytes()
    rng = random.Random(seed)
    items: dict[str, bytes] = {"empty.jpg": b"", "text.jpg": b"not an image at all\n",
                               "soi_only.jpg": b"\xff\xd8", "huge_png_header.png": _png_header(60000, 60000),
                               "wide_png_header.png": _png_header(10**6, 1)}
    for cut in (2, 100, 1000, len(data) // 2, len(data) - 2):
        items[f"truncated_{cut}.jpg"] = data[:cut]
    for i in range(flips):
        b = bytearray(data)
        for _ in range(rng.randint(1, 50)):
            b[rng.randrange(2, len(b))] = rng.randrange(256)
        items[f"flipped_{i}.jpg"] = bytes(b)
    img = cv2.imread(str(CAT))
    for name, arr, ext in [("gray", cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), ".png"),
                           ("rgba", cv2.cvtColor(img, cv2.COLOR_BGR2BGRA), ".png"),
                           ("tiny_1x1", img[:1, :1], ".jpg"),
                           ("strip_4000x2", cv2.resize(img, (4000, 2)), ".png"),
                           ("deep16", (img.astype(np.uint16) * 257), ".png")]:
        ok, enc = cv2.imencode(ext, arr)
        assert ok
        items[name + ext] = enc.tobytes()
    return _write_files(out, items)


def video_corpus(out: Path, good_video: Path, seed: int = 12) -> list[Path]:
    """Files a camera `uri` might point at: a cut-off or damaged MP4, random bytes, a JPEG."""
    out.mkdir(parents=True, exist_ok=True)
    data = good_video.read_bytes()
    rng = random.Random(seed)
    damaged = bytearray(data)
    for _ in range(200):
        damaged[rng.randrange(len(data) // 10, len(data))] = rng.randrange(256)
    items = {"empty.mp4": b"", "half.mp4": data[: len(data) // 2], "head.mp4": data[:2000],
             "random.mp4": bytes(rng.randrange(256) for _ in range(20000)), "damaged.mp4": bytes(damaged),
             "photo_as_video.mp4": CAT.read_bytes()}
    return _write_files(out, items)


def wav_corpus(out: Path) -> list[Path]:
    """Wrong rates, channel counts and sample formats; empty, header-only, cut, NaN, clipped."""
    out.mkdir(parents=True, exist_ok=True)
    speech, rate = sf.read(str(SPEECH), dtype="float32")
    paths: list[Path] = []

    def write(name: str, pcm: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
        p = out / name
        sf.write(str(p), pcm, sr, subtype=subtype)
        paths.append(p)

    for sr in (8000, 11025, 22050, 44100, 48000, 96000):
        n = int(len(speech) * sr / rate)
        write(f"rate_{sr}.wav", np.interp(np.linspace(0, len(speech) - 1, n), np.arange(len(speech)),
                                          speech).astype(np.float32), sr)
    write("stereo.wav", np.stack([speech, 0.5 * speech], 1), rate)
    write("six_channels.wav", np.repeat(speech[:, None], 6, 1), rate)
    write("float32.wav", speech, rate, "FLOAT")
    write("int32.wav", speech, rate, "PCM_32")
    write("u8.wav", speech, rate, "PCM_U8")
    write("one_sample.wav", speech[:1], rate)
    write("clipped.wav", np.clip(speech * 50, -1, 1), rate)
    write("rate_1hz.wav", speech[:100], 1)
    nan = speech.copy()
    nan[::7] = np.nan
    write("nan.wav", nan, rate, "FLOAT")
    inf = speech.copy()
    inf[100:200] = np.inf
    write("inf.wav", inf, rate, "FLOAT")
    raw = SPEECH.read_bytes()
    return paths + _write_files(out, {"zero_length.wav": b"", "header_only.wav": raw[:44],
                                      "truncated.wav": raw[: len(raw) // 3 + 1],
                                      "garbage.wav": b"RIFF" + bytes(range(256)) * 4,
                                      "empty_data.wav": _wav_header(0)})


def _wav_header(n_bytes: int, rate: int = 16000) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + n_bytes) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate,
            rate * 2, 2, 16) + b"data" + struct.pack("<I", n_bytes))
