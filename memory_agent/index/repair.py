"""Opening the vector index: load the saved file if it agrees with SQLite, else repair it.

The index is a cache of SQLite: when its file is missing, corrupt or stale it is rebuilt from the
stored vectors (no re-embedding); when it is only behind (a crash after SQLite committed newer rows)
the missing rows are added. Its kind follows the store's size (``[index]`` in the config): exact
``flat`` below ``exact_threshold`` vectors, ``ivf`` (approximate, 8-bit codes) above (see
:mod:`memory_agent.index.flat`, :mod:`memory_agent.index.ivf`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import faiss
import numpy as np

from memory_agent.config import IndexConfig
from memory_agent.errors import IndexFileError, VectorModelMismatch
from memory_agent.index.files import IndexMeta, read_meta, sha256_file
from memory_agent.index.flat import FlatIndex
from memory_agent.index.ivf import MIN_POINTS_PER_LIST, IVFIndex, auto_nlist
from memory_agent.store.events import EventStore
from memory_agent.store.vectors import VectorModel

__all__ = ["load_index", "open_index", "plan_index"]

# The fewest lists an IVF index gets: below 32 * 39 vectors the store stays flat.
_MIN_LISTS = 32
# Training points per list (FAISS samples at most 256 per centroid; 39 is its minimum).
_TRAIN_POINTS_PER_LIST = 50


def plan_index(config: IndexConfig, count: int, *, current: tuple[str, int] | None = None) -> tuple[str, int]:
    """The ``(kind, nlist)`` an index over ``count`` vectors should have; ``current`` is the saved index's.

    ``auto`` is flat below ``exact_threshold`` and ivf from it on, keeping a saved ivf down to half the
    threshold (hysteresis: deleting a few events does not flip the kind back). ivf needs
    ``32 * 39`` vectors to train its lists, so a smaller store is flat whatever the config says.
    ``nlist``: the configured value or :func:`auto_nlist`, at most ``count / 39``; with the auto value a
    saved ivf keeps its lists while they are within a factor of 4 of it (no retraining at each start).
    """
    kind = config.kind
    if kind == "auto":
        keep = current is not None and current[0] == "ivf" and count >= config.exact_threshold // 2
        kind = "ivf" if count >= config.exact_threshold or keep else "flat"
    if kind != "ivf" or count < _MIN_LISTS * MIN_POINTS_PER_LIST:
        return "flat", 0
    if config.nlist:
        return "ivf", min(config.nlist, count // MIN_POINTS_PER_LIST)
    nlist = max(_MIN_LISTS, auto_nlist(count))
    if current is not None and current[0] == "ivf" and nlist // 4 <= current[1] <= nlist * 4:
        return "ivf", current[1]
    return "ivf", nlist


def _check_models(models: tuple[VectorModel, ...], *, dim: int, model: str) -> None:
    foreign = [m for m in models if (m.model, m.dim) != (model, dim)]
    if not foreign:
        return
    found = ", ".join(f"{m.model!r} (dim {m.dim}): {m.count} rows" for m in models)
    raise VectorModelMismatch(
        f"embedder model: configured {model!r} (dim {dim}) but SQLite holds vectors of {found}; "
        "run `memory-agent reindex` to re-embed them, or configure the model they were made with",
        configured=(model, dim),
        stored=models,
    )


def _describe_stale(meta: IndexMeta, *, count: int, max_id: int, id_sum: int) -> str | None:
    if (meta.count, meta.max_id, meta.id_sum) != (count, max_id, id_sum):
        return f"file has {meta.count} vectors up to id {meta.max_id}, SQLite has {count} up to id {max_id}"
    return None


async def _build(
    store: EventStore, *, kind: str, nlist: int, dim: int, model: str, config: IndexConfig
) -> FlatIndex | IVFIndex:
    index: FlatIndex | IVFIndex
    if kind == "ivf":
        sample = await store.sample_vectors(_TRAIN_POINTS_PER_LIST * nlist)
        index = await asyncio.to_thread(IVFIndex.trained, sample, nlist=nlist, model=model, nprobe=config.nprobe)
        del sample
    else:
        index = FlatIndex(dim, model=model)
    async for ids, vectors in store.iter_vectors(model=model):
        await asyncio.to_thread(index.add, ids, vectors)
    return index


async def open_index(
    path: Path, store: EventStore, *, dim: int, model: str, config: IndexConfig | None = None
) -> tuple[FlatIndex | IVFIndex, str]:
    """Load the index at ``path`` if it agrees with ``store`` and ``config``, else repair it and save.

    Agreement means same model, dim, kind and lists (see :func:`plan_index`), row count, max id and sum
    of ids. A file that is only behind SQLite (it holds exactly the rows up to its max id) gets the
    newer rows added; anything else is rebuilt from ``store.iter_vectors()`` (no re-embedding; an ivf
    index is first trained on a sample of the stored vectors). Returns the index and one line saying what
    happened (a fresh, empty store gets ``new flat index for an empty store, ...``). Raises ``VectorModelMismatch`` (a ``ConfigError``) when SQLite holds vectors of another
    model or dimension than ``model``/``dim``. Blocking FAISS work runs in worker threads.
    """
    path = Path(path)
    config = config or IndexConfig()
    started = time.perf_counter()
    # The file is read and checked (FAISS thread) while SQLite sums its ids.
    loading = asyncio.create_task(_try_load(path, dim=dim, nprobe=config.nprobe))
    try:
        summary = await store.vector_summary()
        _check_models(summary.models, dim=dim, model=model)
    except BaseException:
        loading.cancel()
        raise
    loaded = await loading
    reason: str
    current: tuple[str, int] | None = None
    if loaded is None:
        reason = "index file missing"
    elif isinstance(loaded, IndexFileError):
        reason = f"index file corrupt ({loaded})"
    else:
        index = loaded
        current = (index.kind, index.nlist)
        kind, nlist = plan_index(config, summary.count, current=current)
        meta = await asyncio.to_thread(index.meta)
        stale = _describe_stale(meta, count=summary.count, max_id=summary.max_id, id_sum=summary.id_sum)
        if index.model != model or index.dim != dim:
            reason = f"index stale (file has model {index.model!r} dim {index.dim}, configured {model!r} dim {dim})"
        elif (kind, nlist) != current:
            reason = (
                f"index kind {index.kind}"
                + (f" with {index.nlist} lists" if index.nlist else "")
                + f" but {summary.count} vectors want {kind}"
                + (f" with {nlist} lists" if nlist else "")
            )
        elif stale is None:
            differ = await _spot_check(store, index)
            if differ is None:
                return index, f"loaded {len(index)} vectors from {path} ({index.kind})"
            reason = f"index stale ({differ})"
        elif await _is_prefix(store, meta):
            # Behind SQLite (a crash between two saves): add what it lacks instead of rebuilding.
            added = 0
            async for ids, vectors in store.iter_vectors(model=model, after=meta.max_id):
                await asyncio.to_thread(index.add, ids, vectors)
                added += len(ids)
            await asyncio.to_thread(index.save, path)
            elapsed = time.perf_counter() - started
            return index, (
                f"index stale ({stale}): rebuilt {len(index)} vectors from SQLite ({index.kind}) by adding "
                f"the {added} it lacked, in {elapsed:.1f} s, saved to {path}"
            )
        else:
            reason = f"index stale ({stale})"
        del index
    kind, nlist = plan_index(config, summary.count, current=current)
    index = await _build(store, kind=kind, nlist=nlist, dim=dim, model=model, config=config)
    await asyncio.to_thread(index.save, path)
    if loaded is None and summary.count == 0:  # a fresh data directory: nothing was lost or rebuilt
        return index, f"new {index.kind} index for an empty store, saved to {path}"
    elapsed = time.perf_counter() - started
    lists = f" with {index.nlist} lists" if index.nlist else ""
    return index, (
        f"{reason}: rebuilt {len(index)} vectors from SQLite ({index.kind}{lists}) in {elapsed:.1f} s, "
        f"saved to {path}"
    )


async def _try_load(path: Path, *, dim: int, nprobe: int) -> FlatIndex | IVFIndex | IndexFileError | None:
    if not path.exists():
        return None
    try:
        return await asyncio.to_thread(load_index, path, dim=dim, nprobe=nprobe)
    except IndexFileError as exc:
        return exc


async def _is_prefix(store: EventStore, meta: IndexMeta) -> bool:
    """True when the saved index holds exactly SQLite's rows with ``id <= meta.max_id``."""
    head = await store.vector_summary(up_to=meta.max_id)
    return (head.count, head.max_id, head.id_sum) == (meta.count, meta.max_id, meta.id_sum)


async def _spot_check(store: EventStore, index: FlatIndex | IVFIndex, *, sample: int = 32) -> str | None:
    """Compare the vectors of up to ``sample`` ids (evenly spread) with SQLite; ``None`` when they agree.

    Catches an index file with the right ids but other vectors (say restored from another store).
    Flat vectors must be identical; ivf codes must decode to a cosine of at least 0.98 with the stored.
    """
    ids = np.sort(await asyncio.to_thread(index.ids))
    if len(ids) == 0:
        return None
    picked = ids[np.linspace(0, len(ids) - 1, num=min(sample, len(ids))).astype(np.int64)]
    found, stored = await store.vectors(picked)
    held = await asyncio.to_thread(index.vectors, found)
    if index.exact:
        bad = int(np.sum(np.any(held != stored, axis=1)))
    else:
        bad = int(np.sum(np.sum(held * stored, axis=1) < 0.98 * np.sum(stored * stored, axis=1)))
    bad += len(picked) - len(found)
    return None if bad == 0 else f"vectors differ from SQLite at {bad} of {len(picked)} sampled ids"


def load_index(path: Path, *, dim: int, nprobe: int = 16, kind: str | None = None) -> FlatIndex | IVFIndex:
    """Read an index saved by ``save()``, of either kind or of ``kind`` (``"flat"``, ``"ivf"``) when given
    (no training, no rebuild).

    Raises ``IndexFileError`` (with ``path``) when the file or its sidecar is missing, unreadable or corrupt
    (checksum, FAISS format, ids other than the sidecar lists), holds an unknown kind, or vectors of
    another dimension than ``dim``. ``nprobe`` applies to an ``"ivf"`` index.
    """
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise IndexFileError(f"index file {path} is missing", path=where)
    meta = read_meta(path)
    if sha256_file(path) != meta.sha256:
        raise IndexFileError(f"index file {path} does not match the checksum in its sidecar", path=where)
    try:
        raw = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexFileError(f"index file {path} is not a FAISS index ({exc})", path=where) from exc
    if raw.d != dim or meta.dim != dim:
        raise IndexFileError(f"index file {path} has dimension {raw.d}, expected {dim}", path=where)
    index: FlatIndex | IVFIndex
    if meta.kind == "flat" and isinstance(raw, faiss.IndexIDMap2):
        index = FlatIndex(dim, model=meta.model, index=raw)
    elif meta.kind == "ivf" and isinstance(raw, faiss.IndexIVFScalarQuantizer):
        index = IVFIndex(raw, model=meta.model, nprobe=nprobe)
    else:
        raise IndexFileError(
            f"index file {path} holds a {type(raw).__name__}, which is not a {meta.kind!r} index", path=where
        )
    if kind is not None and index.kind != kind:
        raise IndexFileError(f"index file {path} holds a {index.kind!r} index, not {kind!r}", path=where)
    got = index.meta(meta.sha256)
    if (got.count, got.max_id, got.id_sum, got.nlist) != (meta.count, meta.max_id, meta.id_sum, meta.nlist):
        raise IndexFileError(f"index file {path} does not hold the ids its sidecar lists", path=where)
    return index

