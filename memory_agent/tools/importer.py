"""``memory-agent import``: JSON lines (the :mod:`memory_agent.tools.snapshot` format) into the store.

The daemon must be stopped (the import takes the data directory's lock, like ``reindex``). Lines are
read ``batch`` at a time; each batch is validated whole, then the lines without a vector are embedded
with the configured model (in one encode call per batch; a vector of another model or dimension is
refused) and the batch is stored in one transaction, skipping ``message_id``s already stored. A bad line
stops the import before its batch is stored: the batches before it stay stored, and running the import
again after fixing the line skips them as duplicates. ``skip_bad`` skips bad lines instead and reports
them; ``dry_run`` validates everything and stores nothing. Batch k+1 is parsed while batch k is stored,
and the FTS5 rows of a batch are written in bulk (see ``EventStore.insert(bulk=True)``). Afterwards the
FAISS index is brought up to date: added to, or rebuilt of the kind the new size calls for.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from memory_agent.config import Config
from memory_agent.embedding.base import DEFAULT_MODEL_NAME, load_embedder
from memory_agent.embedding.onnx import vector_model_name
from memory_agent.errors import SharedMemoryError, SnapshotError
from memory_agent.protocols import Embedder
from memory_agent.shared.snapshot import VectorLine, parse_vector_line, vector_line_object
from memory_agent.shared.vectors import VectorMemory
from memory_agent.tools.snapshot import NON_FINITE, ParsedLine, finish_vectors, parse_fields

__all__ = ["ImportSummary", "import_events"]

_MAX_REPORTED = 20


class _BadLine(Exception):
    """A bad line while not skipping: ``(line, problem, first, last)`` with its batch's line range."""


@dataclass(slots=True)
class ImportSummary:
    """What an import did. ``bad`` lists ``(line, problem)`` of skipped lines (the first 20)."""

    lines: int = 0
    stored: int = 0
    duplicates: int = 0
    embedded: int = 0
    skipped: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0
    index: str = ""
    vectors: int = 0

    def line(self) -> str:
        """One line for the terminal."""
        rate = self.lines / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"{self.lines} lines: {self.stored} events stored, {self.duplicates} already stored, "
            f"{self.embedded} embedded, {self.skipped} bad lines skipped, in {self.seconds:.1f} s "
            f"({rate:.0f} lines/s)"
        )
        if self.vectors:
            text += f"; {self.vectors} vectors of vector memory"
        return f"{text}; {self.index}" if self.index else text



def _read_batches(stream: IO[bytes], batch: int) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
    """``([(line number, raw line)], bytes read)`` per ``batch`` non-blank lines (numbers count from 1)."""
    lines: list[tuple[int, bytes]] = []
    size = 0
    for number, raw in enumerate(stream, start=1):
        size += len(raw)
        if raw.strip():
            lines.append((number, raw))
        if len(lines) >= batch:
            yield lines, size
            lines, size = [], 0
    if lines or size:
        yield lines, size


async def import_events(
    config: Config,
    source: Path | IO[bytes],
    *,
    batch: int = 5000,
    skip_bad: bool = False,
    dry_run: bool = False,
    embedder: Embedder | None = None,
    progress: bool | None = None,
    on_bad: Callable[[int, str], None] | None = None,
) -> ImportSummary:
    """Import JSON lines from ``source`` (a path, or a binary stream such as stdin) into the store of
    ``config`` and bring its FAISS index up to date; see the module docstring for the rules.

    ``embedder``: used for lines without a vector (default: the configured ``[embedding]`` model and
    backend, loaded only when a line needs it or the store is empty and its dimension must be known).
    ``on_bad(line, problem)`` is called for each skipped line. Raises ``SnapshotError`` naming the line for
    a bad line (unless ``skip_bad``) and when the store holds vectors of another model, ``DataDirLocked``
    while a daemon runs on the data directory.
    """
    from memory_agent.index.repair import open_index
    from memory_agent.store.events import EventStore
    from memory_agent.tools.datadir import lock_data_dir

    if batch < 1:
        raise SnapshotError(f"--batch must be at least 1, got {batch}")
    started = time.perf_counter()
    # The name stored with each vector (``<name>+onnx-int8`` for the int8 backend), known without loading.
    model = embedder.name if embedder is not None else vector_model_name(
        config.embedding.model or DEFAULT_MODEL_NAME, config.embedding.backend
    )
    lock = lock_data_dir(config.data_dir)
    summary = ImportSummary()
    try:
        store = await EventStore.open(config.db_path)
        try:
            dim = await _store_dim(store, model)
            loaded: list[Embedder] = [embedder] if embedder is not None else []

            async def get_embedder() -> Embedder:
                if not loaded:
                    loaded.append(await asyncio.to_thread(load_embedder, config.embedding, data_dir=config.data_dir))
                return loaded[0]

            if dim is None:  # an empty store: the model's own dimension decides
                dim = (await get_embedder()).dim
            vectors = _VectorImport(config)
            stream, total, close = _open_source(source)
            try:
                with tqdm(total=total, unit="B", unit_scale=True, desc="import", file=sys.stderr,
                          disable=None if progress is None else not progress) as bar:
                    # Batch k+1 is parsed (Python) while batch k is stored (SQLite, off the GIL).
                    pending: asyncio.Task[None] | None = None
                    try:
                        for lines, size in _read_batches(stream, batch):
                            vector_lines: list[VectorLine] = []
                            parsed = await asyncio.to_thread(
                                _parse_batch, lines, model=model, dim=dim, tz=config.tz, skip_bad=skip_bad,
                                summary=summary, on_bad=on_bad, vector_lines=vector_lines,
                            )
                            if vector_lines and not dry_run:
                                summary.vectors += await vectors.put(vector_lines)
                            if pending is not None:
                                await pending
                                pending = None
                            if parsed and not dry_run:
                                pending = asyncio.create_task(_store_batch(
                                    store, parsed, model=model, dim=dim, get_embedder=get_embedder, summary=summary
                                ))
                            bar.update(size)
                            bar.set_postfix(stored=summary.stored, dup=summary.duplicates,
                                            embedded=summary.embedded, bad=summary.skipped, refresh=False)
                        if pending is not None:
                            await pending
                            pending = None
                    except _BadLine as bad:
                        if pending is not None:
                            await pending  # the batch before the bad line is valid: let it commit
                        number, problem, first, last = bad.args
                        raise SnapshotError(
                            f"line {number}: {problem}. Nothing from lines {first}..{last} was stored; the "
                            f"{summary.stored} events of earlier lines were (running the import again skips "
                            "them as duplicates); fix the line, or pass --skip-bad to skip bad lines",
                            line=number,
                        ) from None
                    finally:
                        if pending is not None:
                            pending.cancel()
            finally:
                close()
                await vectors.close()
            if not dry_run and summary.stored:
                _, summary.index = await open_index(config.index_path, store, dim=dim, model=model,
                                                    config=config.index)
        finally:
            await store.close()
    finally:
        lock.close()
    summary.seconds = time.perf_counter() - started
    return summary


class _VectorImport:
    """Vector memory, opened at the first vector line of an import (and saved at the end)."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._memory: VectorMemory | None = None

    async def put(self, lines: list[VectorLine]) -> int:
        if self._memory is None:
            self._memory = await VectorMemory.open(self._config.db_path, self._config.vectors_dir)
        try:
            return await self._memory.put_many(lines)
        except SharedMemoryError as exc:
            raise SnapshotError(f"vector lines: {exc}") from None

    async def close(self) -> None:
        if self._memory is not None:
            await self._memory.close()
            self._memory = None


async def _store_dim(store: Any, model: str) -> int | None:
    models = await store.vector_models()
    foreign = [m for m in models if m.model != model]
    if foreign:
        found = ", ".join(f"{m.model!r} ({m.count} rows)" for m in models)
        raise SnapshotError(
            f"the store holds vectors of {found} but the configured model is {model!r}: run "
            "`memory-agent reindex` first, or configure the model the store was made with"
        )
    return models[0].dim if models else None


def _open_source(source: Path | IO[bytes]) -> tuple[IO[bytes], int | None, Callable[[], None]]:
    if isinstance(source, Path):
        try:
            handle = open(source, "rb")  # noqa: SIM115 - closed by the returned callable
        except OSError as exc:
            raise SnapshotError(f"cannot read {source}: {exc.strerror}") from exc
        return handle, source.stat().st_size, handle.close
    return source, None, lambda: None


def _parse_batch(
    lines: list[tuple[int, bytes]],
    *,
    model: str,
    dim: int,
    tz: tzinfo,
    skip_bad: bool,
    summary: ImportSummary,
    on_bad: Callable[[int, str], None] | None,
    vector_lines: list[VectorLine],
) -> list[ParsedLine]:
    parsed: list[tuple[int, ParsedLine]] = []

    def reject(number: int, problem: str) -> None:
        if not skip_bad:
            raise _BadLine(number, problem, lines[0][0], lines[-1][0])
        summary.skipped += 1
        if len(summary.bad) < _MAX_REPORTED:
            summary.bad.append((number, problem))
        if on_bad is not None:
            on_bad(number, problem)

    for number, raw in lines:
        summary.lines += 1
        try:
            vector_obj = vector_line_object(raw)
            if vector_obj is not None:
                vector_lines.append(parse_vector_line(vector_obj))
                continue
            parsed.append((number, parse_fields(raw.decode("utf-8"), model=model, dim=dim, tz=tz)))
        except (ValueError, UnicodeDecodeError) as exc:
            reject(number, str(exc))
    carrying = [i for i, (_, p) in enumerate(parsed) if p.vector is not None]
    if not carrying:
        return [p for _, p in parsed]
    matrix, bad_rows = finish_vectors([v for i in carrying if (v := parsed[i][1].vector) is not None])
    dropped = set()
    for row in bad_rows:
        dropped.add(carrying[row])
        reject(parsed[carrying[row]][0], NON_FINITE)
    for row, i in enumerate(carrying):
        parsed[i] = (parsed[i][0], ParsedLine(parsed[i][1].event, matrix[row]))
    return [p for i, (_, p) in enumerate(parsed) if i not in dropped]


async def _store_batch(
    store: Any,
    parsed: list[ParsedLine],
    *,
    model: str,
    dim: int,
    get_embedder: Callable[[], Any],
    summary: ImportSummary,
) -> None:
    # Lines already stored are not embedded again.
    known = await store.find_messages([p.event.sent for p in parsed])
    todo = [p for p in parsed if p.event.sent not in known]
    summary.duplicates += len(parsed) - len(todo)
    if not todo:
        return
    missing = [i for i, p in enumerate(todo) if p.vector is None]
    fresh: np.ndarray | None = None
    if missing:
        embedder = await get_embedder()
        fresh = np.asarray(await asyncio.to_thread(embedder.encode, [todo[i].event.text for i in missing]))
        if fresh.shape != (len(missing), dim):
            raise SnapshotError(
                f"embedder {embedder.name!r} returned vectors of shape {fresh.shape}, the store holds dim {dim}"
            )
        summary.embedded += len(missing)
    matrix = np.empty((len(todo), dim), dtype=np.float32)
    slot = {index: row for row, index in enumerate(missing)}
    for i, p in enumerate(todo):
        if p.vector is None:
            assert fresh is not None
            matrix[i] = fresh[slot[i]]
        else:
            matrix[i] = p.vector
    results = await store.insert([p.event for p in todo], matrix, model=model, bulk=True)
    new = sum(1 for r in results if not r.duplicate)
    summary.stored += new
    summary.duplicates += len(results) - new
