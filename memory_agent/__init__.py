"""@memory: the agent that remembers what an agent mesh reports and answers questions about it.

The pipeline, one subpackage a stage: :mod:`memory_agent.wire` (the contract) →
:mod:`memory_agent.handlers` → :mod:`memory_agent.ingest` (acknowledged once committed) →
:mod:`memory_agent.store` (SQLite + FTS5); behind it :mod:`memory_agent.backlog` embeds
(:mod:`memory_agent.embedding`) into :mod:`memory_agent.index` (FAISS) → :mod:`memory_agent.query`
(understand, retrieve, answer). :mod:`memory_agent.daemon` runs it on the mesh; :mod:`memory_agent.tools`
holds the offline commands.

The public API is re-exported here; the daemon, client and config are imported on first use, so
``import memory_agent`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memory_agent.errors import (
    AccessDenied,
    ConfigError,
    DataDirLocked,
    DimensionMismatch,
    MemoryAgentError,
    QueryError,
    ReportError,
    SharedAccessDenied,
    SharedMemoryError,
    SharedMemoryUnavailable,
    ValueTooLarge,
    VersionConflict,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from memory_agent.client import MemoryClient
    from memory_agent.config import Config, load_config
    from memory_agent.daemon import MemoryDaemon
    from memory_agent.sync import SyncMemoryClient

__all__ = [
    "AccessDenied",
    "Config",
    "ConfigError",
    "DataDirLocked",
    "DimensionMismatch",
    "MemoryAgentError",
    "MemoryClient",
    "MemoryDaemon",
    "QueryError",
    "ReportError",
    "SharedAccessDenied",
    "SharedMemoryError",
    "SharedMemoryUnavailable",
    "SyncMemoryClient",
    "ValueTooLarge",
    "VersionConflict",
    "__version__",
    "load_config",
]

_LAZY = {
    "MemoryDaemon": "memory_agent.daemon",
    "MemoryClient": "memory_agent.client",
    "SyncMemoryClient": "memory_agent.sync",
    "Config": "memory_agent.config",
    "load_config": "memory_agent.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memory_agent' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
