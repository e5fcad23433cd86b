"""Event vocabulary: each event is a name, text prompts, the modalities it may use, thresholds.

Events are declared, not trained: their prompts are embedded on the device by the text
encoder and become the queries of the fusion head.  This model lives with the events room (not
in config/) because nearly every room reads it, while config/root.py only assembles sections:
the config package stays the top of the graph, with no cycle back into it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from perceptd.daemon.names import EVENT_NAME

Modality = Literal["vision", "face", "audio", "text"]
Combine = Literal["sum", "any", "all"]
COMBINE_MODES: tuple[str, ...] = ("sum", "any", "all")


class EventConfig(BaseModel):
    """One event; thresholds apply to the calibrated fused score in [0, 1]."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=EVENT_NAME, description="topic suffix: event.<name>")
    kind: Literal["state", "command"] = Field(
        default="state",
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
        default=None,
        pattern=EVENT_NAME,
        description="competition group: only the best-matching event of a group fires "
        "(separates on/off pairs); commands default to 'commands'",
    )
    min_similarity: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="accepted so older configs load, ignored: commands are judged by the "
        "command matcher (actions, objects, cues), other events by class evidence",
    )
    min_margin: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="accepted so older configs load, ignored: rivals of a group are separated "
        "by their log-odds, commands by the command matcher's lead over the runner-up",
    )
    require: list[Modality] | None = Field(
        default=None,
        description="modalities that must be present for the event to fire; commands default "
        "to [text] (sound alone never issues a command)",
    )
    combine: Combine = Field(
        default="sum",
        description="how the modalities' evidence (log-odds) adds up: sum (agreement raises "
        "confidence, a confident contradiction outweighs a weak vote), any (the strongest "
        "modality decides), all (every modality must agree: the weakest decides)",
    )
    class_evidence: list[Literal["vision", "audio"]] = Field(
        default=["vision", "audio"],
        description="classifiers whose classes may decide this event (the ImageNet and AudioSet "
        "classes that mean its prompts); a modality left out here falls back to the "
        "shared-space vector",
    )
    actions: list[str] | None = Field(
        default=None,
        max_length=64,
        description="command events only: what asking for it sounds like, e.g. 'turn on', "
        "'switch on' (with objects: an utterance must name one action and one object; words are "
        "compared in the MiniLM space, particles such as on/off/up/down exactly); "
        "default: none, the prompts alone are matched",
    )
    objects: list[str] | None = Field(
        default=None,
        max_length=64,
        description="command events only: what the command acts on, e.g. 'lights', 'lamp'",
    )
    cues: list[str] | None = Field(
        default=None,
        max_length=64,
        description="command events only: phrases that ask for the command on their own, e.g. "
        "'too dark', 'brighter' (every word must be present); the prompts always count as cues",
    )
    window_s: float = Field(default=1.5, gt=0, le=60, description="fusion window on the monotonic clock")
    threshold_on: float = Field(default=0.5, gt=0, lt=1, description="score that starts the event")
    threshold_off: float = Field(default=0.4, gt=0, lt=1, description="score below which it may end")
    min_duration_s: float = Field(default=0.0, ge=0, le=60, description="score must hold this long")
    cooldown_s: float = Field(default=1.0, ge=0, le=3600, description="quiet time after an end")
    update_interval_s: float = Field(default=1.0, gt=0, le=3600, description="rate of update phases")

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
    def class_evidence_off(self) -> list[str]:
        return [m for m in ("vision", "audio") if m not in self.class_evidence]

    @model_validator(mode="after")
    def _hysteresis(self) -> EventConfig:
        vocab = {k: getattr(self, k) for k in ("actions", "objects", "cues") if getattr(self, k)}
        if vocab and self.kind != "command":
            raise ValueError(f"{sorted(vocab)} apply to command events only (kind: command)")
        if bool(self.actions) != bool(self.objects):
            raise ValueError("actions and objects go together: a command needs both (or neither)")
        for key, phrases in vocab.items():
            if any(not p.strip() for p in phrases):
                raise ValueError(f"{key}: empty phrase")
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
