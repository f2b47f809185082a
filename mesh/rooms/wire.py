"""The wire form of a room event: one msgpack map per member's copy. Pure: no I/O.

Encoded map (all keys always present)::

    {"v": 1, "event_id": str, "room_id": str, "room_seq": int >= 1, "type": str, "sender": str,
     "subject": str, "payload": str, "content_type": str, "trace_id": str, "sent_at": float (unix seconds),
     "members": [str], "title": str}

``type`` is one of ``message_posted``, ``member_joined``, ``member_left``, ``room_closed``; ``sender``
and every member are valid handles, ``subject`` is a handle or ``""``. Decoding is strict: anything
else raises ``EnvelopeError`` and never anything else.
"""

from __future__ import annotations

import math
from typing import Any, cast

import msgpack

from ..constants import ENVELOPE_VERSION, HANDLE_RE, MAX_ROOM_MEMBERS, ROOM_EVENT_TYPES, ROOM_ID_RE
from ..errors import EnvelopeError
from ..types import RoomEvent, RoomEventType

__all__ = ["decode_room_event", "encode_room_event"]

_STR_FIELDS = ("event_id", "room_id", "type", "sender", "subject", "payload", "content_type", "trace_id", "title")
_MAX_ID = 128


def encode_room_event(event: RoomEvent) -> bytes:
    """RoomEvent -> msgpack bytes (the map above); never fails for a well-typed RoomEvent."""
    return cast(bytes, msgpack.packb({
        "v": ENVELOPE_VERSION, "event_id": event.event_id, "room_id": event.room_id, "room_seq": event.room_seq,
        "type": event.event_type, "sender": event.sender_handle, "subject": event.subject_handle,
        "payload": event.payload, "content_type": event.content_type, "trace_id": event.trace_id,
        "sent_at": float(event.sent_at), "members": list(event.members), "title": event.title,
    }, use_bin_type=True))


def decode_room_event(data: bytes) -> RoomEvent:
    """msgpack bytes -> RoomEvent; raises EnvelopeError on anything that is not a valid v1 room event."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EnvelopeError("room event must be bytes")
    try:
        obj: Any = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except Exception as exc:
        raise EnvelopeError(f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise EnvelopeError(f"room event must be a map, got {type(obj).__name__}")
    if type(obj.get("v")) is not int or obj["v"] != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported room event version {obj.get('v')!r} (this reader speaks {ENVELOPE_VERSION})")
    for key in _STR_FIELDS:
        if not isinstance(obj.get(key), str):
            raise EnvelopeError(f"room event field {key!r} missing or not a string")
    for key in ("event_id", "trace_id"):
        if not obj[key] or len(obj[key]) > _MAX_ID:
            raise EnvelopeError(f"room event field {key!r} empty or longer than {_MAX_ID}")
    if ROOM_ID_RE.fullmatch(obj["room_id"]) is None:
        raise EnvelopeError("room event field 'room_id' is not a room id")
    if HANDLE_RE.fullmatch(obj["sender"]) is None:
        raise EnvelopeError("room event field 'sender' is not a valid handle")
    if obj["subject"] and HANDLE_RE.fullmatch(obj["subject"]) is None:
        raise EnvelopeError("room event field 'subject' is not a valid handle")
    if obj["type"] not in ROOM_EVENT_TYPES:
        raise EnvelopeError(f"unknown room event type {obj['type'][:40]!r}")
    seq = obj.get("room_seq")
    if type(seq) is not int or seq < 1:
        raise EnvelopeError("room event field 'room_seq' missing or not a positive integer")
    sent_at = obj.get("sent_at")
    if isinstance(sent_at, bool) or not isinstance(sent_at, (int, float)) or not math.isfinite(sent_at):
        raise EnvelopeError("room event field 'sent_at' missing or not a number")
    members = obj.get("members")
    if (not isinstance(members, list) or len(members) > MAX_ROOM_MEMBERS
            or not all(isinstance(h, str) and HANDLE_RE.fullmatch(h) for h in members)):
        raise EnvelopeError("room event field 'members' is not a list of valid handles")
    return RoomEvent(
        room_id=obj["room_id"], room_seq=seq, sender_handle=obj["sender"], subject_handle=obj["subject"],
        payload=obj["payload"], content_type=obj["content_type"], event_type=cast(RoomEventType, obj["type"]),
        trace_id=obj["trace_id"], event_id=obj["event_id"], sent_at=float(sent_at), members=tuple(members),
        title=obj["title"],
    )
