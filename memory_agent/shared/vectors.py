"""Vector memory: caller-supplied embeddings by namespace and key, searched by cosine with FAISS.

SQLite (tables ``vector_namespaces`` and ``vectors`` of ``memory.sqlite3``, migration 6) is the source of
truth; each namespace has an exact FAISS index (:class:`~memory_agent.index.flat.FlatIndex`, ids = row ids)
saved to ``<data_dir>/vectors/<namespace>.faiss`` like the events' index: loaded at start when its sidecar
agrees with SQLite (count, max id, sum of ids), rebuilt from the stored vectors otherwise. A namespace's
dimension is fixed by its first vector (until it is empty again); embeddings are L2-normalised on the way
in, so scores are cosines. A search's ``filter`` is equality on top-level metadata fields, answered from an
in-memory posting list per ``(field, value)`` and applied inside FAISS (an id selector), so the top k are
exact among the matching vectors.

One :class:`VectorMemory` owns one aiosqlite connection and one FAISS thread; writes are serialised
(SQLite first, then FAISS); searches run beside them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import numpy as np

from memory_agent.errors import DimensionMismatch, IndexFileError
from memory_agent.index.async_index import _one_thread
from memory_agent.index.files import sidecar_path
from memory_agent.index.flat import FlatIndex
from memory_agent.index.repair import load_index
from memory_agent.protocols import Clock
from memory_agent.shared.requests import VectorRequest
from memory_agent.shared.snapshot import VectorLine
from memory_agent.shared.wire import VectorHit
from memory_agent.store.schema import migrate

__all__ = ["VectorMemory"]

log = logging.getLogger(__name__)

_UPSERT = (
    "INSERT INTO vectors (namespace, key, embedding, metadata, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (namespace, key) DO UPDATE SET embedding = excluded.embedding, metadata = excluded.metadata, "
    "updated_at = excluded.updated_at, updated_by = excluded.updated_by RETURNING id"
)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class _Row:
    key: str
    metadata: dict[str, Any]
    updated_at: float
    updated_by: str


@dataclass(slots=True)
class _Namespace:
    """One namespace in memory: its FAISS index, its rows by id, ids by key, and metadata postings."""

    name: str
    dim: int
    index: FlatIndex
    rows: dict[int, _Row] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    postings: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    dirty: bool = False

    def remember(self, row_id: int, row: _Row) -> None:
        self.forget(row_id)
        self.rows[row_id] = row
        self.ids[row.key] = row_id
        for name, value in row.metadata.items():
            self.postings.setdefault((name, _canonical(value)), set()).add(row_id)

    def forget(self, row_id: int) -> None:
        row = self.rows.pop(row_id, None)
        if row is None:
            return
        self.ids.pop(row.key, None)
        for name, value in row.metadata.items():
            posting = self.postings.get((name, _canonical(value)))
            if posting is not None:
                posting.discard(row_id)
                if not posting:
                    del self.postings[(name, _canonical(value))]

    def allowed(self, where: dict[str, Any]) -> np.ndarray | None:
        """Ids whose metadata equals every ``where`` field (``None`` = no filter)."""
        if not where:
            return None
        sets = [self.postings.get((name, _canonical(value)), set()) for name, value in where.items()]
        chosen = set.intersection(*sets) if sets else set()
        return np.fromiter(sorted(chosen), dtype=np.int64, count=len(chosen))


class VectorMemory:
    """Vector memory over the SQLite file at ``db_path`` with FAISS files in ``directory``.

    Create with ``await VectorMemory.open(...)``; ``await close()`` saves and closes (idempotent).
    ``clock`` gives seconds since the epoch, UTC.
    """

    def __init__(self, conn: aiosqlite.Connection, directory: Path, *, clock: Clock) -> None:
        self._conn = conn
        self._directory = directory
        self._clock = clock
        self._spaces: dict[str, _Namespace] = {}
        self._lock = asyncio.Lock()
        self._faiss = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faiss-vectors", initializer=_one_thread)
        self._closed = False
        self.report = ""

    @classmethod
    async def open(cls, db_path: Path, directory: Path, *, clock: Clock = time.time) -> VectorMemory:
        """Open the store (migrating it) and load or rebuild each namespace's index. Raises ConfigError for
        a file that is not a memory-agent store."""
        await asyncio.to_thread(migrate, db_path)
        conn = await aiosqlite.connect(db_path, isolation_level=None)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA busy_timeout=5000")
            memory = cls(conn, directory, clock=clock)
            await memory._load()
        except BaseException:
            await conn.close()
            raise
        return memory

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._faiss, fn, *args)

    async def _load(self) -> None:
        started = time.perf_counter()
        rebuilt: list[str] = []
        total = 0
        for name, dim in await self._conn.execute_fetchall("SELECT namespace, dim FROM vector_namespaces"):
            space = _Namespace(str(name), int(dim), FlatIndex(int(dim), model=self._model(str(name))))
            rows = await self._conn.execute_fetchall(
                "SELECT id, key, metadata, updated_at, updated_by FROM vectors WHERE namespace = ? ORDER BY id",
                (space.name,))
            for row_id, key, metadata, updated_at, updated_by in rows:
                space.remember(int(row_id), _Row(str(key), json.loads(metadata), float(updated_at), str(updated_by)))
            loaded = await self._load_file(space)
            if loaded is None:
                rebuilt.append(space.name)
                await self._rebuild(space)
            else:
                space.index = loaded
            self._spaces[space.name] = space
            total += len(space.rows)
        self.report = (f"vector memory: {total} vectors in {len(self._spaces)} namespaces"
                       + (f" (rebuilt from SQLite: {', '.join(rebuilt)})" if rebuilt else "")
                       + f", loaded in {time.perf_counter() - started:.1f} s")

    def _model(self, name: str) -> str:
        return f"vector-memory:{name}"

    def _path(self, name: str) -> Path:
        return self._directory / f"{name}.faiss"

    async def _load_file(self, space: _Namespace) -> FlatIndex | None:
        path = self._path(space.name)
        if not path.exists():
            return None
        try:
            index = await self._call(lambda: load_index(path, dim=space.dim, kind="flat"))
        except IndexFileError as exc:
            log.warning("vector memory: %s; rebuilding namespace %s from SQLite", exc, space.name)
            return None
        ids = np.fromiter(space.rows, dtype=np.int64, count=len(space.rows))
        meta = index.meta()
        expected = (len(ids), int(ids.max()) if len(ids) else 0, int(ids.sum()) if len(ids) else 0)
        if (meta.count, meta.max_id, meta.id_sum) != expected or index.model != self._model(space.name):
            log.info("vector memory: %s disagrees with SQLite; rebuilding namespace %s", path, space.name)
            return None
        assert isinstance(index, FlatIndex)
        return index

    async def _rebuild(self, space: _Namespace) -> None:
        space.index = FlatIndex(space.dim, model=self._model(space.name))
        last = 0
        while True:
            rows = list(await self._conn.execute_fetchall(
                "SELECT id, embedding FROM vectors WHERE namespace = ? AND id > ? ORDER BY id LIMIT 10000",
                (space.name, last)))
            if not rows:
                break
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), space.dim)
            await self._call(space.index.add, ids, vectors)
            last = int(ids[-1])
        space.dirty = True

    # ---- operations ----------------------------------------------------------------------------------

    def _check_dim(self, space: _Namespace | None, request: VectorRequest) -> None:
        assert request.embedding is not None
        got = len(request.embedding)
        if space is not None and got != space.dim:
            raise DimensionMismatch(
                f"namespace {space.name!r} holds {space.dim}-dimensional vectors (fixed by its first vector); "
                f"this embedding has {got}: use the same model, or another namespace",
                namespace=space.name, expected=space.dim, got=got)

    async def set(self, request: VectorRequest, *, by: str) -> dict[str, Any]:
        """Store (or replace) ``request.key``'s vector; returns ``{namespace, key, dim, replaced}``. Raises
        DimensionMismatch; nothing is written then."""
        assert request.embedding is not None
        vector = np.ascontiguousarray(request.embedding, dtype="<f4")
        now = self._clock()
        async with self._lock:
            space = self._spaces.get(request.namespace)
            self._check_dim(space, request)
            metadata = json.dumps(request.metadata, ensure_ascii=False, separators=(",", ":"))
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                if space is None:
                    await self._conn.execute(
                        "INSERT INTO vector_namespaces (namespace, dim, created_at) VALUES (?, ?, ?)",
                        (request.namespace, len(vector), now))
                cursor = await self._conn.execute(
                    _UPSERT, (request.namespace, request.key, vector.tobytes(), metadata, now, by))
                row = await cursor.fetchone()
                await cursor.close()
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            assert row is not None
            row_id = int(row[0])
            if space is None:
                space = self._spaces[request.namespace] = _Namespace(
                    request.namespace, len(vector), FlatIndex(len(vector), model=self._model(request.namespace)))
            replaced = row_id in space.rows
            await self._call(space.index.add, np.array([row_id], dtype=np.int64), vector.reshape(1, -1))
            space.remember(row_id, _Row(request.key, request.metadata, now, by))
            space.dirty = True
        return {"namespace": request.namespace, "key": request.key, "dim": space.dim, "replaced": replaced}

    async def put_many(self, lines: Sequence[VectorLine]) -> int:
        """Store (or replace) many vectors in one transaction (``memory-agent import``); returns how many.
        Raises DimensionMismatch, before anything is written, for a vector whose namespace (stored, or
        earlier in ``lines``) has another dimension."""
        if not lines:
            return 0
        async with self._lock:
            dims = {name: space.dim for name, space in self._spaces.items()}
            for line in lines:
                want = dims.setdefault(line.namespace, len(line.vector))
                if want != len(line.vector):
                    raise DimensionMismatch(
                        f"namespace {line.namespace!r} holds {want}-dimensional vectors; {line.key!r} has "
                        f"{len(line.vector)}", namespace=line.namespace, expected=want, got=len(line.vector))
            stored: list[tuple[VectorLine, int]] = []
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                for name, dim in dims.items():
                    if name not in self._spaces:
                        await self._conn.execute("INSERT OR IGNORE INTO vector_namespaces (namespace, dim, created_at) "
                                                 "VALUES (?, ?, ?)", (name, dim, self._clock()))
                for line in lines:
                    cursor = await self._conn.execute(_UPSERT, (
                        line.namespace, line.key, np.ascontiguousarray(line.vector, dtype="<f4").tobytes(),
                        json.dumps(line.metadata, ensure_ascii=False, separators=(",", ":")), line.updated_at,
                        line.updated_by))
                    row = await cursor.fetchone()
                    await cursor.close()
                    assert row is not None
                    stored.append((line, int(row[0])))
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            for name in {line.namespace for line, _ in stored}:
                space = self._spaces.get(name)
                if space is None:
                    space = self._spaces[name] = _Namespace(name, dims[name], FlatIndex(dims[name],
                                                                                       model=self._model(name)))
                latest = {row_id: line for line, row_id in stored if line.namespace == name}
                ids = np.fromiter(latest, dtype=np.int64, count=len(latest))
                matrix = np.vstack([latest[int(i)].vector for i in ids]).astype(np.float32)
                await self._call(space.index.add, ids, matrix)
                for row_id, line in latest.items():
                    space.remember(row_id, _Row(line.key, line.metadata, line.updated_at, line.updated_by))
                space.dirty = True
        return len(lines)

    async def delete(self, request: VectorRequest) -> bool:
        """Remove ``request.key`` from its namespace; True if it was there. An emptied namespace forgets its
        dimension."""
        async with self._lock:
            space = self._spaces.get(request.namespace)
            row_id = space.ids.get(request.key) if space is not None else None
            if space is None or row_id is None:
                return False
            emptied = len(space.rows) == 1
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                await self._conn.execute("DELETE FROM vectors WHERE id = ?", (row_id,))
                if emptied:
                    await self._conn.execute("DELETE FROM vector_namespaces WHERE namespace = ?", (space.name,))
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._call(space.index.remove, np.array([row_id], dtype=np.int64))
            space.forget(row_id)
            space.dirty = True
            if emptied:
                del self._spaces[space.name]
                for path in (self._path(space.name), sidecar_path(self._path(space.name))):
                    path.unlink(missing_ok=True)
        return True

    async def search(self, request: VectorRequest) -> list[VectorHit]:
        """The ``top_k`` stored vectors most similar to ``request.embedding`` (cosine, best first) among those
        whose metadata matches ``request.filter``, none below ``min_score``. An unknown namespace has none.
        Raises DimensionMismatch."""
        space = self._spaces.get(request.namespace)
        if space is None:
            return []
        self._check_dim(space, request)
        allowed = space.allowed(request.filter)
        if allowed is not None and len(allowed) == 0:
            return []
        hits: list[tuple[int, float]] = await self._call(space.index.search, request.embedding, request.top_k,
                                                          allowed)
        out: list[VectorHit] = []
        for row_id, score in hits:
            row = space.rows.get(row_id)
            if row is None or (request.min_score is not None and score < request.min_score):
                continue
            out.append(VectorHit(key=row.key, score=round(float(score), 6), metadata=row.metadata,
                                 updated_at=row.updated_at, updated_by=row.updated_by))
        return out

    # ---- lifecycle -----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``{"namespaces": {name: {"dim", "vectors"}}, "vectors": total}``."""
        return {"namespaces": {s.name: {"dim": s.dim, "vectors": len(s.rows)} for s in self._spaces.values()},
                "vectors": sum(len(s.rows) for s in self._spaces.values())}

    async def save(self) -> int:
        """Save the indexes of namespaces changed since the last save; returns how many were saved."""
        saved = 0
        for space in list(self._spaces.values()):
            if not space.dirty:
                continue
            space.dirty = False
            self._directory.mkdir(parents=True, exist_ok=True)
            try:
                snapshot = await self._call(space.index.clone)
                await asyncio.to_thread(snapshot.save, self._path(space.name))
            except BaseException:
                space.dirty = True
                raise
            saved += 1
        return saved

    async def close(self) -> None:
        """Save what changed, stop the FAISS thread and close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.save()
        finally:
            await asyncio.to_thread(self._faiss.shutdown, wait=True)
            await self._conn.close()
