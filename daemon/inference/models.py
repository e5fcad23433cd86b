"""Every runtime model of one bundle, loaded and warmed up together: the unit of a hot swap.

A swap builds a complete new ModelSet in the background and replaces the reference between
batches; stages read `ModelRef.current()` once per batch, so no batch mixes two bundles.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from perceptd.daemon.bundle import Bundle
from perceptd.daemon.events.config import EventConfig
from perceptd.daemon.fusion.space import EventSpace, compile_events
from perceptd.daemon.inference.audio_tagger import AudioTagger
from perceptd.daemon.inference.fusion_head import FusionModel
from perceptd.daemon.inference.session import SessionOptions, provider_of
from perceptd.daemon.inference.text import TextModel
from perceptd.daemon.inference.vad import VadModel
from perceptd.daemon.inference.vision import VisionModel, VisionRuntime

if TYPE_CHECKING:
    from perceptd.daemon.inference.face import FaceDetector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSet:
    bundle: Bundle
    text: TextModel
    vision: VisionModel
    face: FaceDetector | None  # None when disabled
    vad: VadModel
    audio: AudioTagger
    fusion: FusionModel
    space: EventSpace
    face_anchor: np.ndarray  # shared-space vector standing for "a face is visible"
    commands: object | None = None  # CommandMatcher over this vocabulary (text evidence)

    @property
    def version(self) -> str:
        return self.bundle.version

    def providers(self) -> dict[str, str]:
        out = {
            "text": provider_of(self.text.session),
            "vision": provider_of(self.vision.session),
            "vad": provider_of(self.vad.session),
            "audio": provider_of(self.audio.session),
            "fusion": provider_of(self.fusion.session),
        }
        if self.face is not None:
            out["face"] = provider_of(self.face.sessions[0])
        return out


def load_models(bundle: Bundle, events: list[EventConfig], opts: SessionOptions,
                with_face: bool = True, vision_runtime: VisionRuntime | None = None) -> ModelSet:
    """Create every session of the bundle, compile the events, warm everything up."""
    text = TextModel(bundle.model_path("text"), bundle.file("text_tokenizer.json"), opts)
    resize = bundle.model_path("vision_resize") if bundle.has("vision_resize") else None
    vision = VisionModel(bundle.model_path("vision"), bundle.preprocessing("vision"),
                         bundle.labels("vision"), opts, resize, vision_runtime)
    face = _load_face(bundle, opts) if with_face else None
    vad = VadModel(bundle.model_path("vad"), bundle.preprocessing("vad"), opts)
    audio = AudioTagger(bundle.model_path("audio"), bundle.preprocessing("audio"),
                        bundle.labels("audio"), opts)
    fusion = FusionModel(bundle.model_path("fusion"), opts)
    space = compile_events(events, text.embed, bundle)
    anchor_file = bundle.preprocessing("fusion").get("face_anchor", "face_anchor.npy")
    anchor = np.load(bundle.file(anchor_file), allow_pickle=False).astype(np.float32)
    models = ModelSet(bundle, text, vision, face, vad, audio, fusion, space, anchor,
                      _command_matcher(events, text))
    _warm_up(models)
    log.info("event=models_loaded version=%s providers=%s", bundle.version,
             ",".join(f"{k}:{v.removesuffix('ExecutionProvider')}" for k, v in models.providers().items()))
    return models


def _command_matcher(events: list[EventConfig], text: TextModel) -> object | None:
    """One matcher for typed and spoken commands, over this bundle's text model."""
    if not any(e.kind == "command" for e in events):
        return None
    try:
        from perceptd.daemon.commands.matcher import CommandMatcher
    except ImportError:  # pragma: no cover - while the matcher is being written
        return None
    return CommandMatcher(events, text.embed)


def _load_face(bundle: Bundle, opts: SessionOptions):
    from perceptd.daemon.inference.face import FaceDetector

    return FaceDetector(
        bundle.model_path("face_pnet"), bundle.model_path("face_rnet"),
        bundle.model_path("face_onet"), bundle.preprocessing("face_pnet"), opts,
    )


def _warm_up(m: ModelSet) -> None:
    """First calls allocate and optimise: do them now, not on the first real frame."""
    frame = np.zeros((480, 640, 3), np.uint8)
    m.vision.infer(m.vision.preprocess(frame)[None])
    if m.vision.fixed is None and m.vision.staging.max_batch > 1:  # the full batch's kernels too
        m.vision.infer(np.stack([m.vision.preprocess(frame)] * m.vision.staging.max_batch))
    if m.face is not None:
        m.face.detect(frame)
    x = np.zeros((1, 4, m.space.queries.shape[-1]), np.float32)
    m.fusion.fuse(x, np.zeros((1, 4), np.float32), m.space)
    m.text.embed(["warm up"])


class ModelRef:
    """The current ModelSet; swapped atomically (a reference assignment under a lock)."""

    def __init__(self, models: ModelSet) -> None:
        self._models = models
        self._lock = threading.Lock()

    def current(self) -> ModelSet:
        return self._models

    def swap(self, new: ModelSet) -> ModelSet:
        with self._lock:
            old, self._models = self._models, new
        return old
