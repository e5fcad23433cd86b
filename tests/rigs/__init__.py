"""Real-component test rigs: ffmpeg network cameras and a PulseAudio virtual microphone.

Plain classes usable anywhere, plus pytest fixtures in ``tests.rigs.fixtures`` (load with
``pytest_plugins = ["tests.rigs.fixtures"]`` in tests/conftest.py).
"""

from tests.rigs.ffmpeg_stream import FfmpegStream, ffmpeg_available, free_port, make_video
from tests.rigs.pulse import PulseMic, pulse_unavailable_reason

__all__ = [
    "FfmpegStream",
    "PulseMic",
    "ffmpeg_available",
    "free_port",
    "make_video",
    "pulse_unavailable_reason",
]
