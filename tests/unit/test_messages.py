"""Message dataclasses <-> wire JSON, and the shipped JSON Schema, on every message type."""

from __future__ import annotations

import copy
import json
import math
import uuid
from pathlib import Path

import numpy as np
import pytest

from perceptd.daemon.messages import (
    SCHEMA_VERSION,
    AudioMessage,
    CommandMessage,
    Envelope,
    EventMessage,
    Face,
    HealthMessage,
    Message,
    MessageError,
    ModalityScore,
    QueueHealth,
    ShadowEventMessage,
    SourceHealth,
    SpeechMessage,
    VisionMessage,
    dumps,
    wall_time_iso,
)
from perceptd.daemon.publish import (
    MessageValidator,
    SchemaValidationError,
    load_schema,
    validate_message,
)

REPO = Path(__file__).resolve().parents[2]
RUN_ID = uuid.uuid4().hex


def payloads() -> list:
    return [
        EventMessage(
            event="cat_present",
            phase="start",
            score=0.87,
            modalities={
                "vision": ModalityScore(0.7, 0.61, [("tabby", 0.61), ("tiger cat", 0.2)]),
                "audio": ModalityScore(0.3, -0.05, [("Meow", 0.4)]),
            },
            sample_id="20250101T120000_0001",
        ),
        EventMessage(event="lights_on", phase="end", score=0.1, modalities={}),
        VisionMessage(
            source="cam0",
            frame_seq=12,
            top=[("tabby", 0.61), ("tiger cat", 0.2), ("Egyptian cat", 0.05)],
            faces=[Face((10, 20, 110, 140), 0.99)],
            embed_norm=1.0,
        ),
        VisionMessage(source="cam1", frame_seq=0, top=[]),
        AudioMessage("mic", [("Speech", 0.93)], 0.97, 1_000, 961_000_000),
        SpeechMessage("mic", 1_500_000_000, 2_900_000_000),
        SpeechMessage("mic", 1, 2, "turn on the lights", -0.21, 0.01, "whisper-tiny.en", 380.0),
        CommandMessage("turn on the lights", "control", True, "lights_on"),
        CommandMessage("sing a song", "speech", False),
        HealthMessage(
            "degraded",
            sources={"cam0": SourceHealth("running"), "mic": SourceHealth("retrying", "gone", 3)},
            queues={"vision": QueueHealth(2, 17)},
            uptime_s=12.5,
        ),
        HealthMessage("starting"),
        ShadowEventMessage(event="cat_present", phase="start", score=0.8,
                           modalities={"vision": ModalityScore(1.0, 0.6, [("tabby", 0.61)])},
                           candidate_version="20261206-candidate"),
    ]


def stamp(payload, seq: int = 0) -> Message:
    env = Envelope(payload.topic, seq, RUN_ID, 1_000, 2_000, wall_time_iso(), "20250101-1")
    return Message(env, payload)


@pytest.mark.parametrize("payload", payloads(), ids=lambda p: p.topic)
def test_round_trip_is_exact(payload) -> None:
    msg = stamp(payload, seq=5)
    frames = msg.to_wire()
    assert frames[0] == payload.topic.encode()
    assert Message.from_wire(frames) == msg
    assert Message.from_dict(json.loads(frames[1])) == msg


@pytest.mark.parametrize("payload", payloads(), ids=lambda p: p.topic)
def test_schema_accepts_every_message_type(payload) -> None:
    d = json.loads(stamp(payload).to_wire()[1])
    validate_message(d)
    assert d["schema_version"] == SCHEMA_VERSION


def test_numpy_scalars_become_plain_json() -> None:
    vm = VisionMessage("cam0", np.int64(3), [("cat", np.float32(0.5))], embed_norm=np.float32(2))
    d = json.loads(stamp(vm).to_wire()[1])
    assert d["top"] == [["cat", 0.5]] and d["embed_norm"] == 2.0
    validate_message(d)


def test_nan_is_refused_before_it_reaches_the_wire() -> None:
    with pytest.raises(ValueError):
        dumps(stamp(AudioMessage("mic", [("x", math.nan)], 0.1, 0, 1)).to_dict())


def _valid(topic_index: int = 0) -> dict:
    return json.loads(stamp(payloads()[topic_index]).to_wire()[1])


def _set_path(d: dict, path: tuple, value) -> dict:
    d = copy.deepcopy(d)
    node = d
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


BAD = [
    # (payload index, path, value, field named in the error)
    (0, ("seq",), -1, "seq"),
    (0, ("seq",), 1.5, "seq"),
    (0, ("phase",), "middle", "phase"),
    (0, ("extra",), 1, "extra"),
    (0, ("run_id",), KeyError, "run_id"),
    (0, ("run_id",), "not-a-uuid", "run_id"),
    (0, ("wall_time",), "2025-01-01T12:00:00", "wall_time"),
    (0, ("schema_version",), 2, "schema_version"),
    (0, ("t_capture_ns",), "123", "t_capture_ns"),
    (0, ("topic",), "event.Bad-Name", "topic"),
    (0, ("event",), "Bad", "event"),
    (0, ("score",), 1.5, "score"),
    (0, ("modalities", "vision", "weight"), -0.1, "modalities/vision/weight"),
    (0, ("modalities", "vision", "gain"), 1, "modalities/vision"),
    (0, ("modalities", "vision", "top", 0), ["tabby", 0.6, 1], "modalities/vision/top/0"),
    (2, ("faces", 0, "box"), [1, 2, 3], "faces/0/box"),
    (2, ("top", 0, 1), "high", "top/0/1"),
    (4, ("speech_prob",), None, "speech_prob"),
    (5, ("start_ns",), KeyError, "start_ns"),
    (7, ("source",), "email", "source"),
    (7, ("accepted",), "yes", "accepted"),
    (9, ("state",), "exploded", "state"),
    (9, ("queues", "vision", "dropped"), -1, "queues/vision/dropped"),
    (9, ("sources", "mic", "colour"), "red", "sources/mic"),
]


@pytest.mark.parametrize(("index", "path", "value", "named"), BAD,
                         ids=[f"{b[0]}-{'/'.join(map(str, b[1]))}" for b in BAD])
def test_schema_rejects_bad_messages_naming_the_field(index, path, value, named) -> None:
    bad = _set_path(_valid(index), path, value)
    with pytest.raises(SchemaValidationError) as exc:
        validate_message(bad)
    assert str(exc.value).startswith(named), str(exc.value)


@pytest.mark.parametrize("value", [None, [], "vision", 3, {"topic": "lidar"}, {}])
def test_schema_rejects_non_messages(value) -> None:
    with pytest.raises(SchemaValidationError):
        validate_message(value)


def test_whole_schema_oneof_agrees_with_per_topic_validation() -> None:
    from jsonschema import Draft202012Validator

    whole = Draft202012Validator(load_schema())
    for p in payloads():
        assert whole.is_valid(_set_path(json.loads(stamp(p).to_wire()[1]), ("seq",), 3))
        assert not whole.is_valid(_set_path(json.loads(stamp(p).to_wire()[1]), ("seq",), -3))


def test_shipped_schema_equals_repo_copy() -> None:
    repo_copy = (REPO / "schema" / "messages.schema.json").read_text("utf-8")
    assert json.loads(repo_copy) == load_schema()
    assert MessageValidator(json.loads(repo_copy)).errors(_valid()) == []


def test_shadow_event_is_its_own_topic_and_must_name_the_candidate() -> None:
    d = json.loads(stamp(payloads()[-1]).to_wire()[1])
    assert d["topic"] == "shadow.event.cat_present" and d["candidate_version"] == "20261206-candidate"
    for bad in ({**d, "topic": "event.cat_present"}, {k: v for k, v in d.items() if k != "candidate_version"},
                {**d, "snapshot": "20260101T000000-0123456789ab"}):
        with pytest.raises(SchemaValidationError):
            validate_message(bad)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: EventMessage("Cat", "start", 0.5, {}), "event name"),
        (lambda: EventMessage("cat", "begin", 0.5, {}), "phase"),
        (lambda: CommandMessage("x", "email", True), "source"),
        (lambda: HealthMessage("exploded"), "state"),
        (lambda: AudioMessage("mic", [], 0.5, 10, 5), "window_start_ns"),
        (lambda: Face((1, 2, 3), 0.5), "4 numbers"),
        (lambda: Message(stamp(HealthMessage("running")).envelope,
                         CommandMessage("x", "control", True)), "topic"),
    ],
)
def test_payload_invariants_raise_message_error(make, needle) -> None:
    with pytest.raises(MessageError, match=needle):
        make()


def test_from_wire_refuses_mismatch_version_and_unknown_fields() -> None:
    topic, body = stamp(payloads()[7]).to_wire()
    with pytest.raises(MessageError, match="topic frame"):
        Message.from_wire([b"vision", body])
    with pytest.raises(MessageError, match="2 frames"):
        Message.from_wire([body])
    d = json.loads(body)
    with pytest.raises(MessageError, match="schema_version"):
        Message.from_dict({**d, "schema_version": 2})
    with pytest.raises(MessageError, match="unexpected keyword"):
        Message.from_dict({**d, "colour": "red"})
    with pytest.raises(MessageError, match="unknown topic"):
        Message.from_dict({**d, "topic": "lidar"})
    with pytest.raises(MessageError, match="not JSON"):
        Message.from_wire([topic, b"{nope"])


def test_wall_time_is_iso_utc_with_z() -> None:
    assert wall_time_iso(0) == "1970-01-01T00:00:00.000000Z"
    assert wall_time_iso(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456Z"
