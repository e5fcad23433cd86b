"""Control requests: bytes from the control socket -> one typed, validated request.

Everything a peer can send is either a request model below or a RequestError with a reason
(for counters) and one clear line (for the reply). A bare UTF-8 string that is not JSON
object/array syntax is a command, so ``echo "turn on the lights" | zmq-send`` works.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from perceptd.daemon.names import EVENT_NAME

REQUEST_TYPES = ("command", "label", "status", "reload", "shadow")
MAX_COMMAND_CHARS = 1000
SAMPLE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class CommandRequest(_Request):
    """A text command, as if spoken."""

    type: Literal["command"] = "command"
    text: str = Field(min_length=1, max_length=MAX_COMMAND_CHARS, description="the command text")

    @field_validator("text")
    @classmethod
    def _printable(cls, v: str) -> str:
        if any(unicodedata.category(c) == "Cc" for c in v):
            raise ValueError("command text contains control characters")
        return v


class LabelRequest(_Request):
    """Attach an event label to a logged sample (on-device training data)."""

    type: Literal["label"]
    sample: str = Field(pattern=SAMPLE_ID, description="sample id as listed by `samples list`")
    event: str = Field(pattern=EVENT_NAME, description="event name from the configuration")


class StatusRequest(_Request):
    type: Literal["status"]


class ReloadRequest(_Request):
    """Re-read the bundle pointer (and hot-swap if it changed)."""

    type: Literal["reload"]


class ShadowRequest(_Request):
    """Run a candidate bundle's fusion head beside the live one (docs/replay.md, Shadow):
    `version` starts it (for `minutes`), `stop` ends it; neither: the report."""

    type: Literal["shadow"]
    version: str | None = Field(default=None, min_length=1, max_length=256,
                                pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
                                description="candidate bundle version (a folder of bundle.dir)")
    minutes: float | None = Field(default=None, gt=0, le=10080,
                                  description="shadow period (default: shadow.default_minutes)")
    stop: bool = Field(default=False, description="end the running shadow (its report stays)")


AnyRequest = CommandRequest | LabelRequest | StatusRequest | ReloadRequest | ShadowRequest
Request = Annotated[AnyRequest, Field(discriminator="type")]


class RequestError(ValueError):
    """A request that cannot be served: `reason` keys the error counter, str() is the reply."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@functools.cache
def _adapter() -> TypeAdapter[Any]:
    return TypeAdapter(Request)


def _first_error(kind: str, exc: ValidationError) -> RequestError:
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"][1:]]  # loc[0] is the union tag
    where = ".".join(loc) or "request"
    msg = err["msg"].removeprefix("Value error, ")
    return RequestError("invalid", f"invalid {kind} request: {where}: {msg}")


def validate_request(obj: Any) -> AnyRequest:
    """A decoded JSON value -> typed request (strict: no type coercion)."""
    if isinstance(obj, str):
        obj = {"type": "command", "text": obj}
    if not isinstance(obj, dict):
        kind = {list: "array", bool: "boolean", type(None): "null"}.get(type(obj), "number")
        raise RequestError("not_object", f"request must be a JSON object, got a JSON {kind}")
    kind = obj.get("type")
    if kind is None:
        raise RequestError(
            "missing_type", f"request has no 'type' (one of {', '.join(REQUEST_TYPES)})"
        )
    if not isinstance(kind, str) or kind not in REQUEST_TYPES:
        shown = repr(kind)[:60]
        raise RequestError(
            "unknown_type", f"unknown request type {shown} (one of {', '.join(REQUEST_TYPES)})"
        )
    try:
        return _adapter().validate_python(obj, strict=True)
    except ValidationError as exc:
        raise _first_error(kind, exc) from None


def parse_request(raw: bytes, max_bytes: int = 65536) -> AnyRequest:
    """One request frame -> typed request, or RequestError naming what is wrong."""
    if len(raw) > max_bytes:
        raise RequestError("too_large", f"request too large: {len(raw)} bytes > {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError("bad_utf8", f"request is not valid UTF-8 (byte {exc.start})") from None
    stripped = text.strip()
    if not stripped:
        raise RequestError("empty", "empty request")
    if stripped[0] not in '{["':
        return validate_request(stripped)  # a bare string is a command
    try:
        obj = json.loads(stripped)
    except RecursionError:
        raise RequestError("bad_json", "request is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise RequestError("bad_json", f"request is not valid JSON: {exc}") from None
    return validate_request(obj)
