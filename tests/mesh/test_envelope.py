"""The envelope codec: pure, no server. Round trips, and every kind of garbage is an EnvelopeError."""

from __future__ import annotations

import contextlib
import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import Envelope, EnvelopeError, MeshError, decode_envelope, encode_envelope
from mesh.envelope import envelope_to_message

FIELDS = {
    "message_id", "session_id", "from_handle", "to_handle", "payload", "content_type",
    "sent_at", "type", "trace_id", "sequence",
}


def make(**overrides: object) -> Envelope:
    values: dict[str, object] = {
        "message_id": "m-1", "session_id": "s-1", "from_handle": "deploy", "to_handle": "memory",
        "payload": "héllo ✓", "content_type": "text/plain", "sent_at": 1700000000.25, "type": "message",
        "trace_id": "t-1", "sequence": 2,
    }
    values.update(overrides)
    return Envelope(**values)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    env = make()
    assert decode_envelope(encode_envelope(env)) == env


def test_wire_map_uses_tailbus_field_names_plus_version() -> None:
    raw = msgpack.unpackb(encode_envelope(make()), raw=False)
    assert set(raw) == FIELDS | {"v"}
    assert raw["v"] == 1
    assert raw["session_id"] == "s-1" and raw["type"] == "message"


def test_envelope_to_message_renames_fields() -> None:
    msg = envelope_to_message(make(type="session_resolve", sequence=3))
    assert (msg.session, msg.message_type, msg.sequence, msg.payload) == ("s-1", "session_resolve", 3, "héllo ✓")
    assert msg.sent_at == 1700000000.25


@given(payload=st.text(), sequence=st.integers(min_value=1, max_value=2**63 - 1),
       sent_at=st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=4e9),
       kind=st.sampled_from(["session_open", "message", "session_resolve"]))
def test_round_trip_property(payload: str, sequence: int, sent_at: float, kind: str) -> None:
    env = make(payload=payload, sequence=sequence, sent_at=sent_at, type=kind)
    assert decode_envelope(encode_envelope(env)) == env


def _raw(**changes: object) -> bytes:
    raw = msgpack.unpackb(encode_envelope(make()), raw=False)
    for key, value in changes.items():
        if value is _DROP:
            del raw[key]
        else:
            raw[key] = value
    return msgpack.packb(raw, use_bin_type=True)


_DROP = object()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not msgpack"),
        (b"\xc1", "not msgpack"),
        (b"{\"json\": true}", "not msgpack"),
        (msgpack.packb([1, 2, 3]), "must be a map"),
        (msgpack.packb("text"), "must be a map"),
        (msgpack.packb({1: 2}), "not msgpack"),
        (encode_envelope(make()) + b"\x00", "not msgpack"),
        (encode_envelope(make())[:-3], "not msgpack"),
        (_raw(v=2), "unsupported envelope version"),
        (_raw(v="1"), "version"),
        (_raw(v=_DROP), "version"),
        (_raw(payload=b"bytes"), "'payload'"),
        (_raw(payload=_DROP), "'payload'"),
        (_raw(type="ping"), "unknown envelope type"),
        (_raw(from_handle="Not A Handle"), "'from_handle'"),
        (_raw(to_handle=""), "'to_handle'"),
        (_raw(message_id=""), "'message_id'"),
        (_raw(trace_id="x" * 200), "'trace_id'"),
        (_raw(sequence=0), "'sequence'"),
        (_raw(sequence=True), "'sequence'"),
        (_raw(sequence="1"), "'sequence'"),
        (_raw(sent_at="yesterday"), "'sent_at'"),
        (_raw(sent_at=math.nan), "'sent_at'"),
        (_raw(sent_at=_DROP), "'sent_at'"),
    ],
)
def test_garbage_is_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason) as info:
        decode_envelope(data)
    assert isinstance(info.value, MeshError)


def test_non_bytes_is_rejected() -> None:
    with pytest.raises(EnvelopeError):
        decode_envelope("a string")  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_random_bytes_never_raise_anything_but_envelope_error(data: bytes) -> None:
    try:
        env = decode_envelope(data)
    except EnvelopeError:
        return
    assert isinstance(env, Envelope)


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(sorted(FIELDS | {"v", "extra"})),
                       st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(max_size=8), st.binary(max_size=8),
                                 st.floats(), st.lists(st.booleans(), max_size=2))))
def test_random_maps_never_raise_anything_but_envelope_error(obj: dict[str, object]) -> None:
    with contextlib.suppress(EnvelopeError):
        decode_envelope(msgpack.packb(obj, use_bin_type=True))
