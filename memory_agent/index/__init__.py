"""The vector index: FAISS over the stored embeddings, keyed by SQLite ids, a cache of SQLite."""

from memory_agent.index.async_index import AsyncIndex
from memory_agent.index.base import exact_top_k
from memory_agent.index.files import IndexMeta, read_meta, sidecar_path
from memory_agent.index.flat import FlatIndex
from memory_agent.index.ivf import IVFIndex, auto_nlist
from memory_agent.index.repair import load_index, open_index, plan_index

__all__ = [
    "AsyncIndex",
    "FlatIndex",
    "IVFIndex",
    "IndexMeta",
    "auto_nlist",
    "exact_top_k",
    "load_index",
    "open_index",
    "plan_index",
    "read_meta",
    "sidecar_path",
]
