"""The recognizer plugin contract and its explicit registry.

An engine turns one closed speech segment (float32 PCM, 16 kHz) into a transcript with the
confidence figures the command matcher needs.  Engines are plugins: each module defines a
pydantic config with `type: Literal[...]` and a factory; `speech/registry.py` lists them.
A missing engine library raises EngineUnavailable so the daemon can log it and run on
without speech instead of failing to start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from pydantic import BaseModel


class EngineUnavailable(RuntimeError):
    """The engine's library or weights are not installed (a reason, not a crash)."""


@dataclass(frozen=True)
class Transcript:
    text: str  # "" when nothing was decoded
    avg_logprob: float | None  # mean token log-probability of the text (<= 0); None if empty
    no_speech_prob: float | None  # the model's belief that there was no speech; None if unknown


class AsrEngine(Protocol):
    name: str  # published as SpeechMessage.engine

    def transcribe(self, pcm: np.ndarray) -> Transcript: ...


EngineFactory = Callable[[BaseModel, str], AsrEngine]  # (engine config, initial prompt)


class EngineRegistry:
    """Engine type -> factory; owned by whoever builds the speech stage (no globals)."""

    def __init__(self) -> None:
        self._factories: dict[str, EngineFactory] = {}

    def register(self, type_name: str, factory: EngineFactory) -> None:
        if type_name in self._factories:
            raise ValueError(f"speech engine {type_name!r} is already registered")
        self._factories[type_name] = factory

    def types(self) -> list[str]:
        return sorted(self._factories)

    def create(self, cfg: BaseModel, prompt: str) -> AsrEngine:
        """Build the engine `cfg.type` names; EngineUnavailable when it cannot run here."""
        type_name = str(getattr(cfg, "type", ""))
        factory = self._factories.get(type_name)
        if factory is None:
            raise EngineUnavailable(f"no speech engine {type_name!r} (known: {', '.join(self.types())})")
        return factory(cfg, prompt)
