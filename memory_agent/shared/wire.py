"""The wire contract of shared memory: the operations, values, change events and replies (the requests'
fields are read by :mod:`memory_agent.shared.requests`). Pure: no I/O.

Every reply is ``{"status": "ok", ...}`` or ``{"status": "error", "error": "<what to fix>", "code": ...}``;
:func:`raise_for_reply` turns an error reply back into the :class:`~memory_agent.errors.SharedMemoryError`
subclass its ``code`` names, with the same attributes, so the SDK raises what the daemon refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

from memory_agent.errors import (
    DimensionMismatch,
    SharedAccessDenied,
    SharedMemoryError,
    SharedMemoryUnavailable,
    ValueTooLarge,
    VersionConflict,
    excerpt,
)
from memory_agent.shared.constants import Scope
from memory_agent.shared.keys import validate_scope

__all__ = [
    "KV_OPERATIONS",
    "SHARED_OPERATIONS",
    "VECTOR_OPERATIONS",
    "Action",
    "ChangeEvent",
    "Entry",
    "VectorHit",
    "encode_value",
    "error_payload",
    "ok",
    "raise_for_reply",
]

KV_OPERATIONS: Final = ("kv.set", "kv.get", "kv.exists", "kv.delete", "kv.list", "kv.history")
VECTOR_OPERATIONS: Final = ("vector.set", "vector.search", "vector.delete")
#: Every operation shared memory serves (besides @memory's own ``stats`` and ``forget``).
SHARED_OPERATIONS: Final = (*KV_OPERATIONS, *VECTOR_OPERATIONS, "outcomes", "recent")

Action = Literal["set", "delete", "expire"]
# ---- values and events ---------------------------------------------------------------------------------


def encode_value(value: Any, *, field: str = "value") -> bytes:
    """``value`` as compact UTF-8 JSON (what is stored); raises SharedMemoryError for what JSON cannot hold
    (NaN and infinities included)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise SharedMemoryError(f'"{field}" cannot be stored as JSON ({exc}): send JSON values, finite numbers',
                                field=field) from None
    except RecursionError:
        raise SharedMemoryError(f'"{field}" is nested too deeply', field=field) from None
    except UnicodeEncodeError:
        raise SharedMemoryError(f'"{field}" holds text that is not valid Unicode', field=field) from None


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored value. Times are seconds since the epoch, UTC; ``version`` is the KV revision (> 0);
    ``updated_by`` the handle whose request wrote it; ``expires_at`` is set when it was written with a TTL."""

    scope: Scope
    scope_id: str
    key: str
    value: Any
    version: int
    updated_at: float
    updated_by: str
    expires_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The fields of a ``kv.get`` reply (besides ``status`` and ``found``)."""
        return {"key": self.key, "value": self.value, "scope": self.scope, "scope_id": self.scope_id,
                "version": self.version, "updated_at": self.updated_at, "updated_by": self.updated_by,
                "expires_at": self.expires_at}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Entry:
        """Inverse of :meth:`to_json` (a ``kv.get`` reply with ``found`` true); raises ``ValueError``."""
        try:
            expires = obj.get("expires_at")
            return cls(scope=validate_scope(obj["scope"]), scope_id=str(obj["scope_id"]), key=str(obj["key"]),
                       value=obj.get("value"), version=int(obj["version"]), updated_at=float(obj["updated_at"]),
                       updated_by=str(obj.get("updated_by") or ""),
                       expires_at=None if expires is None else float(expires))
        except (KeyError, TypeError, SharedMemoryError) as exc:
            raise ValueError(f"not a stored value ({exc})") from None


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change as published on ``memory.change.<scope>.<scope_id>.<key>`` (AgentField's fields, plus
    ``version``, ``at`` and ``by``).

    ``action``: ``set``, ``delete`` or ``expire`` (a TTL ran out). ``data``: the new value (``None`` for
    delete and expire); ``previous_data``: the value it replaced, ``None`` when there was none. ``version``:
    the KV revision the change made. ``at``: seconds since the epoch, UTC; ``by``: the handle that asked
    (``""`` for an expiry). ``seq``: the event's sequence in the ``MEMORY_CHANGES`` stream (0 before it is
    published), to replay from.
    """

    key: str
    scope: Scope
    scope_id: str
    action: Action
    data: Any
    previous_data: Any
    version: int
    at: float
    by: str
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        """The published JSON object (``seq`` is the stream's, not part of the body)."""
        return {"key": self.key, "scope": self.scope, "scope_id": self.scope_id, "action": self.action,
                "data": self.data, "previous_data": self.previous_data, "version": self.version, "at": self.at,
                "by": self.by}

    @classmethod
    def from_json(cls, obj: Any, *, seq: int = 0) -> ChangeEvent:
        """Raises ``ValueError`` for anything that is not a change event."""
        if not isinstance(obj, dict):
            raise ValueError("a change event is a JSON object")
        try:
            action = obj["action"]
            if action not in ("set", "delete", "expire"):
                raise ValueError(f"unknown action {excerpt(action)}")
            return cls(key=str(obj["key"]), scope=validate_scope(obj["scope"]), scope_id=str(obj["scope_id"]),
                       action=action, data=obj.get("data"), previous_data=obj.get("previous_data"),
                       version=int(obj["version"]), at=float(obj["at"]), by=str(obj.get("by", "")), seq=seq)
        except (KeyError, TypeError, SharedMemoryError) as exc:
            raise ValueError(f"not a change event ({exc})") from None


@dataclass(frozen=True, slots=True)
class VectorHit:
    """One result of a similarity search: ``score`` is the cosine of the query and the stored vector."""

    key: str
    score: float
    metadata: dict[str, Any]
    updated_at: float
    updated_by: str

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "score": self.score, "metadata": self.metadata, "updated_at": self.updated_at,
                "updated_by": self.updated_by}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> VectorHit:
        """Inverse of :meth:`to_json`; raises ``ValueError``."""
        try:
            return cls(key=str(obj["key"]), score=float(obj["score"]), metadata=dict(obj.get("metadata") or {}),
                       updated_at=float(obj["updated_at"]), updated_by=str(obj.get("updated_by") or ""))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a search result ({exc})") from None


# ---- replies ---------------------------------------------------------------------------------------------


def ok(**fields: Any) -> dict[str, Any]:
    """``{"status": "ok", **fields}``."""
    return {"status": "ok", **fields}


def error_payload(exc: SharedMemoryError) -> dict[str, Any]:
    """The error reply for ``exc``: its text, ``code``, ``field`` and its typed attributes."""
    reply: dict[str, Any] = {"status": "error", "error": str(exc), "code": exc.code, "field": exc.field}
    if isinstance(exc, VersionConflict):
        reply.update(key=exc.key, expected_version=exc.expected, current_version=exc.current)
    elif isinstance(exc, SharedAccessDenied):
        reply.update(handle=exc.handle, scope=exc.scope, scope_id=exc.scope_id)
    elif isinstance(exc, ValueTooLarge):
        reply.update(size=exc.size, limit=exc.limit)
    elif isinstance(exc, DimensionMismatch):
        reply.update(namespace=exc.namespace, expected_dim=exc.expected, got_dim=exc.got)
    return reply


def raise_for_reply(reply: Any) -> dict[str, Any]:
    """``reply`` if its status is ok; else raises the SharedMemoryError its ``code`` names (a reply without
    a code, such as a bad JSON or an internal error, raises SharedMemoryError with ``code`` ``"error"``)."""
    if isinstance(reply, dict) and reply.get("status") == "ok":
        return reply
    if not isinstance(reply, dict):
        raise SharedMemoryError(f"@memory answered something that is not a JSON object: {excerpt(reply)}")
    message = str(reply.get("error", "@memory refused the request"))
    code, fieldname = reply.get("code"), reply.get("field")
    exc: SharedMemoryError
    if code == VersionConflict.code:
        exc = VersionConflict(message, key=str(reply.get("key", "")), expected=int(reply.get("expected_version", 0)),
                              current=int(reply.get("current_version", 0)))
    elif code == SharedAccessDenied.code:
        exc = SharedAccessDenied(message, handle=str(reply.get("handle", "")), scope=str(reply.get("scope", "")),
                                 scope_id=str(reply.get("scope_id", "")))
    elif code == ValueTooLarge.code:
        exc = ValueTooLarge(message, field=str(fieldname or ""), size=int(reply.get("size", 0)),
                            limit=int(reply.get("limit", 0)))
    elif code == DimensionMismatch.code:
        exc = DimensionMismatch(message, namespace=str(reply.get("namespace", "")),
                                expected=int(reply.get("expected_dim", 0)), got=int(reply.get("got_dim", 0)))
    elif code == SharedMemoryUnavailable.code:
        exc = SharedMemoryUnavailable(message, field=fieldname)
    else:
        exc = SharedMemoryError(message, field=fieldname)
        if code != SharedMemoryError.code:
            exc.code = "error"
    raise exc
