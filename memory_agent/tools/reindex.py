"""``memory-agent reindex``: re-embed every stored event, or only rebuild the FAISS file, with a progress bar.

Runs on the data directory while the daemon is stopped (it takes the daemon's lock). Re-embedding is
needed after changing ``embedding.model`` or switching ``embedding.backend`` to or from ``onnx-int8``;
it also embeds the events still waiting for a vector and retries those the model could not embed.
``--rebuild-only`` rebuilds the index from the vectors already in SQLite (events without one are left
to the daemon's embedding backlog).
"""

from __future__ import annotations

import asyncio
import time

from tqdm import tqdm

from memory_agent.config import Config
from memory_agent.embedding.base import load_embedder
from memory_agent.index.repair import open_index
from memory_agent.store.events import EventStore
from memory_agent.tools.datadir import lock_data_dir

__all__ = ["reindex"]


async def reindex(config: Config, *, rebuild_only: bool = False, batch: int = 256) -> str:
    """Re-embed (or, with ``rebuild_only``, just re-index) every event; returns a one-line summary.

    The index is rebuilt from SQLite afterwards, of the kind ``[index]`` asks for at the store's size.
    Raises DataDirLocked while a daemon runs on the directory, ConfigError if the model cannot load.
    """
    lock = lock_data_dir(config.data_dir)
    started = time.perf_counter()
    try:
        store = await EventStore.open(config.db_path)
        try:
            if rebuild_only:
                config.index_path.unlink(missing_ok=True)
                models = await store.vector_models()
                backlog = await store.backlog()
                waiting = (f"; {backlog.count} events wait for a vector (the daemon embeds them)"
                           if backlog.count else "")
                if not models:
                    return "no stored vectors: nothing to index" + waiting
                top = models[0]
                _, how = await open_index(
                    config.index_path, store, dim=top.dim, model=top.model, config=config.index
                )
                return how + waiting
            embedder = await asyncio.to_thread(load_embedder, config.embedding, data_dir=config.data_dir)
            total = (await store.stats()).count
            with tqdm(total=total, unit="event", desc=f"re-embedding with {embedder.name}") as bar:
                async for ids, texts in store.iter_texts(batch=batch):
                    vectors = await asyncio.to_thread(embedder.encode, texts)
                    await store.update_vectors(ids, vectors, model=embedder.name)
                    bar.update(len(ids))
            config.index_path.unlink(missing_ok=True)
            _, how = await open_index(
                config.index_path, store, dim=embedder.dim, model=embedder.name, config=config.index
            )
            elapsed = time.perf_counter() - started
            return f"re-embedded {total} events with {embedder.name} in {elapsed:.1f} s; {how}"
        finally:
            await store.close()
    finally:
        lock.close()
