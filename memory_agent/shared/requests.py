"""Reading shared memory's requests: each ``{"op": ..., ...}`` checked field by field into a typed value.
Pure: no I/O. Every refusal is a :class:`~memory_agent.errors.SharedMemoryError` naming the field and the
fix; the checks that need the envelope or the config (scope ids, value sizes) are the service's.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from memory_agent.errors import SharedMemoryError, ValueTooLarge, excerpt
from memory_agent.shared.constants import (
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_LIST_LIMIT,
    DEFAULT_NAMESPACE,
    DEFAULT_TOP_K,
    MAX_KEY_BYTES,
    MAX_LIST_LIMIT,
    MAX_METADATA_BYTES,
    MAX_RECENT,
    MAX_TOP_K,
    MAX_TTL_S,
    MAX_VECTOR_DIM,
    Scope,
)
from memory_agent.shared.keys import validate_key, validate_scope
from memory_agent.shared.wire import encode_value

__all__ = [
    "KvRequest",
    "OutcomesRequest",
    "RecentRequest",
    "VectorRequest",
    "parse_embedding",
    "parse_kv",
    "parse_outcomes",
    "parse_recent",
    "parse_vector",
]

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FLOAT32_MAX: Final = float(np.finfo(np.float32).max)

_KV_KEYS: Final[dict[str, frozenset[str]]] = {
    "kv.set": frozenset({"key", "value", "scope", "scope_id", "ttl_s", "if_version", "deadline"}),
    "kv.get": frozenset({"key", "scope", "scope_id", "session_id"}),
    "kv.exists": frozenset({"key", "scope", "scope_id", "session_id"}),
    "kv.delete": frozenset({"key", "scope", "scope_id", "if_version", "deadline"}),
    "kv.list": frozenset({"scope", "scope_id", "prefix", "limit", "cursor"}),
    "kv.history": frozenset({"key", "scope", "scope_id", "limit"}),
}
_VECTOR_KEYS: Final[dict[str, frozenset[str]]] = {
    "vector.set": frozenset({"key", "embedding", "metadata", "namespace"}),
    "vector.search": frozenset({"embedding", "top_k", "filter", "min_score", "namespace"}),
    "vector.delete": frozenset({"key", "namespace"}),
}




@dataclass(frozen=True, slots=True)
class KvRequest:
    """A ``kv.*`` request as sent; defaults that depend on the envelope are filled in by the service.

    ``scope``/``scope_id``: ``None`` when left out. ``value``: the encoded JSON of ``kv.set``. ``ttl_s``:
    whole seconds. ``deadline``: seconds since the epoch after which a write must not be applied.
    """

    op: str
    key: str = ""
    scope: Scope | None = None
    scope_id: str | None = None
    value: Any = None
    encoded: bytes = b""
    ttl_s: int | None = None
    if_version: int | None = None
    deadline: float | None = None
    session_id: str | None = None
    prefix: str = ""
    limit: int = DEFAULT_LIST_LIMIT
    cursor: str | None = None


def _check_keys(op: str, args: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise SharedMemoryError(
            f"{op} does not take {excerpt(', '.join(unknown), quote=False)}; its fields are "
            f"{', '.join(sorted(allowed))}", field=unknown[0])


def _int(args: dict[str, Any], name: str, *, low: int, high: int, default: int | None) -> int | None:
    value = args.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SharedMemoryError(f'"{name}" must be a whole number from {low} to {high}, not {excerpt(value)}',
                                field=name)
    return value


def _number(args: dict[str, Any], name: str) -> float | None:
    value = args.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SharedMemoryError(f'"{name}" must be a finite number, not {excerpt(value)}', field=name)
    return float(value)


def _optional_str(args: dict[str, Any], name: str) -> str | None:
    value = args.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SharedMemoryError(f'"{name}" must be a string, not {type(value).__name__}', field=name)
    return value


def parse_kv(op: str, args: dict[str, Any]) -> KvRequest:
    """Validate a ``kv.*`` request's fields (not yet its scope id or value size, which need the envelope
    and the config). Raises SharedMemoryError naming the field."""
    _check_keys(op, args, _KV_KEYS[op])
    scope = None if args.get("scope") is None else validate_scope(args["scope"])
    scope_id = _optional_str(args, "scope_id")
    if scope_id is not None and scope is None:
        raise SharedMemoryError('"scope_id" needs a "scope" (workflow, session, actor)', field="scope_id")
    fields: dict[str, Any] = {"op": op, "scope": scope, "scope_id": scope_id}
    if op != "kv.list":
        fields["key"] = validate_key(args.get("key"))
    if op == "kv.set":
        if "value" not in args:
            raise SharedMemoryError('kv.set needs "value" (any JSON value)', field="value")
        fields["value"] = args["value"]
        fields["encoded"] = encode_value(args["value"])
        ttl = _number(args, "ttl_s")
        if ttl is not None:
            if not 1 <= ttl <= MAX_TTL_S:
                raise SharedMemoryError(f'"ttl_s" must be from 1 to {MAX_TTL_S} seconds, not {excerpt(ttl)}',
                                        field="ttl_s")
            fields["ttl_s"] = math.ceil(ttl)
    if op in ("kv.set", "kv.delete"):
        fields["if_version"] = _int(args, "if_version", low=0, high=2**63 - 1, default=None)
        fields["deadline"] = _number(args, "deadline")
    if op in ("kv.get", "kv.exists"):
        session_id = _optional_str(args, "session_id")
        if session_id is not None and scope is not None:
            raise SharedMemoryError('"session_id" is for the hierarchical get (no "scope"); with a scope give '
                                    '"scope_id"', field="session_id")
        fields["session_id"] = session_id
    if op == "kv.list":
        prefix = _optional_str(args, "prefix") or ""
        if len(prefix.encode("utf-8", "replace")) > MAX_KEY_BYTES:
            raise SharedMemoryError(f'"prefix" is longer than a key ({MAX_KEY_BYTES} bytes)', field="prefix")
        fields["prefix"] = prefix
        fields["limit"] = _int(args, "limit", low=1, high=MAX_LIST_LIMIT, default=DEFAULT_LIST_LIMIT)
        fields["cursor"] = _optional_str(args, "cursor")
    if op == "kv.history":
        fields["limit"] = _int(args, "limit", low=1, high=MAX_LIST_LIMIT, default=DEFAULT_HISTORY_LIMIT)
    return KvRequest(**fields)


@dataclass(frozen=True, slots=True)
class VectorRequest:
    """A ``vector.*`` request. ``embedding``: ``(dim,)`` float32, L2-normalised. ``filter``: metadata
    field -> value, all must be equal. ``min_score``: cosine floor."""

    op: str
    namespace: str = DEFAULT_NAMESPACE
    key: str = ""
    embedding: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    top_k: int = DEFAULT_TOP_K
    filter: dict[str, Any] = field(default_factory=dict)
    min_score: float | None = None


def parse_embedding(value: Any, *, field: str = "embedding") -> np.ndarray:
    """A caller's embedding, ``[floats]`` or ``{"base64": little-endian float32}``, as ``(dim,)`` float32,
    L2-normalised. Raises SharedMemoryError for another type, no values, more than 4096, NaN or
    infinities, or a zero vector (whose cosine is undefined)."""
    if isinstance(value, dict):
        if set(value) != {"base64"} or not isinstance(value["base64"], str):
            raise SharedMemoryError(f'"{field}" as an object is {{"base64": "<little-endian float32>"}}', field=field)
        try:
            raw = base64.b64decode(value["base64"], validate=True)
        except (binascii.Error, ValueError):
            raise SharedMemoryError(f'"{field}.base64" is not valid base64', field=field) from None
        if len(raw) % 4:
            raise SharedMemoryError(f'"{field}.base64" holds {len(raw)} bytes, not a whole number of float32',
                                    field=field)
        vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif isinstance(value, list):
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            bad = next(v for v in value if isinstance(v, bool) or not isinstance(v, (int, float)))
            raise SharedMemoryError(f'"{field}" must hold numbers only, found {excerpt(bad)}', field=field)
        try:
            wide = np.asarray(value, dtype=np.float64)
        except OverflowError:
            raise SharedMemoryError(f'"{field}" holds a number too large for float32', field=field) from None
        if wide.size and np.isfinite(wide).all() and float(np.abs(wide).max()) > _FLOAT32_MAX:
            raise SharedMemoryError(f'"{field}" holds NaN or infinite values (or numbers beyond float32)',
                                    field=field)
        vector = wide.astype(np.float32)
    else:
        raise SharedMemoryError(
            f'"{field}" must be a list of numbers or {{"base64": ...}}, not {type(value).__name__}', field=field)
    if not 1 <= len(vector) <= MAX_VECTOR_DIM:
        raise SharedMemoryError(f'"{field}" has {len(vector)} values; an embedding has 1 to {MAX_VECTOR_DIM}',
                                field=field)
    if not np.isfinite(vector).all():
        raise SharedMemoryError(f'"{field}" holds NaN or infinite values (or numbers beyond float32)', field=field)
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if norm == 0.0:
        raise SharedMemoryError(f'"{field}" is all zeros: a zero vector has no direction to compare', field=field)
    return (vector / norm).astype(np.float32)


def _json_object(args: dict[str, Any], name: str) -> dict[str, Any]:
    value = args.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SharedMemoryError(f'"{name}" must be a JSON object, not {type(value).__name__}', field=name)
    size = len(encode_value(value, field=name))
    if size > MAX_METADATA_BYTES:
        raise ValueTooLarge(f'"{name}" is {size} bytes of JSON; at most {MAX_METADATA_BYTES}', field=name,
                            size=size, limit=MAX_METADATA_BYTES)
    return value


def parse_vector(op: str, args: dict[str, Any]) -> VectorRequest:
    """Validate a ``vector.*`` request; raises SharedMemoryError naming the field."""
    _check_keys(op, args, _VECTOR_KEYS[op])
    namespace = args.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):
        raise SharedMemoryError(
            f'"namespace" must be 1-64 letters, digits, "_", "." or "-" (a letter or digit first), not '
            f"{excerpt(namespace)}", field="namespace")
    fields: dict[str, Any] = {"op": op, "namespace": namespace}
    if op in ("vector.set", "vector.delete"):
        fields["key"] = validate_key(args.get("key"))
    if op in ("vector.set", "vector.search"):
        if "embedding" not in args:
            raise SharedMemoryError(f'{op} needs "embedding" (a list of numbers or {{"base64": ...}})',
                                    field="embedding")
        fields["embedding"] = parse_embedding(args["embedding"])
    if op == "vector.set":
        fields["metadata"] = _json_object(args, "metadata")
    if op == "vector.search":
        fields["top_k"] = _int(args, "top_k", low=1, high=MAX_TOP_K, default=DEFAULT_TOP_K)
        fields["filter"] = _json_object(args, "filter")
        min_score = _number(args, "min_score")
        if min_score is not None and not -1.0 <= min_score <= 1.0:
            raise SharedMemoryError(f'"min_score" is a cosine, from -1 to 1, not {min_score}', field="min_score")
        fields["min_score"] = min_score
    return VectorRequest(**fields)


@dataclass(frozen=True, slots=True)
class OutcomesRequest:
    """``{"op": "outcomes", "node_id"?, "since"?}``; ``since`` in seconds since the epoch, UTC."""

    node_id: str | None = None
    since: float | None = None


def parse_outcomes(args: dict[str, Any], *, since: float | None) -> OutcomesRequest:
    """``since`` is parsed by the caller (it knows the time zone); raises SharedMemoryError."""
    _check_keys("outcomes", args, frozenset({"node_id", "since"}))
    node_id = _optional_str(args, "node_id")
    if node_id == "":
        raise SharedMemoryError('"node_id" is empty: leave it out for every node', field="node_id")
    return OutcomesRequest(node_id=node_id, since=since)


@dataclass(frozen=True, slots=True)
class RecentRequest:
    """``{"op": "recent", "n"?, "handle"?, "trace_id"?}``: the ``n`` latest reports, newest first."""

    n: int = 20
    handle: str | None = None
    trace_id: str | None = None


def parse_recent(args: dict[str, Any]) -> RecentRequest:
    """Raises SharedMemoryError naming the field."""
    _check_keys("recent", args, frozenset({"n", "handle", "trace_id"}))
    n = _int(args, "n", low=1, high=MAX_RECENT, default=20)
    assert n is not None
    return RecentRequest(n=n, handle=_optional_str(args, "handle") or None,
                         trace_id=_optional_str(args, "trace_id") or None)
