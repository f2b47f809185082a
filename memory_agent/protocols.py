"""The seams of memory_agent: the collaborators a test (or a user, or a later deployment) may replace.

- :class:`Acceptor`: the acceptance step of a report, the point after which it is acknowledged
  (:class:`memory_agent.ingest.Ingestor`: committed in SQLite with its FTS5 row; in a cluster: the
  replicated events stream has it).
- :class:`Forgetter`: an admin's forget (one node: the eraser; a cluster: an entry on the events stream).
- :class:`Replica`: how far a cluster replica has applied the events stream (answers say so).
- :class:`Embedder`: texts to vectors (the bundled MiniLM through sentence-transformers or ONNX Runtime;
  tests pass :class:`memory_agent.embedding.hashing.HashingEmbedder`).
- :class:`VectorIndex`: vectors keyed by event ids (:class:`memory_agent.index.flat.FlatIndex`,
  :class:`memory_agent.index.ivf.IVFIndex`), owned by :class:`memory_agent.index.async_index.AsyncIndex`.
- :class:`Summarizer`: rewrites an extractive answer (:class:`memory_agent.query.summarizer.OpenAISummarizer`).
- :data:`Clock`: "now", so tests fix time.

Everything else is passed as the concrete class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from memory_agent.index.files import IndexMeta
    from memory_agent.retention import ForgetRequest
    from memory_agent.types import InsertResult, NewEvent, StoredEvent

__all__ = ["Acceptor", "Clock", "Embedder", "Forgetter", "Replica", "Summarizer", "VectorIndex"]

Clock = Callable[[], float]
"""Returns seconds since the epoch, UTC (``time.time`` in production)."""


class Acceptor(Protocol):
    """Accepts a report durably; a report handler acknowledges the message only after :meth:`accept` returned.

    ``accept`` returns the event's id (``duplicate=True`` with the first id for a ``message_id`` already
    accepted) once the report survives a crash. Raises ``StorageUnavailable`` (transient: leave the
    message unacknowledged, try again later), ``ReportRefused`` (this report cannot be stored: an error
    reply), ``StorageLost`` or ``IngestClosed`` (stop acknowledging).
    """

    async def accept(self, event: NewEvent) -> InsertResult: ...


class Forgetter(Protocol):
    """Deletes what an admin's forget selects (:class:`memory_agent.retention.Eraser` on one node; in a
    cluster, :class:`memory_agent.cluster.forget.StreamForgetter`: an entry on the events stream that every
    replica applies). Returns how many events were deleted here. ``by``: the admin's handle; ``request_id``:
    the forget message's id (a redelivered forget is applied once)."""

    async def forget(self, request: ForgetRequest, *, by: str = "", request_id: str = "") -> int: ...


class Replica(Protocol):
    """How far a cluster replica has applied the events stream (:class:`memory_agent.cluster.applier.Applier`).

    ``applied_seq``: every entry up to this stream sequence is in this replica's store; ``lag``: entries
    after it in the stream, as of the last fetch. ``wait_applied(seq, timeout)`` waits at most ``timeout``
    seconds for ``applied_seq >= seq`` and says whether it got there.
    """

    applied_seq: int
    lag: int

    async def wait_applied(self, seq: int, timeout: float) -> bool: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors. ``encode`` is blocking: call it off the event loop
    (:class:`memory_agent.embedding.batching.BatchingEmbedder` does).

    ``name`` is stored with every vector (a vector of another model is never mixed in); ``dim`` is the
    vector length.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, each row L2-normalised (a text with no features may be all zero)."""
        ...


@runtime_checkable
class VectorIndex(Protocol):
    """Vectors keyed by int64 ids, searched by inner product (cosine on normalised vectors).

    ``exact`` tells whether ``search`` scores are exact (flat) or approximate (ivf).
    """

    kind: ClassVar[str]
    exact: ClassVar[bool]
    model: str

    @property
    def dim(self) -> int: ...

    @property
    def max_id(self) -> int: ...

    @property
    def nlist(self) -> int: ...

    def __len__(self) -> int: ...

    def ids(self) -> np.ndarray: ...

    def vectors(self, ids: np.ndarray | Sequence[int]) -> np.ndarray: ...

    def add(self, ids: np.ndarray | Sequence[int], vectors: np.ndarray) -> None:
        """Add (or replace) ``vectors`` ((n, dim) float32) under ``ids`` ((n,) int64)."""
        ...

    def remove(self, ids: np.ndarray | Sequence[int]) -> int:
        """Remove ``ids``; returns how many were present."""
        ...

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top ``k`` ``(id, cosine)`` best first for ``query`` ((dim,) float32), only among ``allowed``."""
        ...

    def meta(self, sha256: str = "") -> IndexMeta: ...

    def clone(self) -> Any: ...

    def save(self, path: Path) -> None:
        """Persist atomically to ``path``."""
        ...


class Summarizer(Protocol):
    """Rewrites an extractive answer from the events it rests on; must cite event ids as ``[#id]``.

    Raises on any failure (the caller keeps the extractive answer).
    """

    async def summarize(self, question: str, events: Sequence[StoredEvent], extractive: str) -> str: ...
