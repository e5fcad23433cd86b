"""Published messages: frozen dataclasses with an explicit, versioned JSON wire format.

On the wire a message is multipart ``[topic, json]``; the JSON is one flat object: the
envelope the publisher stamps (``schema_version, topic, seq, run_id, t_capture_ns,
t_publish_ns, wall_time, model_version``) followed by the payload fields of its topic.
Producers build a payload and hand it over as ``Outbound(payload, t_capture_ns)``; only the
publisher makes an ``Envelope``. JSON only, never pickle: subscribers may be any language.
The contract is ``messages.schema.json`` (perceptd.daemon.publish); bump SCHEMA_VERSION on
any incompatible change.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from perceptd.daemon.names import EVENT_NAME

SCHEMA_VERSION = 1
EVENT_TOPIC_PREFIX = "event."
SHADOW_TOPIC_PREFIX = "shadow.event."  # a shadowed candidate bundle's events (docs/replay.md)
PHASES = ("start", "update", "end")
COMMAND_SOURCES = ("control", "speech")
SPEECH_VERDICTS = ("accepted", "empty", "no_wake_phrase", "no_speech", "low_confidence", "no_match",
                   "ambiguous")
HEALTH_STATES = ("initializing", "starting", "running", "degraded", "stopping", "stopped")
ENVELOPE_FIELDS = (
    "schema_version",
    "topic",
    "seq",
    "run_id",
    "t_capture_ns",
    "t_publish_ns",
    "wall_time",
    "model_version",
)

Phase = Literal["start", "update", "end"]
Top = tuple[tuple[str, float], ...]
_EVENT_NAME_RE = re.compile(EVENT_NAME)


class MessageError(ValueError):
    """A message that cannot be built or decoded; the text names the field at fault."""


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; NaN/inf are refused because strict JSON parsers reject them."""
    return _ENCODER.encode(obj).encode()


def wall_time_iso(ns: int | None = None) -> str:
    """ISO 8601 UTC with microseconds and a ``Z`` suffix (what JS/Go parsers accept)."""
    ns = time.time_ns() if ns is None else ns
    secs, rem = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{rem // 1000:06d}Z"


def _top(items: Iterable[Sequence[Any]]) -> Top:
    # float()/str() also turn numpy scalars into JSON-serialisable values, once, at the producer.
    return tuple((str(label), float(prob)) for label, prob in items)


def _top_wire(top: Top) -> list[list[Any]]:
    return [[label, prob] for label, prob in top]


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalising fields of a frozen dataclass


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise MessageError(msg)


def _build(cls: type, d: Mapping[str, Any], **converted: Any) -> Any:
    """cls(**d) with converted fields replaced; unknown or missing keys become MessageError."""
    try:
        return cls(**{**d, **converted})
    except TypeError as exc:
        raise MessageError(f"{cls.__name__}: {exc}") from None


# --------------------------------------------------------------------------- payloads


@dataclass(frozen=True, slots=True)
class Face:
    """One face box in frame pixels, ``[x1, y1, x2, y2]``, with the detector's score."""

    box: tuple[float, float, float, float]
    score: float

    def __post_init__(self) -> None:
        box = tuple(float(v) for v in self.box)
        _require(len(box) == 4, f"face box needs 4 numbers, got {len(box)}")
        _set(self, "box", box)
        _set(self, "score", float(self.score))

    def to_wire(self) -> dict[str, Any]:
        return {"box": list(self.box), "score": self.score}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Face:
        return _build(cls, d)


@dataclass(frozen=True, slots=True)
class VisionMessage:
    """Per-frame classifier output. Kept small: top labels and faces, no raw embeddings."""

    source: str
    frame_seq: int
    top: Top
    faces: tuple[Face, ...] = ()
    embed_norm: float | None = None

    def __post_init__(self) -> None:
        _require(self.frame_seq >= 0, f"frame_seq must be >= 0, got {self.frame_seq}")
        _set(self, "frame_seq", int(self.frame_seq))
        _set(self, "top", _top(self.top))
        _set(self, "faces", tuple(self.faces))
        _set(self, "embed_norm", _opt_float(self.embed_norm))

    @property
    def topic(self) -> str:
        return "vision"

    def to_wire(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "frame_seq": self.frame_seq,
            "top": _top_wire(self.top),
            "faces": [f.to_wire() for f in self.faces],
            "embed_norm": self.embed_norm,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> VisionMessage:
        return _build(cls, d, faces=tuple(Face.from_wire(f) for f in d.get("faces", ())))


@dataclass(frozen=True, slots=True)
class AudioMessage:
    """Per-window audio tagger output plus the VAD speech probability over the same window."""

    source: str
    top: Top
    speech_prob: float
    window_start_ns: int
    window_end_ns: int

    def __post_init__(self) -> None:
        _set(self, "top", _top(self.top))
        _set(self, "speech_prob", float(self.speech_prob))
        _require(
            self.window_start_ns <= self.window_end_ns,
            f"window_start_ns {self.window_start_ns} > window_end_ns {self.window_end_ns}",
        )

    @property
    def topic(self) -> str:
        return "audio"

    def to_wire(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "top": _top_wire(self.top),
            "speech_prob": self.speech_prob,
            "window_start_ns": self.window_start_ns,
            "window_end_ns": self.window_end_ns,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> AudioMessage:
        return _build(cls, d)


@dataclass(frozen=True, slots=True)
class SpeechMessage:
    """A VAD speech segment; the ASR fields stay None until a recogniser has run.

    Each segment is published twice: at segment close (text None) and, once recognised, as a
    transcript with the matcher's `verdict` and the `command` event it was handed on as.
    """

    source: str
    start_ns: int
    end_ns: int
    text: str | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    engine: str | None = None
    latency_ms: float | None = None
    command: str | None = None  # the command event the transcript became (None: not a command)
    verdict: str | None = None  # accepted or why not (SPEECH_VERDICTS)

    def __post_init__(self) -> None:
        _require(self.start_ns <= self.end_ns, f"start_ns {self.start_ns} > end_ns {self.end_ns}")
        for name in ("avg_logprob", "no_speech_prob", "latency_ms"):
            _set(self, name, _opt_float(getattr(self, name)))
        _require(self.verdict is None or self.verdict in SPEECH_VERDICTS,
                 f"speech verdict must be one of {SPEECH_VERDICTS}, got {self.verdict!r}")
        _require(self.command is None or bool(_EVENT_NAME_RE.fullmatch(self.command)),
                 f"command {self.command!r} does not match {EVENT_NAME}")

    @property
    def topic(self) -> str:
        return "speech"

    def to_wire(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "text": self.text,
            "avg_logprob": self.avg_logprob,
            "no_speech_prob": self.no_speech_prob,
            "engine": self.engine,
            "latency_ms": self.latency_ms,
            "command": self.command,
            "verdict": self.verdict,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> SpeechMessage:
        return _build(cls, d)


@dataclass(frozen=True, slots=True)
class CommandMessage:
    """A text command as received (control socket or recognised speech) and its outcome."""

    text: str
    source: Literal["control", "speech"]
    accepted: bool
    event: str | None = None

    def __post_init__(self) -> None:
        _require(self.source in COMMAND_SOURCES, f"command source must be one of "
                 f"{COMMAND_SOURCES}, got {self.source!r}")
        _set(self, "accepted", bool(self.accepted))

    @property
    def topic(self) -> str:
        return "command"

    def to_wire(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "source": self.source,
            "accepted": self.accepted,
            "event": self.event,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> CommandMessage:
        return _build(cls, d)


@dataclass(frozen=True, slots=True)
class SourceHealth:
    state: str
    detail: str | None = None
    reconnects: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"state": self.state, "detail": self.detail, "reconnects": self.reconnects}


@dataclass(frozen=True, slots=True)
class QueueHealth:
    depth: int
    dropped: int

    def to_wire(self) -> dict[str, Any]:
        return {"depth": self.depth, "dropped": self.dropped}


@dataclass(frozen=True, slots=True)
class HealthMessage:
    """Periodic daemon health: lifecycle state, per-source state, per-queue depth and drops."""

    state: str
    sources: Mapping[str, SourceHealth] = field(default_factory=dict)
    queues: Mapping[str, QueueHealth] = field(default_factory=dict)
    uptime_s: float = 0.0
    errors: tuple[str, ...] = ()  # recent refusals (bad config on SIGHUP, bad bundle), newest last

    def __post_init__(self) -> None:
        _require(self.state in HEALTH_STATES,
                 f"health state must be one of {HEALTH_STATES}, got {self.state!r}")
        _set(self, "sources", dict(self.sources))
        _set(self, "queues", dict(self.queues))
        _set(self, "uptime_s", float(self.uptime_s))
        _set(self, "errors", tuple(str(e) for e in self.errors))

    @property
    def topic(self) -> str:
        return "health"

    def to_wire(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "sources": {k: v.to_wire() for k, v in self.sources.items()},
            "queues": {k: v.to_wire() for k, v in self.queues.items()},
            "uptime_s": self.uptime_s,
            "errors": list(self.errors),
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> HealthMessage:
        try:
            sources = {k: SourceHealth(**v) for k, v in d.get("sources", {}).items()}
            queues = {k: QueueHealth(**v) for k, v in d.get("queues", {}).items()}
        except (TypeError, AttributeError) as exc:
            raise MessageError(f"HealthMessage: {exc}") from None
        return _build(cls, d, sources=sources, queues=queues)


@dataclass(frozen=True, slots=True)
class ModalityScore:
    """One modality's share of a fused event: attention weight, its own score, its evidence."""

    weight: float
    score: float
    top: Top = ()

    def __post_init__(self) -> None:
        _set(self, "weight", float(self.weight))
        _set(self, "score", float(self.score))
        _set(self, "top", _top(self.top))

    def to_wire(self) -> dict[str, Any]:
        return {"weight": self.weight, "score": self.score, "top": _top_wire(self.top)}


def _check_event(msg: EventMessage | ShadowEventMessage) -> None:
    """What an event phase must satisfy, live or shadow."""
    _require(bool(_EVENT_NAME_RE.fullmatch(msg.event)),
             f"event name {msg.event!r} does not match {EVENT_NAME}")
    _require(msg.phase in PHASES, f"phase must be one of {PHASES}, got {msg.phase!r}")
    _set(msg, "score", float(msg.score))
    _set(msg, "modalities", dict(msg.modalities))


def _event_wire(msg: EventMessage | ShadowEventMessage) -> dict[str, Any]:
    return {
        "event": msg.event,
        "phase": msg.phase,
        "score": msg.score,
        "modalities": {k: v.to_wire() for k, v in msg.modalities.items()},
        "sample_id": msg.sample_id,
    }


def _event_from_wire(cls: type, d: Mapping[str, Any]) -> Any:
    try:
        mods = {k: ModalityScore(**v) for k, v in d.get("modalities", {}).items()}
    except (TypeError, AttributeError) as exc:
        raise MessageError(f"{cls.__name__}: {exc}") from None
    return _build(cls, d, modalities=mods)


@dataclass(frozen=True, slots=True)
class EventMessage:
    """A fused event phase; the per-modality weights are the explanation that travels with it."""

    event: str
    phase: Phase
    score: float
    modalities: Mapping[str, ModalityScore]
    sample_id: str | None = None
    snapshot: str | None = None  # on a start, where `snapshots:` keeps frames; absent otherwise

    def __post_init__(self) -> None:
        _check_event(self)

    @property
    def topic(self) -> str:
        return EVENT_TOPIC_PREFIX + self.event

    def to_wire(self) -> dict[str, Any]:
        return {
            **_event_wire(self),
            # only where a snapshot was kept: with `snapshots:` off (the default) the wire is as
            # it was, so readers of schema_version 1 before the field need no change
            **({"snapshot": self.snapshot} if self.snapshot is not None else {}),
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> EventMessage:
        return _event_from_wire(cls, d)


@dataclass(frozen=True, slots=True)
class ShadowEventMessage:
    """An event phase of the candidate bundle a shadow runs beside the live one (`perceptd reload
    --shadow`): the fields of `event.<name>` plus the candidate's version, on
    `shadow.event.<name>`.  The envelope's model_version stays the live bundle's."""

    event: str
    phase: Phase
    score: float
    modalities: Mapping[str, ModalityScore]
    candidate_version: str
    sample_id: str | None = None  # always None: a shadow logs no samples

    def __post_init__(self) -> None:
        _check_event(self)
        _require(bool(self.candidate_version), "candidate_version must not be empty")

    @property
    def topic(self) -> str:
        return SHADOW_TOPIC_PREFIX + self.event

    def to_wire(self) -> dict[str, Any]:
        return {**_event_wire(self), "candidate_version": self.candidate_version}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> ShadowEventMessage:
        return _event_from_wire(cls, d)


Payload = (
    VisionMessage | AudioMessage | SpeechMessage | CommandMessage | HealthMessage | EventMessage
    | ShadowEventMessage
)
_BY_TOPIC: Mapping[str, type] = {
    "vision": VisionMessage,
    "audio": AudioMessage,
    "speech": SpeechMessage,
    "command": CommandMessage,
    "health": HealthMessage,
}


def payload_type(topic: str) -> type:
    """The payload class for a topic (``event.<name>`` -> EventMessage,
    ``shadow.event.<name>`` -> ShadowEventMessage)."""
    if topic.startswith(EVENT_TOPIC_PREFIX):
        return EventMessage
    if topic.startswith(SHADOW_TOPIC_PREFIX):
        return ShadowEventMessage
    try:
        return _BY_TOPIC[topic]
    except KeyError:
        raise MessageError(f"unknown topic {topic!r}") from None


# --------------------------------------------------------------------------- envelope


@dataclass(frozen=True, slots=True)
class Outbound:
    """What producers put on the publish queue: a payload and its monotonic capture time."""

    payload: Payload
    t_capture_ns: int


@dataclass(frozen=True, slots=True)
class Envelope:
    """Fields stamped by the publisher on every message."""

    topic: str
    seq: int
    run_id: str
    t_capture_ns: int
    t_publish_ns: int
    wall_time: str
    model_version: str
    schema_version: int = SCHEMA_VERSION

    def to_wire(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "topic": self.topic,
            "seq": self.seq,
            "run_id": self.run_id,
            "t_capture_ns": self.t_capture_ns,
            "t_publish_ns": self.t_publish_ns,
            "wall_time": self.wall_time,
            "model_version": self.model_version,
        }


@dataclass(frozen=True, slots=True)
class Message:
    """A stamped message: envelope + payload; ``to_wire``/``from_wire`` are exact inverses."""

    envelope: Envelope
    payload: Payload

    def __post_init__(self) -> None:
        _require(self.envelope.topic == self.payload.topic,
                 f"envelope topic {self.envelope.topic!r} != payload topic "
                 f"{self.payload.topic!r}")

    @property
    def topic(self) -> str:
        return self.envelope.topic

    def to_dict(self) -> dict[str, Any]:
        return {**self.envelope.to_wire(), **self.payload.to_wire()}

    def to_wire(self) -> list[bytes]:
        return [self.topic.encode(), dumps(self.to_dict())]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Message:
        _require(isinstance(d, Mapping), f"message must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ENVELOPE_FIELDS if k not in d]
        _require(not missing, f"message lacks envelope field(s) {missing}")
        version = d["schema_version"]
        _require(version == SCHEMA_VERSION,
                 f"schema_version {version!r} not supported (this reader: {SCHEMA_VERSION})")
        env = _build(Envelope, {k: d[k] for k in ENVELOPE_FIELDS})
        body = {k: v for k, v in d.items() if k not in ENVELOPE_FIELDS}
        return cls(envelope=env, payload=payload_type(env.topic).from_wire(body))

    @classmethod
    def from_wire(cls, frames: Sequence[bytes]) -> Message:
        _require(len(frames) == 2, f"expected 2 frames [topic, json], got {len(frames)}")
        try:
            d = json.loads(frames[1])
        except (ValueError, RecursionError) as exc:
            raise MessageError(f"message body is not JSON: {exc}") from None
        msg = cls.from_dict(d)
        _require(frames[0] == msg.topic.encode(),
                 f"topic frame {frames[0]!r} != body topic {msg.topic!r}")
        return msg
