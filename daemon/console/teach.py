"""Try a prompt: score a sentence against what the cameras and microphone show now.

The sentence becomes a one-event vocabulary compiled exactly as config events are
(`compile_events`: background calibration, class relevance), and is fused by the bundle's
ONNX fusion head with the rows of the fusion stage's newest evaluation (`latest_rows()`), the
same inputs the daemon's events were just scored on.  The head runs in a session of its own
(one per bundle version, created on first use), so the live stage's session and its cached
constants are never touched from this thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from perceptd.daemon.events.config import EventConfig
from perceptd.daemon.fusion.space import MODALITIES, compile_events
from perceptd.daemon.fusion.timeline import Row
from perceptd.daemon.inference.fusion_head import FusionModel
from perceptd.daemon.inference.session import SessionOptions
from perceptd.daemon.pipeline.fusion_stage import row_evidence

MAX_PROMPT_CHARS = 300
TRY_MODALITIES = ("vision", "face", "audio")  # what is seen and heard, not typed


class TryBusy(Exception):
    """One try at a time: the next one waits for the page to ask again."""


class PromptTrial:
    def __init__(self, models: Callable[[], Any], rows: Callable[[], Sequence[Row]]) -> None:
        self.models = models
        self.rows = rows
        self._lock = threading.Lock()
        self._head: tuple[str, FusionModel] | None = None

    def _fusion(self, m: Any) -> FusionModel:
        if self._head is None or self._head[0] != m.version:
            self._head = (m.version, FusionModel(m.bundle.model_path("fusion"), SessionOptions("cpu", 1)))
        return self._head[1]

    def score(self, text: str) -> dict[str, Any]:
        text = " ".join(text.split())
        if not text:
            raise ValueError("empty prompt")
        if len(text) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt longer than {MAX_PROMPT_CHARS} characters")
        if not self._lock.acquire(blocking=False):
            raise TryBusy("another prompt is being scored")
        try:
            return self._score(text)
        finally:
            self._lock.release()

    def _score(self, text: str) -> dict[str, Any]:
        m = self.models()
        rows = [r for r in self.rows() if r.mask.any()]
        out: dict[str, Any] = {"prompt": text, "model_version": m.version}
        if not rows:
            return {**out, "score": None, "detail": "nothing seen or heard within the fusion window"}
        event = EventConfig(name="try_a_prompt", prompts=[text], modalities=list(TRY_MODALITIES))
        space = compile_events([event], m.text.embed, m.bundle)
        x = np.stack([r.x for r in rows])
        mask = np.stack([r.mask for r in rows])
        pv, pa, te = row_evidence(rows, space)
        res = self._fusion(m).fuse(x, mask, space, pv, pa, te)
        b = int(np.argmax(res.scores[:, 0]))
        row = rows[b]
        prompt_vec = space.queries[0, 0]
        modalities = {}
        for j, name in enumerate(MODALITIES):
            o = row.outputs[j]
            if o is None or name not in TRY_MODALITIES:
                continue
            modalities[name] = {
                "weight": round(float(res.weights[b, 0, j]), 4),
                "score": round(float(res.modality_scores[b, 0, j]), 4),
                "cosine": round(float(np.dot(o.vector, prompt_vec)), 4),
                "top": [[lab, round(float(p), 4)] for lab, p in o.top[:3]],
                "source": o.source,
            }
        return {**out, "score": round(float(res.scores[b, 0]), 4), "camera": row.camera,
                "fires": bool(res.scores[b, 0] >= event.threshold_on),
                "threshold_on": event.threshold_on, "modalities": modalities}
