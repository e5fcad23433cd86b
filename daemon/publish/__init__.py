"""Publishing: the ZeroMQ PUB side (zmq_pub) and the JSON Schema every message must satisfy.

The schema ships as package data (``messages.schema.json`` here; ``schema/`` at the repository
root holds an identical copy for readers of the repo). ``validate_message`` compiles the
validators once per process and names the failing field in one line.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

SCHEMA_FILE = "messages.schema.json"


class SchemaValidationError(ValueError):
    """A message that does not satisfy messages.schema.json."""


def load_schema() -> dict[str, Any]:
    """The message schema as shipped with the installed package."""
    return json.loads(resources.files(__name__).joinpath(SCHEMA_FILE).read_text("utf-8"))


def _describe(e: Any) -> tuple[int, str]:
    """(rank, 'path: problem'); unexpected-field errors rank last because a failed envelope
    check also makes every envelope field 'unevaluated'."""
    path = [str(p) for p in e.absolute_path]
    rank = 0
    if e.validator == "required" and isinstance(e.instance, Mapping):
        missing = [p for p in e.validator_value if p not in e.instance]
        path, problem = path + missing[:1], "required field missing"
    elif e.validator in ("unevaluatedProperties", "additionalProperties"):
        names = re.findall(r"'([^']*)'", e.message)
        path, problem = path + names[:1], "unexpected field"
        rank = 1 if e.validator == "unevaluatedProperties" else 0
    else:
        problem = e.message
    return rank, f"{'/'.join(path) or '<message>'}: {problem}"


class MessageValidator:
    """Compiled validators: the whole schema, plus one per topic for precise error messages."""

    def __init__(self, schema: Mapping[str, Any] | None = None) -> None:
        from jsonschema import Draft202012Validator  # only validating code pays the import

        self.schema = dict(schema) if schema is not None else load_schema()
        Draft202012Validator.check_schema(self.schema)
        defs = self.schema["$defs"]
        self._whole = Draft202012Validator(self.schema)
        self._by_kind = {
            kind: Draft202012Validator({"$ref": f"#/$defs/{kind}", "$defs": defs})
            for kind in ("event", "shadow_event", "vision", "audio", "speech", "command", "health")
        }

    def errors(self, msg: Any) -> list[str]:
        """Every violation as 'path: message'; empty when valid."""
        topic = msg.get("topic") if isinstance(msg, Mapping) else None
        kind = topic
        if isinstance(topic, str) and topic.startswith("event."):
            kind = "event"
        elif isinstance(topic, str) and topic.startswith("shadow.event."):
            kind = "shadow_event"
        validator = self._by_kind.get(kind) if isinstance(kind, str) else None
        if validator is None:
            if not list(self._whole.iter_errors(msg)):
                return []
            return [f"topic: {topic!r} is not a known topic "
                    "(event.<name>, shadow.event.<name>, vision, audio, speech, command, health)"]
        described = sorted(_describe(e) for e in validator.iter_errors(msg))
        return [text for _, text in described]

    def validate(self, msg: Any) -> None:
        errs = self.errors(msg)
        if errs:
            more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
            raise SchemaValidationError(errs[0] + more)


@functools.cache
def default_validator() -> MessageValidator:
    """The validator for the shipped schema, compiled on first use."""
    return MessageValidator()


def validate_message(msg: Any) -> None:
    """Raise SchemaValidationError (one line, naming the field) unless msg is a valid message."""
    default_validator().validate(msg)
