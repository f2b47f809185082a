"""The wire format: one msgpack map per message, tailbus field names plus ``v``. Pure: no I/O.

Encoded map (all keys always present)::

    {"v": 1, "message_id": str, "session_id": str, "from_handle": str, "to_handle": str,
     "payload": str, "content_type": str, "sent_at": float (unix seconds), "type": str,
     "trace_id": str, "sequence": int >= 1}

``type`` is one of ``session_open``, ``message``, ``session_resolve``. Decoding is strict:
anything else raises ``EnvelopeError`` (a ``MeshError``) and never anything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import msgpack

from .constants import ENVELOPE_VERSION, HANDLE_RE, MESSAGE_TYPES
from .errors import EnvelopeError
from .types import Lane, Message, MessageType

__all__ = ["Envelope", "decode_envelope", "encode_envelope", "envelope_to_message"]

_STR_FIELDS = (
    "message_id",
    "session_id",
    "from_handle",
    "to_handle",
    "payload",
    "content_type",
    "type",
    "trace_id",
)
_MAX_ID = 128


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message on the wire; field names are tailbus's (``session_id``, ``type``)."""

    message_id: str
    session_id: str
    from_handle: str
    to_handle: str
    payload: str
    content_type: str
    sent_at: float
    type: MessageType
    trace_id: str
    sequence: int
    version: int = ENVELOPE_VERSION


def encode_envelope(env: Envelope) -> bytes:
    """Envelope -> msgpack bytes (the map above); never fails for a well-typed Envelope."""
    return cast(
        bytes,
        msgpack.packb(
            {
                "v": env.version,
                "message_id": env.message_id,
                "session_id": env.session_id,
                "from_handle": env.from_handle,
                "to_handle": env.to_handle,
                "payload": env.payload,
                "content_type": env.content_type,
                "sent_at": float(env.sent_at),
                "type": env.type,
                "trace_id": env.trace_id,
                "sequence": env.sequence,
            },
            use_bin_type=True,
        ),
    )


def decode_envelope(data: bytes) -> Envelope:
    """msgpack bytes -> Envelope; raises EnvelopeError on anything that is not a valid v1 envelope."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EnvelopeError("envelope must be bytes")
    try:
        obj: Any = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except Exception as exc:
        raise EnvelopeError(f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise EnvelopeError(f"envelope must be a map, got {type(obj).__name__}")
    version = obj.get("v")
    if type(version) is not int:
        raise EnvelopeError("envelope has no integer version field 'v'")
    if version != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported envelope version {version} (this reader speaks {ENVELOPE_VERSION})")
    for key in _STR_FIELDS:
        if not isinstance(obj.get(key), str):
            raise EnvelopeError(f"envelope field {key!r} missing or not a string")
    for key in ("message_id", "session_id", "trace_id"):
        if not obj[key] or len(obj[key]) > _MAX_ID:
            raise EnvelopeError(f"envelope field {key!r} empty or longer than {_MAX_ID}")
    for key in ("from_handle", "to_handle"):
        if HANDLE_RE.fullmatch(obj[key]) is None:
            raise EnvelopeError(f"envelope field {key!r} is not a valid handle")
    if obj["type"] not in MESSAGE_TYPES:
        raise EnvelopeError(f"unknown envelope type {obj['type']!r}")
    sent_at = obj.get("sent_at")
    if isinstance(sent_at, bool) or not isinstance(sent_at, (int, float)) or not math.isfinite(sent_at):
        raise EnvelopeError("envelope field 'sent_at' missing or not a number")
    sequence = obj.get("sequence")
    if type(sequence) is not int or sequence < 1:
        raise EnvelopeError("envelope field 'sequence' missing or not a positive integer")
    return Envelope(
        message_id=obj["message_id"],
        session_id=obj["session_id"],
        from_handle=obj["from_handle"],
        to_handle=obj["to_handle"],
        payload=obj["payload"],
        content_type=obj["content_type"],
        sent_at=float(sent_at),
        type=cast(MessageType, obj["type"]),
        trace_id=obj["trace_id"],
        sequence=sequence,
        version=version,
    )


def envelope_to_message(env: Envelope, lane: Lane = "normal") -> Message:
    """The SDK's view of an envelope (``session_id`` -> ``session``, ``type`` -> ``message_type``), received
    in ``lane``."""
    return Message(
        session=env.session_id,
        from_handle=env.from_handle,
        to_handle=env.to_handle,
        payload=env.payload,
        content_type=env.content_type,
        message_type=env.type,
        trace_id=env.trace_id,
        message_id=env.message_id,
        sent_at=env.sent_at,
        sequence=env.sequence,
        lane=lane,
    )
