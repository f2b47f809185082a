"""The one error root of memory_agent and its subclasses; each carries what failed."""

from __future__ import annotations


class MemoryAgentError(Exception):
    """Root of every error memory_agent raises on purpose."""


class ReportError(MemoryAgentError):
    """A report payload that cannot be stored; ``str(err)`` says what is wrong and how to fix it."""


class QueryError(MemoryAgentError):
    """A question (plain or structured) that cannot be answered as sent; the message says how to fix it."""


class ConfigError(MemoryAgentError):
    """A configuration value that is missing or invalid; names the key and the source (file, env, flag)."""


class IndexError_(MemoryAgentError):
    """The vector index file cannot be used (corrupt, wrong dimension, stale); callers rebuild it from SQLite."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path
