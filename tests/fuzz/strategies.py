"""Hypothesis strategies for what a hostile or broken client can put on the control socket."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from perceptd.daemon.control.requests import REQUEST_TYPES

# ids and paths that try to leave the state directory or confuse a parser
TRAVERSAL = [
    "../../etc/passwd", "..", ".", "/etc/shadow", "a/../../b", "..\\..\\windows", "%2e%2e%2f",
    "sample\x00.npz", "CON", "a" * 129, "", " ", "20260101T000000-0123456789ab/../x",
    "20260101T000000-0123456789ab", "~root", "$(reboot)", "`id`", "a\nb", "😀",
]

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
                | st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)

type_field = st.sampled_from(REQUEST_TYPES) | st.text(max_size=12) | json_scalars
text_field = (st.text(max_size=60) | st.text(min_size=990, max_size=1100)
              | st.sampled_from(["", " ", "\x00", "\u202e", "\ud800", "turn on the lights"]) | json_values)
sample_field = st.sampled_from(TRAVERSAL) | st.text(max_size=140) | json_scalars
event_field = st.sampled_from(["lights_on", "../x", "", "A", "x" * 100]) | st.text(max_size=40) | json_scalars

requests = st.fixed_dictionaries(
    {"type": type_field},
    optional={"text": text_field, "sample": sample_field, "event": event_field,
              "extra": json_values, "path": sample_field},
)


def encode(obj: object) -> bytes:
    """JSON as a client would send it (NaN/Infinity included: Python's json accepts them)."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid-looking request with bytes flipped, inserted, deleted or cut off."""
    raw = bytearray(encode(draw(requests)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[i] ^= draw(st.integers(1, 255))
        elif op == "insert":
            raw[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and raw:
            del raw[i]
        elif op == "truncate":
            raw = raw[:i]
    return bytes(raw)


special = st.sampled_from([
    b"", b" ", b"\n", b"{", b"[", b'"', b"null", b"0", b"-1e999", b"NaN", b"{}", b"[]",
    b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000, b"\xff\xfe\x00\x00",
    b'{"type":"command","text":"' + b"a" * 70_000 + b'"}', b"x" * 65_537, b"\xef\xbb\xbf{}",
    b'{"type":"status","type":"reload"}', b'{"__proto__":{"type":"reload"}}',
])

payloads = (requests.map(encode) | st.binary(max_size=300) | mutated() | special
            | st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")))

# envelopes: one frame (normal), none, several (multipart)
frames = st.one_of(
    payloads.map(lambda p: [p]),
    st.lists(payloads, min_size=0, max_size=4),
)
