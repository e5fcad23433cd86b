"""Which source class serves each `sources:` section of the config, and which sink it feeds:
the one table a new kind of source is added to (the composition root builds them all from it,
as speech engines come from their registry)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from perceptd.daemon.sources.base import Sink, Source, StateCallback
from perceptd.daemon.sources.camera import CameraSource
from perceptd.daemon.sources.microphone import MicrophoneSource
from perceptd.daemon.sources.wavfile import WavFileSource

SinkName = Literal["frames", "audio"]


@dataclass(frozen=True)
class SourceKind:
    section: str  # the field of the `sources:` config section (a list, or one optional entry)
    sink: SinkName  # the queue its items go to
    build: Callable[[Any, Sink, StateCallback | None], Source]


KINDS: tuple[SourceKind, ...] = (
    SourceKind("cameras", "frames", CameraSource),
    SourceKind("microphone", "audio", MicrophoneSource),
    SourceKind("audio_files", "audio", WavFileSource),
)


def build_sources(cfg: Any, sinks: Mapping[SinkName, Sink],
                  on_state: StateCallback | None = None) -> list[Source]:
    """One source per configured entry, in table order (cameras first, as before)."""
    out: list[Source] = []
    for kind in KINDS:
        value = getattr(cfg, kind.section)
        entries = value if isinstance(value, list) else [] if value is None else [value]
        out += [kind.build(entry, sinks[kind.sink], on_state) for entry in entries]
    return out
