"""The snapshot format of ``memory-agent export`` / ``import``: the store as JSON lines, one event per line.

A line carries every stored field, and the embedding with the model that made it::

    {"id": 12, "message_id": "m-1", "session": "s-1", "from_handle": "deploy", "trace_id": "t-81",
     "event": "rollback", "service": "api-gateway", "occurred_at": 1795000000.0,
     "received_at": 1795000000.2, "payload": {"event": "rollback", ...}, "text": "rollback. ...",
     "sender_verified": false,
     "embedding": {"model": "all-MiniLM-L6-v2", "dim": 384, "base64": "<dim float32, little-endian>"}}

An event not embedded yet (the daemon embeds behind ingest) is written without ``embedding``; importing
it embeds it. Export (:func:`export_events`) reads the SQLite file read-only, in one read transaction: a consistent
snapshot, safe while the daemon runs (WAL lets readers and the writer proceed together; the WAL file
cannot be checkpointed back past the snapshot until the export ends). Times are written as seconds
since the epoch, UTC; vectors as base64 of the stored bytes, so a round trip is bit-exact.

Reading a line back (:func:`parse_line`): only ``event`` and ``occurred_at`` (unix seconds or ISO-8601)
are required. ``message_id`` defaults to a hash of the line's content, so a file imported twice is
stored once; ``session`` defaults to it, ``from_handle`` to ``"import"``, ``trace_id`` to the payload's
or the message id, ``payload`` to ``{"event": ...}``, ``text`` to what a report's text would be
(:func:`memory_agent.wire.indexed_text`); ``id`` is informational. ``embedding`` may also give
``"values": [floats]`` instead of ``"base64"``; it must name the store's model and dimension. The import
itself is :mod:`memory_agent.tools.importer`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from memory_agent.errors import LineError, ReportError, SnapshotError, excerpt
from memory_agent.query.text import clip
from memory_agent.shared.snapshot import export_vectors
from memory_agent.store.schema import EVENT_FIELDS
from memory_agent.store.sql import where_clause
from memory_agent.types import Filters, NewEvent, TimeWindow
from memory_agent.wire import event_name, indexed_text, parse_time, service_name

__all__ = [
    "FIELDS",
    "NON_FINITE",
    "ExportSummary",
    "ParsedLine",
    "export_events",
    "finish_vectors",
    "parse_fields",
    "parse_line",
    "time_bound",
]

FIELDS: tuple[str, ...] = ("id", *EVENT_FIELDS)
"""The stored columns a line carries (besides ``embedding``): the schema's, by name."""
_KEYS = frozenset((*FIELDS, "embedding"))
_EXPORT_PAGE = 2000
_NORM_TOLERANCE = 1e-3


# ---- export ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote: events, bytes, seconds, and vectors of vector memory (after the events)."""

    events: int
    bytes: int
    seconds: float
    vectors: int = 0


def export_events(
    db_path: Path,
    out: IO[str],
    *,
    since: float | None = None,
    until: float | None = None,
    vectors: bool = True,
    progress: bool | None = None,
    shared: bool = True,
) -> ExportSummary:
    """Write the events with ``since <= occurred_at < until`` (seconds since the epoch, UTC; ``None`` =
    unbounded) to ``out``, one JSON line each in id order, with their embeddings unless ``vectors`` is
    false; then, with ``shared``, vector memory's vectors updated in that window
    (:mod:`memory_agent.shared.snapshot`). Blocking (sqlite3); reads a consistent snapshot without the
    daemon's lock.

    ``progress``: a tqdm bar on stderr (``None``: only on a terminal). Raises ``SnapshotError`` when the
    database is missing or not a memory-agent store.
    """
    started = time.perf_counter()
    if not Path(db_path).is_file():
        raise SnapshotError(f"no store at {db_path}: pass the --data-dir the daemon uses")
    conn = sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True, isolation_level=None)
    written = 0
    size = 0
    try:
        try:
            conn.execute("BEGIN")
            total = conn.execute(*_export_sql("count(*)", since, until, after=None)).fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise SnapshotError(f"{db_path} is not a memory-agent store ({exc})") from exc
        columns = ", ".join(FIELDS) + (", embedding, embedding_model, embedding_dim" if vectors else "")
        last = 0
        with tqdm(total=total, unit="event", desc="export", file=sys.stderr,
                  disable=None if progress is None else not progress) as bar:
            while True:
                rows = conn.execute(*_export_sql(columns, since, until, after=last)).fetchall()
                if not rows:
                    break
                for row in rows:
                    line = _export_line(row, vectors=vectors)
                    out.write(line)
                    size += len(line)
                written += len(rows)
                last = int(rows[-1][0])
                bar.update(len(rows))
        shared_vectors, shared_size = export_vectors(conn, out, since=since, until=until) if shared else (0, 0)
        size += shared_size
        conn.execute("COMMIT")
    finally:
        conn.close()
    out.flush()
    return ExportSummary(written, size, time.perf_counter() - started, vectors=shared_vectors)



def _export_sql(columns: str, since: float | None, until: float | None, *, after: int | None) -> tuple[str, list[Any]]:
    where, params = where_clause(TimeWindow(since, until), Filters())
    if after is None:
        return f"SELECT {columns} FROM events WHERE {where}", params
    return f"SELECT {columns} FROM events WHERE {where} AND id > ? ORDER BY id LIMIT {_EXPORT_PAGE}", [*params, after]


def _export_line(row: tuple[Any, ...], *, vectors: bool) -> str:
    record = dict(zip(FIELDS, row, strict=False))
    payload_json = record.pop("payload")  # stored as compact JSON already: spliced in, not re-encoded
    record["sender_verified"] = bool(record["sender_verified"])
    head = json.dumps(record, ensure_ascii=False, separators=(",", ":"))[:-1]
    tail = f',"payload":{payload_json}'
    blob, model, dim = row[len(FIELDS) :] if vectors else (None, None, None)
    if blob is not None:  # a row not embedded yet is written without one: an import embeds it
        b64 = base64.b64encode(blob).decode("ascii")
        tail += f',"embedding":{{"model":{json.dumps(model)},"dim":{int(dim)},"base64":"{b64}"}}'
    return head + tail + "}\n"


def time_bound(text: str, *, tz: tzinfo, name: str) -> float:
    """A ``--since``/``--until`` value: unix seconds or ISO-8601 (naive = in ``tz``) -> seconds since the
    epoch, UTC. Raises ``SnapshotError`` naming the option."""
    try:
        value: float | str = float(text)
    except ValueError:
        value = text
    try:
        return parse_time(value, name, tz=tz, error=SnapshotError)
    except SnapshotError as exc:
        raise SnapshotError(f"--{name}: {exc}") from None


# ---- lines ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """One valid line: the event to store and its vector ((dim,) float32, normalised) or ``None``."""

    event: NewEvent
    vector: np.ndarray | None


def parse_line(text: str, *, model: str, dim: int | None, tz: tzinfo) -> ParsedLine:
    """Validate one JSON line. ``model``/``dim``: what a carried vector must have been made with (``dim``
    ``None``: any, the caller checks). ``tz``: zone of ISO times without an offset. A vector whose norm is
    not 1 (within 1e-3) is normalised; a zero vector is kept as it is.

    Raises ``LineError`` (a ``ValueError``) saying what is wrong with the line and how to fix it.
    """
    line = parse_fields(text, model=model, dim=dim, tz=tz)
    if line.vector is None:
        return line
    matrix, bad = finish_vectors([line.vector])
    if bad:
        raise LineError(NON_FINITE, field="embedding")
    return ParsedLine(line.event, matrix[0])


NON_FINITE = '"embedding" holds NaN or infinite values'


def finish_vectors(vectors: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Stack raw vectors (one dim) into (n, dim) float32, normalising rows whose norm is off by more than
    1e-3 (zero rows stay zero); returns the matrix and the rows holding NaN or infinity."""
    matrix = np.vstack(vectors).astype(np.float32, copy=False)
    finite = np.isfinite(matrix).all(axis=1)
    bad = np.flatnonzero(~finite).tolist()
    matrix[~finite] = 0.0
    norms = np.linalg.norm(matrix, axis=1)
    fix = (norms > 0) & (np.abs(norms - 1.0) > _NORM_TOLERANCE)
    if fix.any():
        matrix[fix] /= norms[fix, None]
    return matrix, bad


def parse_fields(text: str, *, model: str, dim: int | None, tz: tzinfo) -> ParsedLine:
    """:func:`parse_line` without the checks of vector values (:func:`finish_vectors` does them a batch
    at a time); the vector, if any, is returned raw."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise LineError(f"not valid JSON ({clip(str(exc), 120)})") from None
    if not isinstance(raw, dict):
        raise LineError(f"a line must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise LineError(f"unknown keys {excerpt(unknown)}; the keys are {sorted(_KEYS)}")
    try:
        event = event_name(raw.get("event"))
    except ReportError:
        raise LineError('"event" must be a non-empty string of at most 200 characters naming what happened, '
                        'e.g. "rollback"', field="event") from None
    if "occurred_at" not in raw:
        raise LineError('"occurred_at" is missing: give unix seconds or an ISO-8601 time', field="occurred_at")
    occurred_at = parse_time(raw["occurred_at"], "occurred_at", tz=tz, error=LineError)
    received_at = occurred_at
    if raw.get("received_at") is not None:
        received_at = parse_time(raw["received_at"], "received_at", tz=tz, error=LineError)
    payload = raw.get("payload", {"event": event})
    if not isinstance(payload, dict):
        raise LineError('"payload" must be a JSON object (the report as sent)', field="payload")
    message_id = _optional_str(raw, "message_id") or _content_id(raw)
    trace_default = payload.get("trace_id")
    trace_id = _optional_str(raw, "trace_id") or (str(trace_default) if trace_default else message_id)
    service = raw.get("service", payload.get("service"))
    if service is not None and not isinstance(service, str):
        raise LineError('"service" must be a string or null', field="service")
    text_value = raw.get("text")
    if text_value is not None and not isinstance(text_value, str):
        raise LineError('"text" must be a string (the indexed text); leave it out to derive it from the payload', field="text")
    verified = raw.get("sender_verified", False)
    if not isinstance(verified, bool):
        raise LineError('"sender_verified" must be true or false', field="sender_verified")
    if raw.get("id") is not None and (isinstance(raw["id"], bool) or not isinstance(raw["id"], int)):
        raise LineError('"id" must be an integer (it is informational: new ids are assigned)', field="id")
    new = NewEvent(
        message_id=message_id,
        session=_optional_str(raw, "session") or message_id,
        from_handle=_optional_str(raw, "from_handle") or "import",
        trace_id=trace_id,
        event=event,
        service=service_name(service),
        occurred_at=occurred_at,
        received_at=received_at,
        payload=payload,
        text=text_value if text_value is not None else indexed_text(event, payload),
        sender_verified=verified,
    )
    embedding = raw.get("embedding")
    return ParsedLine(new, None if embedding is None else _vector(embedding, model=model, dim=dim))


def _optional_str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise LineError(f'"{key}" must be a non-empty string', field=key)
    return value


def _content_id(raw: dict[str, Any]) -> str:
    keyed = {k: raw.get(k) for k in ("from_handle", "trace_id", "event", "occurred_at", "payload", "text")}
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return f"import-{digest[:32]}"


def _vector(embedding: Any, *, model: str, dim: int | None) -> np.ndarray:
    if not isinstance(embedding, dict):
        raise LineError('"embedding" must be {"model": ..., "dim": ..., "base64": ...} (or "values": [...])', field="embedding")
    got_model, got_dim = embedding.get("model"), embedding.get("dim")
    if not isinstance(got_model, str) or isinstance(got_dim, bool) or not isinstance(got_dim, int) or got_dim < 1:
        raise LineError('"embedding" needs "model" (a string) and "dim" (a positive integer)', field="embedding")
    if got_model != model or (dim is not None and got_dim != dim):
        want = f"{model!r}" + (f" (dim {dim})" if dim is not None else "")
        raise LineError(
            f"the vector was made by {excerpt(got_model)} (dim {got_dim}) but this store uses {want}; drop "
            '"embedding" from the lines to embed their text with the configured model, or configure '
            f"embedding.model = {excerpt(got_model)}"
        )
    if "base64" in embedding:
        try:
            data = base64.b64decode(embedding["base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise LineError(f'"embedding.base64" is not base64 ({clip(str(exc), 80)})', field="embedding") from None
        if len(data) != 4 * got_dim:
            raise LineError(f'"embedding.base64" holds {len(data)} bytes; {got_dim} float32 are {4 * got_dim}', field="embedding")
        vector = np.frombuffer(data, dtype="<f4")
    elif "values" in embedding:
        values = embedding["values"]
        if not isinstance(values, list) or len(values) != got_dim:
            raise LineError(f'"embedding.values" must be a list of {got_dim} numbers', field="embedding")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
            raise LineError('"embedding.values" must hold numbers only', field="embedding")
        vector = np.asarray(values, dtype=np.float32)
    else:
        raise LineError('"embedding" needs "base64" (little-endian float32) or "values" (a list of numbers)', field="embedding")
    return vector
