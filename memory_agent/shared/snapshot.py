"""Vector memory in ``memory-agent export`` / ``import``: one JSON line per stored vector, after the events.

A line::

    {"kind": "vector", "namespace": "docs", "key": "runbook:db", "metadata": {...}, "updated_at": 1795000000.0,
     "updated_by": "deploy", "embedding": {"dim": 384, "base64": "<dim float32, little-endian>"}}

Its ``"kind"`` sets it apart from an event line (which has none). ``embedding`` may also be ``{"values":
[floats]}``; a vector is normalised and checked like one sent with ``vector.set``. Importing a line again
replaces the vector of the same namespace and key, so an import can be repeated. The shared state itself
lives in JetStream (the ``memory_state`` bucket), not in SQLite: back it up with the NATS server's store.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from memory_agent.errors import LineError, SharedMemoryError
from memory_agent.shared.requests import parse_embedding, parse_vector
from memory_agent.shared.wire import encode_value

__all__ = ["VECTOR_KIND", "VectorLine", "export_vectors", "parse_vector_line", "vector_line_object"]

VECTOR_KIND = "vector"
_KEYS = frozenset({"kind", "namespace", "key", "metadata", "updated_at", "updated_by", "embedding"})


@dataclass(frozen=True, slots=True)
class VectorLine:
    """One vector to import: ``vector`` is ``(dim,)`` float32, L2-normalised; times in seconds, UTC."""

    namespace: str
    key: str
    vector: np.ndarray
    metadata: dict[str, Any]
    updated_at: float
    updated_by: str


def export_vectors(conn: sqlite3.Connection, out: IO[str], *, since: float | None,
                   until: float | None) -> tuple[int, int]:
    """Write the stored vectors updated in ``[since, until)`` (``None`` = unbounded) as lines, in id order,
    inside the caller's read transaction; returns ``(lines, characters)`` written. A store without vector
    memory has none."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'vectors'").fetchone()
    if exists is None:
        return 0, 0
    where = ["1"]
    params: list[Any] = []
    if since is not None:
        where.append("v.updated_at >= ?")
        params.append(since)
    if until is not None:
        where.append("v.updated_at < ?")
        params.append(until)
    rows = conn.execute(
        "SELECT v.namespace, v.key, v.metadata, v.updated_at, v.updated_by, n.dim, v.embedding FROM vectors AS v "
        f"JOIN vector_namespaces AS n ON n.namespace = v.namespace WHERE {' AND '.join(where)} ORDER BY v.id",
        params)
    written = size = 0
    for namespace, key, metadata, updated_at, updated_by, dim, blob in rows:
        head = json.dumps({"kind": VECTOR_KIND, "namespace": namespace, "key": key, "updated_at": updated_at,
                           "updated_by": updated_by}, ensure_ascii=False, separators=(",", ":"))[:-1]
        b64 = base64.b64encode(blob).decode("ascii")
        line = f'{head},"metadata":{metadata},"embedding":{{"dim":{int(dim)},"base64":"{b64}"}}}}\n'
        out.write(line)
        written += 1
        size += len(line)
    return written, size


def vector_line_object(raw: bytes) -> dict[str, Any] | None:
    """The decoded line when it is a vector line, else ``None`` (an event line; parsed by its own rules)."""
    if b'"kind"' not in raw:
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and obj.get("kind") == VECTOR_KIND else None


def parse_vector_line(obj: dict[str, Any]) -> VectorLine:
    """Validate a vector line (see the module docstring); raises LineError naming the field."""
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise LineError(f"unknown keys {unknown} in a vector line; its keys are {sorted(_KEYS)}")
    embedding = obj.get("embedding")
    if not isinstance(embedding, dict):
        raise LineError('a vector line needs "embedding": {"dim": n, "base64": ...} or {"values": [...]}',
                        field="embedding")
    try:
        if "values" in embedding:
            vector = parse_embedding(embedding["values"])
        else:
            vector = parse_embedding({"base64": embedding.get("base64")})
        request = parse_vector("vector.set", {"key": obj.get("key"), "embedding": [1.0],
                                              "namespace": obj.get("namespace", "default"),
                                              "metadata": obj.get("metadata")})
        encode_value(obj.get("metadata"), field="metadata")
    except SharedMemoryError as exc:
        raise LineError(str(exc), field=exc.field) from None
    dim = embedding.get("dim")
    if dim is not None and dim != len(vector):
        raise LineError(f'"embedding.dim" says {dim} but it holds {len(vector)} values', field="embedding")
    updated_at = obj.get("updated_at", 0.0)
    if isinstance(updated_at, bool) or not isinstance(updated_at, (int, float)):
        raise LineError('"updated_at" must be seconds since the epoch', field="updated_at")
    by = obj.get("updated_by", "import")
    if not isinstance(by, str):
        raise LineError('"updated_by" must be a string (a handle)', field="updated_by")
    return VectorLine(request.namespace, request.key, vector, request.metadata, float(updated_at), by)
