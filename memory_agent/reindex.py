"""``memory-agent reindex``: re-embed every stored event, or only rebuild the FAISS file, with a progress bar.

Runs on the data directory while the daemon is stopped (it takes the daemon's lock). Re-embedding is
needed after changing ``embedding.model``; ``--rebuild-only`` rebuilds the index from the vectors
already in SQLite.
"""

from __future__ import annotations

import asyncio
import time

from tqdm import tqdm

from memory_agent.config import Config
from memory_agent.daemon import lock_data_dir
from memory_agent.embedder import SentenceTransformerEmbedder
from memory_agent.index import FaissIndex, open_index
from memory_agent.store import EventStore


async def reindex(config: Config, *, rebuild_only: bool = False, batch: int = 256) -> str:
    """Re-embed (or, with ``rebuild_only``, just re-index) every event; returns a one-line summary.

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
                if not models:
                    return "no events stored: nothing to index"
                top = models[0]
                _, how = await open_index(config.index_path, store, dim=top.dim, model=top.model)
                return how
            embedder = await asyncio.to_thread(
                SentenceTransformerEmbedder, config.embedding.model or None, device=config.embedding.device
            )
            total = (await store.stats()).count
            index = FaissIndex(embedder.dim, model=embedder.name)
            with tqdm(total=total, unit="event", desc=f"re-embedding with {embedder.name}") as bar:
                async for ids, texts in store.iter_texts(batch=batch):
                    vectors = await asyncio.to_thread(embedder.encode, texts)
                    await store.update_vectors(ids, vectors, model=embedder.name)
                    await asyncio.to_thread(index.add, ids, vectors)
                    bar.update(len(ids))
            await asyncio.to_thread(index.save, config.index_path)
            elapsed = time.perf_counter() - started
            return f"re-embedded {total} events with {embedder.name} in {elapsed:.1f} s; index saved to {config.index_path}"
        finally:
            await store.close()
    finally:
        lock.close()
