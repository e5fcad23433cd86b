"""The shared timeline: the newest output of every (modality, source), stamped at capture.

Fusion asks it for rows: one per camera (its vision and face outputs) joined with the newest
audio and text outputs, each present only while it is inside the event's fusion window.
Stale outputs are absent (mask 0), never zero vectors that the head would read as evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypedDict

import numpy as np

from perceptd.daemon.fusion.space import MODALITIES

if TYPE_CHECKING:
    from perceptd.daemon.inference.face import Face

_PER_CAMERA = ("vision", "face")


class ModalityExtra(TypedDict, total=False):
    """What a stage attaches to an output besides the shared-space vector: read by the sample
    logger (raw media, encoder features), by fusion and the recorder (a command's text)."""

    features: np.ndarray  # vision: the encoder's feature vector (adapters train on it)
    frame: np.ndarray  # vision: the BGR frame, only while samples keep raw frames
    faces: list[Face] | None  # face: the detections of the frame
    embedding: np.ndarray  # audio: the tagger's embedding (adapters train on it)
    pcm: np.ndarray  # audio: the window's PCM, only while samples keep raw audio
    speech_prob: float  # audio: the highest VAD probability of the last ~1 s
    text: str  # text: the command
    origin: Literal["control", "speech"]  # text: typed (control socket) or spoken


@dataclass(frozen=True)
class ModalityOutput:
    """One encoder result on the timeline (what stages hand to fusion)."""

    modality: str  # one of MODALITIES
    source: str
    t_capture_ns: int
    vector: np.ndarray  # [D], L2-normalised, in the shared space
    top: tuple[tuple[str, float], ...] = ()
    extra: ModalityExtra = field(default_factory=lambda: ModalityExtra())
    probs: np.ndarray | None = None  # vision/audio: the classifier's class probabilities
    commands: tuple[tuple[str, float], ...] = ()  # text: the matcher's log-odds per command


@dataclass(frozen=True)
class Row:
    """The inputs of one fusion evaluation, plus what explains them."""

    camera: str | None
    x: np.ndarray  # [M,D]
    mask: np.ndarray  # [M]
    outputs: tuple[ModalityOutput | None, ...]  # per modality, the output used (or None)


class Timeline:
    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self._latest: dict[tuple[str, str], ModalityOutput] = {}

    def update(self, out: ModalityOutput) -> None:
        key = (out.modality, out.source)
        cur = self._latest.get(key)
        if cur is None or out.t_capture_ns >= cur.t_capture_ns:
            self._latest[key] = out

    def forget(self, modality: str, source: str) -> None:
        """A negative observation (e.g. a frame with no face) ends that source's output."""
        self._latest.pop((modality, source), None)

    def cameras(self) -> list[str]:
        return sorted({s for (m, s) in self._latest if m in _PER_CAMERA})

    def rows(self, now_ns: int, window_ns: int, override: ModalityOutput | None = None) -> list[Row]:
        """One row per camera seen (or a single camera-less row), outputs inside the window.

        `override` takes the place of its modality's newest output: a command is judged on its
        own words even when another source's command is newer (a spoken command is stamped at
        the end of speech, so one typed while it was recognised is newer)."""
        # the shared modalities (audio, text): the newest output of any source (the first seen on
        # a tie), found in one pass; a camera's own outputs (vision, face) are one lookup each
        shared: dict[str, ModalityOutput] = {}
        for (m, _), out in self._latest.items():
            if m not in _PER_CAMERA and (m not in shared or out.t_capture_ns > shared[m].t_capture_ns):
                shared[m] = out
        rows = []
        for cam in self.cameras() or [None]:
            x = np.zeros((len(MODALITIES), self.dim), np.float32)
            mask = np.zeros(len(MODALITIES), np.float32)
            used: list[ModalityOutput | None] = []
            for i, m in enumerate(MODALITIES):
                if override is not None and override.modality == m:
                    out = override
                elif m in _PER_CAMERA:
                    out = self._latest.get((m, cam)) if cam is not None else None
                else:
                    out = shared.get(m)
                if out is not None and now_ns - out.t_capture_ns <= window_ns:
                    x[i], mask[i] = out.vector, 1.0
                    used.append(out)
                else:
                    used.append(None)
            rows.append(Row(cam, x, mask, tuple(used)))
        return rows

    def prune(self, now_ns: int, max_window_ns: int) -> None:
        """Drop what no window can reach any more (bounded memory over months)."""
        for key in [k for k, o in self._latest.items() if now_ns - o.t_capture_ns > max_window_ns]:
            del self._latest[key]
