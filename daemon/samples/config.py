"""The `samples:` config section: what gets logged, how much, for how long, and retraining.

Plugin style: this section lives with the feature; the root config only imports it.  Every
field has a default, a description and bounds; relative paths resolve against the config
file's folder (see `SamplesConfig.resolved`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TRIGGERS = ("low_confidence", "disagreement", "label", "command", "random")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TriggersConfig(_Section):
    """Which situations log a sample (each one on/off)."""

    low_confidence: bool = Field(default=True, description="a score close to its event's threshold")
    band: float = Field(
        default=0.1, gt=0, le=0.5, description="low confidence: |score - threshold_on| <= band"
    )
    disagreement: bool = Field(
        default=True, description="one modality confident about an event while another present one is not"
    )
    confident: float = Field(
        default=0.8, gt=0, lt=1, description="disagreement: a modality score this high ..."
    )
    contradicting: float = Field(default=0.2, gt=0, lt=1, description="... while another is at most this")
    label: bool = Field(
        default=True, description="a `label` request with sample 'now' logs the current context, labelled"
    )
    command: bool = Field(
        default=True, description="a command that becomes event E labels the context of its window with E"
    )
    random_per_hour: float = Field(
        default=2.0, ge=0, le=36_000, description="random samples of the current context per hour (0: off)"
    )
    min_interval_s: float = Field(
        default=30.0, ge=0, le=86_400, description="at most one sample per (trigger, event) in this time"
    )

    @model_validator(mode="after")
    def _order(self) -> TriggersConfig:
        if self.contradicting >= self.confident:
            raise ValueError(
                f"contradicting ({self.contradicting}) must be below confident ({self.confident})"
            )
        return self


def _default_trigger_caps() -> dict[str, int]:
    return {"low_confidence": 60, "disagreement": 60, "label": 600, "command": 120, "random": 60}


class CapsConfig(_Section):
    """Rate caps (sliding hour): a burst of triggers cannot flood the disk."""

    per_hour: int = Field(default=600, ge=0, le=1_000_000, description="samples per hour, all triggers")
    per_trigger_per_hour: dict[str, int] = Field(
        default_factory=_default_trigger_caps, description="samples per hour per trigger"
    )

    @model_validator(mode="after")
    def _known(self) -> CapsConfig:
        unknown = sorted(set(self.per_trigger_per_hour) - set(TRIGGERS))
        if unknown:
            raise ValueError(f"unknown trigger(s) {unknown} (one of {', '.join(TRIGGERS)})")
        bad = {k: v for k, v in self.per_trigger_per_hour.items() if v < 0}
        if bad:
            raise ValueError(f"caps must be >= 0, got {bad}")
        return self


class RetentionConfig(_Section):
    """How long and how much: oldest first; labelled samples are kept unless told otherwise."""

    max_age_days: float = Field(
        default=30.0, ge=0, le=36_500, description="older samples are deleted (0: keep)"
    )
    max_bytes: int = Field(
        default=512 * 1024 * 1024, ge=0, description="quota: the store never grows past this many bytes"
    )
    rotate: bool = Field(
        default=True, description="at the quota, delete the oldest evictable samples to make room "
        "(false: new samples are dropped and counted)",
    )
    keep_labelled: bool = Field(
        default=True, description="labelled samples are never deleted by age or rotation (only by purge)"
    )
    min_free_mb: float = Field(
        default=64.0, ge=0, le=1_000_000,
        description="disk reserve: below this free space samples are dropped"
    )
    interval_s: float = Field(default=300.0, gt=0, le=86_400, description="how often retention runs")


class RawMediaConfig(_Section):
    """Raw content beside the embeddings: off by default (privacy)."""

    frames: bool = Field(default=False, description="store the camera frame as JPEG")
    audio: bool = Field(default=False, description="store the audio window as a WAV clip")
    text: bool = Field(default=False, description="store the command text (its embedding is always kept)")
    jpeg_quality: int = Field(default=85, ge=10, le=100, description="JPEG quality of stored frames")


class EncryptionConfig(_Section):
    """AES-GCM at rest (needs the `cryptography` package); the index never holds content."""

    enabled: bool = Field(default=False, description="encrypt every sample file")
    key_file: Path = Field(
        default=Path("state/samples.key"), description="32-byte key, created 0600 on first use"
    )


class GateConfig(_Section):
    """When a retrained bundle may replace the running one."""

    f1_margin: float = Field(default=0.02, ge=0, le=1, description="largest per-event F1 drop allowed")
    slice_margin: float = Field(
        default=0.05, ge=0, le=1,
        description="largest macro-F1 drop allowed on any slice (source, modalities)"
    )
    min_slice_samples: int = Field(
        default=5, ge=1, le=100_000, description="smaller slices are reported only"
    )
    latency_budget_ms: float = Field(
        default=10.0, gt=0, le=10_000, description="p95 of one fusion-head call (4 rows, all events)"
    )
    baseline_margin: float = Field(
        default=0.1, ge=0, le=1, description="a taught event's held-out F1 must beat every label-permutation "
        "run by this much",
    )
    zero_shot_margin: float = Field(
        default=0.0, ge=-1, le=1,
        description="... and be at least the zero-shot prompt's (threshold tuned on "
        "the training split) plus this",
    )
    permutation_runs: int = Field(
        default=3, ge=0, le=100, description="label-permutation baselines trained inside the gate (0: none)"
    )
    recordings: list[Path] = Field(
        default_factory=list,
        description="labelled recordings (perceptd label-range) replayed with the current and the "
        "candidate bundle: the candidate must not add a wrong event nor lose a right one on the "
        "labelled ranges (empty: rule off; `perceptd retrain --recordings DIR...` overrides)",
    )


class SplitConfig(_Section):
    """The held-out split: whole time blocks, so no held-out sample has a near-twin in training."""

    by: Literal["time", "session"] = Field(
        default="time",
        description="time: fixed slots of block_s; session: a gap longer than block_s without "
        "samples starts a new block",
    )
    block_s: float = Field(
        default=600.0, gt=0, le=30 * 86_400, description="block length (time) or gap (session)"
    )
    per_source: bool = Field(
        default=True, description="blocks per source id (samples sharing a source in a slot stay together)"
    )
    guard_s: float = Field(
        default=60.0, ge=0, le=86_400,
        description="training samples this close in time to a held-out sample of "
        "the same source are left out of training",
    )
    min_blocks: int = Field(
        default=3, ge=1, le=10_000,
        description="per taught event: held-out blocks with a positive (and with a "
        "negative) needed to judge; fewer: exit 4, not enough independent data",
    )


class RetrainConfig(_Section):
    """`perceptd retrain`: split, training and where the reports go."""

    dir: Path = Field(default=Path("state/retrain"), description="gate reports and rejected bundles")
    holdout: float = Field(
        default=0.3, gt=0, lt=1, description="held-out fraction (of blocks, per taught event)"
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    seed: int = Field(default=0, ge=0, description="split and initialisation seed")
    epochs: int = Field(default=60, ge=1, le=100_000, description="passes over the labelled samples")
    batch_size: int = Field(default=64, ge=1, le=1_000_000, description="samples per optimisation step")
    lr: float = Field(default=0.01, gt=0, le=1, description="Adam learning rate")
    weight_decay: float = Field(
        default=1e-3, ge=0, le=10,
        description="pull towards the current head (keeps other events as they are)"
    )
    infonce_weight: float = Field(default=0.5, ge=0, le=100, description="weight of the contrastive term")
    infonce_temperature: float = Field(default=0.1, gt=0, le=10, description="InfoNCE temperature")
    distill_weight: float = Field(
        default=0.5, ge=0, le=100, description="keep unlabelled samples' scores near the current head's"
    )
    calibration_scale: tuple[float, float] = Field(
        default=(0.25, 4.0), description="bounds of the per-event calibration scale k (no step functions)"
    )
    min_labelled: int = Field(default=8, ge=1, le=1_000_000, description="refuse to train on fewer")
    max_unlabelled: int = Field(default=2000, ge=0, le=10_000_000, description="unlabelled samples used")
    gate: GateConfig = Field(default_factory=GateConfig)

    @model_validator(mode="after")
    def _scale(self) -> RetrainConfig:
        lo, hi = self.calibration_scale
        if not 0 < lo <= 1 <= hi <= 100:
            raise ValueError(f"calibration_scale must be [lo, hi] with 0 < lo <= 1 <= hi <= 100, got "
                             f"[{lo}, {hi}]")
        return self


class SamplesConfig(_Section):
    """On-device samples for retraining (embeddings always; raw media only if allowed)."""

    enabled: bool = Field(default=True, description="log samples on the triggers below")
    dir: Path = Field(default=Path("state/samples"), description="index + sample files (created 0700)")
    triggers: TriggersConfig = Field(default_factory=TriggersConfig)
    caps: CapsConfig = Field(default_factory=CapsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    raw_media: RawMediaConfig = Field(default_factory=RawMediaConfig)
    encryption: EncryptionConfig = Field(default_factory=EncryptionConfig)
    queue_size: int = Field(default=64, ge=1, le=100_000, description="samples waiting for the disk writer")
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)

    def resolved(self, base: Path) -> SamplesConfig:
        """Relative paths are relative to the config file's folder."""
        out = self.model_copy(deep=True)
        if not out.dir.is_absolute():
            out.dir = (base / out.dir).resolve()
        if not out.encryption.key_file.is_absolute():
            out.encryption.key_file = (base / out.encryption.key_file).resolve()
        if not out.retrain.dir.is_absolute():
            out.retrain.dir = (base / out.retrain.dir).resolve()
        out.retrain.gate.recordings = [p if p.is_absolute() else (base / p).resolve()
                                       for p in out.retrain.gate.recordings]
        return out
