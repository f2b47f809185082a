"""Offline commands on a data directory: its lock, export/import of snapshots, reindexing."""

from memory_agent.tools.datadir import lock_data_dir

__all__ = ["lock_data_dir"]
