"""Event vocabulary: each event is a name, text prompts, the modalities it may use, thresholds.

Events are declared, not trained: their prompts are embedded on the device by the text
encoder and become the queries of the fusion head.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from perceptd.daemon.names import EVENT_NAME

Modality = Literal["vision", "face", "audio", "text"]


class EventConfig(BaseModel):
    """One event; thresholds apply to the calibrated fused score in [0, 1]."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=EVENT_NAME, description="topic suffix: event.<name>")
    kind: Literal["state", "command"] = Field(
        "state",
        description="state: detected while present (start/update/end); "
        "command: a one-shot intent from text or speech",
    )
    prompts: list[str] = Field(
        min_length=1, max_length=32, description="text prompts; several paraphrases help"
    )
    modalities: list[Modality] = Field(
        min_length=1, description="modalities whose evidence may drive this event"
    )
    group: str | None = Field(
        None,
        pattern=EVENT_NAME,
        description="competition group: only the best-matching event of a group fires "
        "(separates on/off pairs); commands default to 'commands'",
    )
    min_similarity: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="raw cosine a prompt must reach; commands default to 0.55 "
        "(rejects near-misses such as 'turn on the fan')",
    )
    min_margin: float | None = Field(
        None,
        ge=0,
        le=1,
        description="raw cosine by which an event must beat the best rival of its group; "
        "commands default to 0.025 (an ambiguous phrase issues no command)",
    )
    require: list[Modality] | None = Field(
        None,
        description="modalities that must be present for the event to fire; commands default "
        "to [text] (sound alone never issues a command)",
    )
    window_s: float = Field(1.5, gt=0, le=60, description="fusion window on the monotonic clock")
    threshold_on: float = Field(0.5, gt=0, lt=1, description="score that starts the event")
    threshold_off: float = Field(0.4, gt=0, lt=1, description="score below which it may end")
    min_duration_s: float = Field(0.0, ge=0, le=60, description="score must hold this long")
    cooldown_s: float = Field(1.0, ge=0, le=3600, description="quiet time after an end")
    update_interval_s: float = Field(1.0, gt=0, le=3600, description="rate of update phases")

    @property
    def effective_group(self) -> str | None:
        return self.group if self.group is not None else (
            "commands" if self.kind == "command" else None)

    @property
    def effective_required(self) -> list[str]:
        if self.require is not None:
            return list(self.require)
        return ["text"] if self.kind == "command" else []

    @property
    def effective_margin(self) -> float:
        if self.min_margin is not None:
            return self.min_margin
        return 0.025 if self.kind == "command" else 0.0

    @property
    def effective_floor(self) -> float:
        if self.min_similarity is not None:
            return self.min_similarity
        return 0.55 if self.kind == "command" else -1.0

    @model_validator(mode="after")
    def _hysteresis(self) -> EventConfig:
        missing = [m for m in self.effective_required if m not in self.modalities]
        if missing:
            raise ValueError(f"require {missing} must also be listed in modalities")
        if self.threshold_off > self.threshold_on:
            raise ValueError(
                f"threshold_off ({self.threshold_off}) must be <= threshold_on "
                f"({self.threshold_on})"
            )
        return self


def check_unique_names(events: list[EventConfig]) -> list[EventConfig]:
    seen: set[str] = set()
    for e in events:
        if e.name in seen:
            raise ValueError(f"duplicate event name {e.name!r}")
        seen.add(e.name)
    return events
