"""Capture sources: cameras (V4L2, files, network streams), microphones, WAV replay.

Each module carries its own pydantic config (``type`` tag for a discriminated union) and
the source class that uses it. sounddevice is imported only when a microphone starts.
"""

from perceptd.daemon.sources.base import (
    CHUNK_SAMPLES,
    SAMPLE_RATE,
    AudioChunk,
    Backoff,
    Frame,
    Source,
    SourceError,
    SourceState,
    SourceStats,
)
from perceptd.daemon.sources.camera import CameraConfig, CameraSource
from perceptd.daemon.sources.microphone import MicrophoneConfig, MicrophoneSource
from perceptd.daemon.sources.wavfile import WavFileConfig, WavFileSource

__all__ = [
    "CHUNK_SAMPLES",
    "SAMPLE_RATE",
    "AudioChunk",
    "Backoff",
    "CameraConfig",
    "CameraSource",
    "Frame",
    "MicrophoneConfig",
    "MicrophoneSource",
    "Source",
    "SourceError",
    "SourceState",
    "SourceStats",
    "WavFileConfig",
    "WavFileSource",
]
