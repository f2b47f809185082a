"""Every error memory_agent raises on purpose: one root, typed attributes, capped excerpts of input.

An error's text says what is wrong and how to fix it. Where it quotes input it quotes at most
:data:`EXCERPT_CHARS` characters of it (:func:`excerpt`), so a 600 KB value never comes back whole in a
reply or a log line. Errors a caller may also want to catch by their Python kind subclass it too
(:class:`InvalidArgument` is a ``ValueError``), after nats-core's ``TimeoutError(Error, asyncio.TimeoutError)``.

What a remote caller sees: the text of a :class:`ReportError`, :class:`QueryError` or
:class:`AccessDenied` (bad input, theirs to fix); for anything else a short message with an error id
that the daemon also logs with the traceback (:func:`internal_error_id`), never a Python exception text.
"""

from __future__ import annotations

import uuid
from typing import Any

__all__ = [
    "EXCERPT_CHARS",
    "AccessDenied",
    "ConfigError",
    "DataDirLocked",
    "DataDirUnusable",
    "DimensionMismatch",
    "EmbedderClosed",
    "EmbedderError",
    "EmbedderUnavailable",
    "IndexFileError",
    "IngestClosed",
    "InvalidArgument",
    "LineError",
    "MemoryAgentError",
    "QueryError",
    "ReportError",
    "ReportRefused",
    "SharedAccessDenied",
    "SharedMemoryError",
    "SharedMemoryUnavailable",
    "SnapshotError",
    "StorageLost",
    "StorageUnavailable",
    "StoreClosed",
    "StoreError",
    "SummaryRejected",
    "ValueTooLarge",
    "VectorModelMismatch",
    "VersionConflict",
    "excerpt",
    "internal_error_id",
]

#: The most characters of a caller's input that an error text quotes.
EXCERPT_CHARS = 80


def excerpt(value: Any, limit: int = EXCERPT_CHARS, *, quote: bool = True) -> str:
    """``repr(value)`` (or, with ``quote=False``, ``str(value)``) cut to ``limit`` characters with an
    ellipsis and the full length: ``'abc…' (600012 chars)``. Never raises, whatever ``value`` is."""
    try:
        text = repr(value) if quote else str(value)
    except Exception:  # a hostile __repr__
        text = f"<{type(value).__name__}>"
    if len(text) <= limit:
        return text
    return f"{text[: max(limit - 1, 1)]}… ({len(text)} chars)"


def internal_error_id() -> str:
    """A short id (``e-1a2b3c4d``) that ties a remote caller's "internal error" reply to the log line."""
    return f"e-{uuid.uuid4().hex[:8]}"


class MemoryAgentError(Exception):
    """Root of every error memory_agent raises on purpose."""


# --- bad input: the caller's to fix -------------------------------------------------------------


class ReportError(MemoryAgentError):
    """A report payload that cannot be stored; ``str(err)`` says what is wrong and how to fix it.

    ``field``: the payload key at fault (``None`` for the payload as a whole).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class QueryError(MemoryAgentError):
    """A question or operation that cannot be answered as sent; the message says how to fix it.

    ``field``: the key at fault (``"limit"``, ``"since"``, ``"filters"`` ...), ``None`` for the whole.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class AccessDenied(MemoryAgentError):
    """The sender may not perform the operation; ``handle`` and ``op`` say who tried what."""

    def __init__(self, handle: str, op: str) -> None:
        super().__init__(
            f"@{handle} may not {op}: only the handles listed in security.admins of @memory's config may"
        )
        self.handle = handle
        self.op = op


class InvalidArgument(MemoryAgentError, ValueError):
    """A value passed by code (not by a remote caller) is out of range or of the wrong shape.

    ``name``: the argument; the message quotes at most an excerpt of the value.
    """

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


# --- shared memory: the caller's to fix, with a machine-readable code ---------------------------------


class SharedMemoryError(MemoryAgentError):
    """A shared-memory request (``kv.*``, ``vector.*``) refused; the message says what to fix.

    ``code`` is machine-readable and travels in the error reply (``"invalid"``, ``"version_conflict"``,
    ``"access_denied"``, ``"too_large"``, ``"dimension_mismatch"``, ``"unavailable"``); ``field`` is the
    request key at fault, ``None`` for the request as a whole. The SDK raises the same class again from
    a reply (:func:`memory_agent.shared.wire.raise_for_reply`).
    """

    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class VersionConflict(SharedMemoryError):
    """Compare-and-set failed: the key is at ``current`` (0 = absent), not at ``expected``."""

    code = "version_conflict"

    def __init__(self, message: str, *, key: str, expected: int, current: int) -> None:
        super().__init__(message, field="if_version")
        self.key = key
        self.expected = expected
        self.current = current


class SharedAccessDenied(SharedMemoryError):
    """``handle`` may not write ``scope`` (``scope_id``): another agent's actor scope, or the global scope
    when ``[shared] global_writers`` does not list it."""

    code = "access_denied"

    def __init__(self, message: str, *, handle: str, scope: str, scope_id: str) -> None:
        super().__init__(message, field="scope")
        self.handle = handle
        self.scope = scope
        self.scope_id = scope_id


class ValueTooLarge(SharedMemoryError):
    """A value, metadata object or key of ``size`` bytes over its ``limit``; nothing was written."""

    code = "too_large"

    def __init__(self, message: str, *, field: str, size: int, limit: int) -> None:
        super().__init__(message, field=field)
        self.size = size
        self.limit = limit


class DimensionMismatch(SharedMemoryError):
    """An embedding of ``got`` dimensions for a vector namespace fixed at ``expected`` by its first vector."""

    code = "dimension_mismatch"

    def __init__(self, message: str, *, namespace: str, expected: int, got: int) -> None:
        super().__init__(message, field="embedding")
        self.namespace = namespace
        self.expected = expected
        self.got = got


class SharedMemoryUnavailable(SharedMemoryError):
    """Shared memory cannot serve the request right now (JetStream unreachable, the bucket full or missing);
    retrying later may succeed. Nothing was written."""

    code = "unavailable"


# --- configuration and files -------------------------------------------------------------------


class ConfigError(MemoryAgentError):
    """A configuration value that is missing or invalid, or a file the config points at that cannot be
    used; names the key (``key``, e.g. ``"nats.token_env"``) and the source where known."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class VectorModelMismatch(ConfigError):
    """Stored vectors were made by another model (or dimension) than the configured one.

    ``configured`` is ``(model, dim)``; ``stored`` lists the models found in SQLite
    (:class:`memory_agent.store.vectors.VectorModel`). Fix: reindex the store (``memory-agent reindex``)
    or configure the model the vectors were made with.
    """

    def __init__(self, message: str, *, configured: tuple[str, int], stored: tuple[Any, ...]) -> None:
        super().__init__(message, key="embedding.model")
        self.configured = configured
        self.stored = stored


class DataDirLocked(MemoryAgentError):
    """Another daemon (or ``reindex``/``import``) holds the data directory; ``path`` and ``pid`` say which."""

    def __init__(self, path: str, pid: str) -> None:
        super().__init__(f"{path} is in use by another memory-agent (pid {pid}): stop it, or use another --data-dir")
        self.path = path
        self.pid = pid


class DataDirUnusable(ConfigError):
    """The data directory cannot be created or written; ``path`` and ``reason`` (the system's words) say
    which and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"data dir {path} cannot be used ({reason}): fix its permissions, or choose another "
                         "with --data-dir", key="data_dir")
        self.path = path
        self.reason = reason


class StoreError(MemoryAgentError):
    """The event store at ``path`` cannot do what was asked (a missing trigger, mixed dimensions ...)."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class StorageUnavailable(StoreError):
    """Storage cannot take writes right now (busy, locked, disk full, I/O error): transient.

    ``cause`` is the short reason (see :func:`memory_agent.store.faults.transient_cause`), ``since`` when
    the outage began (seconds since the epoch, UTC). A report that meets it stays unacknowledged and is
    tried again; it is never answered with an error.
    """

    def __init__(self, path: str, cause: str, *, since: float) -> None:
        super().__init__(f"storage {path} is unavailable: {cause}; the report is kept and retried", path=path)
        self.cause = cause
        self.since = since


class StorageLost(StoreError):
    """The database file (or its directory) disappeared or was replaced under the daemon; ``reason`` says
    which. Nothing more is acknowledged: the daemon stops, not ready, and exits non-zero."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"the store {path} is gone ({reason}): nothing more is acknowledged; restore the data directory "
            "(or point --data-dir at the right one) and start memory-agent again",
            path=path,
        )
        self.reason = reason


class StoreClosed(StoreError):
    """The event store was used after ``close()``."""

    def __init__(self, path: str) -> None:
        super().__init__(f"event store {path} is closed", path=path)


class IndexFileError(MemoryAgentError):
    """The vector index cannot be used (file corrupt, wrong dimension, stale, or the index closed); callers
    rebuild it from SQLite. ``path`` is the file, when one is to blame."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class SnapshotError(MemoryAgentError):
    """An export or import that cannot go on; ``line`` is the 1-based line number when one is to blame."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class LineError(SnapshotError, ValueError):
    """One JSON line of a snapshot that cannot be imported; ``field`` is the key at fault, if one is."""

    def __init__(self, message: str, *, field: str | None = None, line: int | None = None) -> None:
        super().__init__(message, line=line)
        self.field = field


# --- the pipeline's own states -----------------------------------------------------------------


class EmbedderError(MemoryAgentError):
    """The embedding model failed or returned something unusable; ``model`` names it."""

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(message)
        self.model = model


class EmbedderClosed(EmbedderError):
    """The batching embedder was used after ``close()``."""

    def __init__(self, model: str) -> None:
        super().__init__(f"the embedder of {model!r} is closed", model=model)


class EmbedderUnavailable(EmbedderError):
    """No embedding model is loaded (it failed to load, or its retry is pending): the daemon runs degraded,
    storing reports and answering from SQLite and FTS5. ``reason`` is why."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"the embedding model {model!r} is unavailable: {reason}", model=model)
        self.reason = reason


class ReportRefused(MemoryAgentError):
    """A report that cannot be stored although storage works: tried alone, it still made its transaction
    fail. ``error_id`` ties the sender's error reply to the log line with the cause."""

    def __init__(self, error_id: str) -> None:
        super().__init__(
            f"this report could not be stored (error id {error_id}): storage refused it when it was tried "
            "alone; the @memory operator's log has the cause"
        )
        self.error_id = error_id


class IngestClosed(MemoryAgentError):
    """The ingestor is shutting down; the report stays unacknowledged and is redelivered."""

    def __init__(self) -> None:
        super().__init__("ingest is shutting down; the report will be redelivered")


class SummaryRejected(MemoryAgentError):
    """The LLM's summary cannot be used (empty, or citing no retrieved event); the extractive answer stands."""
