"""The source of truth: events in SQLite (WAL) with FTS5 over their text and their embeddings."""

from memory_agent.store.events import DEFAULT_FTS_MAX_DOCS, EventStore, StoreStats
from memory_agent.store.faults import transient_cause
from memory_agent.store.filter_columns import FilterColumns
from memory_agent.store.lexical import LexicalHits
from memory_agent.store.schema import EVENT_COLUMNS, EVENT_FIELDS, SCHEMA_VERSION, migrate
from memory_agent.store.sql import fts_phrases, fts_query, where_clause
from memory_agent.store.vectors import Backlog, VectorModel, VectorSummary

__all__ = [
    "DEFAULT_FTS_MAX_DOCS",
    "EVENT_COLUMNS",
    "EVENT_FIELDS",
    "SCHEMA_VERSION",
    "Backlog",
    "EventStore",
    "FilterColumns",
    "LexicalHits",
    "StoreStats",
    "VectorModel",
    "VectorSummary",
    "fts_phrases",
    "fts_query",
    "migrate",
    "transient_cause",
    "where_clause",
]
