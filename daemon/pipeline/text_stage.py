"""Text commands (typed over the control socket, or transcribed speech) -> shared space."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from perceptd.daemon.commands.evidence import scores_to_logodds
from perceptd.daemon.fusion.space import top_prompts
from perceptd.daemon.fusion.timeline import ModalityOutput
from perceptd.daemon.pipeline.queues import BoundedQueue
from perceptd.daemon.pipeline.worker import Worker

if TYPE_CHECKING:
    from perceptd.daemon.inference.models import ModelSet


@dataclass(frozen=True)
class TextCommand:
    text: str
    origin: str  # "control" | "speech"
    t_capture_ns: int  # when the daemon received it (or when the speech segment ended)
    source: str = "control"


class TextStage(Worker[TextCommand]):
    name = "text"

    def __init__(self, inbox: BoundedQueue[TextCommand], fusion: BoundedQueue[ModalityOutput],
                 models: Callable[[], ModelSet], prompt_texts: list[list[str]]) -> None:
        super().__init__(inbox)
        self.batch = 8
        self.fusion = fusion
        self.models = models
        self.prompt_texts = prompt_texts  # per event, in config order (labels of the text top)

    def submit(self, text: str, origin: str) -> int:
        """Queue a command (never waits: a full inbox drops by its policy); its capture time."""
        t = time.monotonic_ns()
        self.inbox.put(TextCommand(text, origin, t), timeout=0)
        return t

    def process(self, items: list[TextCommand]) -> None:
        m = self.models()
        t0 = time.perf_counter()
        vecs = m.text.embed([c.text for c in items])
        self.timings.observe("text", m, time.perf_counter() - t0)
        tops = top_prompts(m.space, vecs, self.prompt_texts, 3)
        matcher = getattr(m, "commands", None)
        matches = matcher.match_many([c.text for c in items]) if matcher is not None else None
        for i, (c, v, top) in enumerate(zip(items, vecs, tops, strict=True)):
            evidence = scores_to_logodds(matches[i].scores) if matches is not None else ()
            origin: Literal["control", "speech"] = "speech" if c.origin == "speech" else "control"
            self.fusion.put(ModalityOutput("text", c.source, c.t_capture_ns, v, tuple(top),
                                           {"text": c.text, "origin": origin},
                                           commands=evidence))
