"""The `speech` config section: recognizer engine, queue, confidence and matching thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from perceptd.daemon.speech.whisper import WhisperEngineConfig

# One member today; a new engine adds its config here (the `type` field picks it).
EngineConfig = Annotated[WhisperEngineConfig, Field(discriminator="type")]


class SpeechConfig(BaseModel):
    """Spoken commands: each VAD speech segment is transcribed; a confident transcript that the
    command matcher accepts becomes a text command (origin "speech")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="transcribe speech segments (needs the engine installed)")
    engine: EngineConfig = Field(default_factory=lambda: WhisperEngineConfig.model_validate({}),
                                 description="recognizer plugin")
    nice: int = Field(
        0, ge=0, le=19,
        description="scheduling niceness of the recognizer's threads (Linux; 0: same as the "
        "rest). A spoken command is rare and waited for: at 10, vision at 75-90 % load took the "
        "CPU first and end of speech -> event rose from ~0.8 to 1.5-1.8 s (bench/README.md)",
    )
    queue_size: int = Field(
        4, ge=1, le=256, description="segments waiting for the recognizer; the oldest is dropped"
    )
    early_ms: int = Field(
        100, ge=0, le=10_000,
        description="speculative recognition: this long into the silence after speech (before "
        "audio.hangover_ms closes the segment) the speech so far is transcribed; if the segment "
        "then closes there, that transcript is used (no second decode), else it is discarded "
        "(counted: speculative_wasted). 0: off (only closed segments are transcribed)",
    )
    prompt: Literal["commands", "vocabulary", "none"] = Field(
        "commands",
        description="decoding bias (Whisper initial_prompt): 'commands' = the command events' "
        "prompts (biases near-misses toward commands: 'turn down the fan' -> '... the volume'), "
        "'vocabulary' = only their action and object words, 'none'; the wake phrase is always included",
    )
    initial_prompt: str | None = Field(
        None, max_length=2000,
        description="explicit decoding bias text; when set it replaces the one `prompt` names",
    )
    min_avg_logprob: float = Field(
        -0.8, ge=-10, le=0, description="transcripts less confident than this are not commands"
    )
    max_no_speech_prob: float = Field(
        0.5, ge=0, le=1, description="transcripts the model thinks are not speech are not commands"
    )
    min_similarity: float = Field(
        0.8, ge=-1, le=1,
        description="deprecated, ignored: the command matcher (perceptd.daemon.commands) judges "
        "transcripts exactly as typed text; kept so older configs stay valid",
    )
    min_margin: float = Field(
        0.04, ge=0, le=2, description="deprecated, ignored (see min_similarity)"
    )
    wake_phrase: str | None = Field(
        None, min_length=1, max_length=100,
        description="when set, only transcripts starting with it are commands (it is stripped)",
    )

    def resolved(self, base: Path) -> SpeechConfig:
        """A relative engine model folder is relative to the config file."""
        model = getattr(self.engine, "model", None)
        if model is None or model.is_absolute():
            return self
        engine = self.engine.model_copy(update={"model": (base / model).resolve()})
        return self.model_copy(update={"engine": engine})
