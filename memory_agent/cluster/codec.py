"""What travels on the events stream: one JetStream message per report or forget. Pure: bytes in, typed
value out, no I/O; tested without a server.

A message's body is compact JSON; its ``Memory-Kind`` header says what it is (``report`` or ``forget``),
and ``Nats-Msg-Id`` is ``report.<sender>.<message_id>`` (JetStream stores a message id once within the
stream's duplicate window; replicas also skip a sender's ``message_id`` they already hold; another
sender's message of the same id is another report). Its stream sequence becomes the event's id on every
replica.

``vector`` (on the companion vectors stream, :mod:`memory_agent.cluster.vectors`): one event's
embedding as little-endian float32 bytes; headers name the event (``Memory-Event``: its stream
sequence), the model (``Memory-Model``), the dimension (``Memory-Dim``) and the publishing replica
(``Memory-By``: its handle and a per-process suffix; a replica skips its own vectors when they come back); ``Nats-Msg-Id`` is
``<event>.<model>``, so two replicas publishing the same event's vector store it once.

``report``: every stored field of :class:`~memory_agent.types.NewEvent` (``received_at`` is the
accepting replica's, so every replica stores the same row). ``forget``: a
:class:`~memory_agent.retention.ForgetRequest` (selector and an absolute value), applied by each replica
to the events it holds when it reaches the forget's sequence, which are the same on every replica.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from memory_agent.errors import MemoryAgentError
from memory_agent.retention import ForgetRequest
from memory_agent.types import NewEvent
from mesh.sender import dedup_id

__all__ = ["KIND_HEADER", "ForgetEntry", "ReportEntry", "StreamFormatError", "VectorEntry", "decode",
           "decode_vector", "encode_forget", "encode_report", "encode_vector"]

#: The header naming an entry's kind.
KIND_HEADER = "Memory-Kind"
_VERSION = 1
_EVENT_HEADER = "Memory-Event"
_MODEL_HEADER = "Memory-Model"
_DIM_HEADER = "Memory-Dim"
_BY_HEADER = "Memory-By"
_FORGET_SELECTORS = ("trace_id", "id", "before")


class StreamFormatError(MemoryAgentError):
    """A message on the events stream that this version cannot read; ``seq`` is its stream sequence."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"events stream message {seq} cannot be read: {reason}")
        self.seq = seq
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ReportEntry:
    """A report at stream sequence ``seq`` (its id on every replica)."""

    seq: int
    event: NewEvent


@dataclass(frozen=True, slots=True)
class ForgetEntry:
    """A forget at stream sequence ``seq``, by ``by`` (the admin's handle)."""

    seq: int
    request: ForgetRequest
    by: str


@dataclass(frozen=True, slots=True)
class VectorEntry:
    """The embedding of event ``event`` (its stream sequence) by ``model``: ``vector`` (dim,) float32,
    published by the replica on handle ``by``."""

    event: int
    model: str
    vector: np.ndarray
    by: str = ""


def encode_report(event: NewEvent) -> tuple[bytes, dict[str, str]]:
    """``(body, headers)`` of a report: its fields as JSON; ``Nats-Msg-Id`` is ``report.<sender>.<message_id>``
    (a message id is unique among one sender's messages, and JetStream de-duplicates across the whole stream:
    the mesh's own :func:`mesh.sender.dedup_id`)."""
    body = {"v": _VERSION, **asdict(event)}
    return _dump(body), {KIND_HEADER: "report", "Nats-Msg-Id": "report." + dedup_id(event.from_handle, event.message_id)}


def encode_forget(request: ForgetRequest, *, by: str, request_id: str) -> tuple[bytes, dict[str, str]]:
    """``(body, headers)`` of a forget; ``request_id`` (the forget message's id, unique among the messages of
    ``by``) de-duplicates a redelivery."""
    body = {"v": _VERSION, "selector": request.selector, "value": request.value, "by": by}
    return _dump(body), {KIND_HEADER: "forget", "Nats-Msg-Id": "forget." + dedup_id(by, request_id)}


def decode(seq: int, body: bytes, headers: dict[str, str] | None) -> ReportEntry | ForgetEntry:
    """The entry at ``seq``. Raises ``StreamFormatError`` for an unknown kind, version or shape."""
    kind: Literal["report", "forget"] | str = (headers or {}).get(KIND_HEADER, "")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StreamFormatError(seq, f"not JSON ({exc})") from None
    if not isinstance(obj, dict) or obj.get("v") != _VERSION:
        raise StreamFormatError(seq, f"not a version {_VERSION} entry (written by a newer @memory?)")
    try:
        if kind == "report":
            fields: dict[str, Any] = {k: v for k, v in obj.items() if k != "v"}
            return ReportEntry(seq, NewEvent(**fields))
        if kind == "forget":
            selector = obj["selector"]
            if selector not in _FORGET_SELECTORS:
                raise StreamFormatError(seq, f"unknown forget selector {str(selector)[:40]!r}")
            return ForgetEntry(seq, ForgetRequest(selector, obj["value"]), str(obj.get("by", "")))
    except (TypeError, KeyError) as exc:
        raise StreamFormatError(seq, f"a {kind} entry of the wrong shape ({type(exc).__name__}: {exc})") from None
    raise StreamFormatError(seq, f"unknown kind {kind[:40]!r} in header {KIND_HEADER}")


def encode_vector(event: int, vector: np.ndarray, *, model: str, by: str = "") -> tuple[bytes, dict[str, str]]:
    """``(body, headers)`` of event ``event``'s embedding ``vector`` ((dim,) float32) made by ``model``,
    published by the replica on handle ``by``."""
    row = np.ascontiguousarray(vector, dtype="<f4").reshape(-1)
    return row.tobytes(), {KIND_HEADER: "vector", "Nats-Msg-Id": f"{event}.{model}", _EVENT_HEADER: str(event),
                           _MODEL_HEADER: model, _DIM_HEADER: str(len(row)), _BY_HEADER: by}


def decode_vector(seq: int, body: bytes, headers: dict[str, str] | None) -> VectorEntry:
    """The vector message at ``seq`` of the vectors stream. Raises ``StreamFormatError`` when a header is
    missing or wrong, or the body is not ``dim`` finite float32 values."""
    h = headers or {}
    if h.get(KIND_HEADER) != "vector":
        raise StreamFormatError(seq, f"not a vector entry (kind {h.get(KIND_HEADER, '')[:40]!r})")
    try:
        event, dim, model = int(h[_EVENT_HEADER]), int(h[_DIM_HEADER]), h[_MODEL_HEADER]
    except (KeyError, ValueError) as exc:
        raise StreamFormatError(seq, f"a vector entry without a valid {exc} header") from None
    if event < 1 or dim < 1 or not model:
        raise StreamFormatError(seq, f"a vector entry for event {event}, dim {dim}, model {model[:40]!r}")
    if len(body) != 4 * dim:
        raise StreamFormatError(seq, f"a {dim}-dim vector entry of {len(body)} bytes, not {4 * dim}")
    vector = np.frombuffer(body, dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all():
        raise StreamFormatError(seq, "a vector entry with values that are not finite")
    return VectorEntry(event, model, vector, h.get(_BY_HEADER, ""))


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
