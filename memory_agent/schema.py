"""The SQLite schema of the event store and its versioned migrations.

The version lives in ``PRAGMA user_version``. Each migration runs in its own ``BEGIN IMMEDIATE``
transaction together with the ``user_version`` bump, so a crash leaves the file at the previous
version and the next open retries. Migrations are append-only: never edit a released one.

These functions are blocking (plain :mod:`sqlite3`); callers run them off the event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from memory_agent.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``version`` is the ``user_version`` after ``statements`` ran."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "events table (source of truth, embedding as float32 BLOB) and its indexes",
        (
            # AUTOINCREMENT: ids are never reused, so an index file can never hold an old row's vector
            # under a new row's id.
            """
            CREATE TABLE events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                message_id TEXT NOT NULL UNIQUE,
                session TEXT NOT NULL,
                from_handle TEXT NOT NULL,
                trace_id TEXT NOT NULL,
                event TEXT NOT NULL,
                service TEXT,
                occurred_at REAL NOT NULL,
                received_at REAL NOT NULL,
                payload TEXT NOT NULL,
                text TEXT NOT NULL,
                embedding BLOB NOT NULL,
                embedding_model TEXT NOT NULL,
                embedding_dim INTEGER NOT NULL
            )
            """,
            "CREATE INDEX events_occurred_at ON events (occurred_at)",
            "CREATE INDEX events_trace_occurred_at ON events (trace_id, occurred_at)",
            "CREATE INDEX events_event_occurred_at ON events (event, occurred_at)",
            "CREATE INDEX events_from_handle ON events (from_handle)",
            "CREATE INDEX events_service ON events (service)",
        ),
    ),
    Migration(
        2,
        "FTS5 (porter unicode61) over events.text, external content kept in sync by triggers",
        (
            """
            CREATE VIRTUAL TABLE events_fts USING fts5(
                text, content='events', content_rowid='id', tokenize='porter unicode61'
            )
            """,
            """
            CREATE TRIGGER events_fts_ai AFTER INSERT ON events BEGIN
                INSERT INTO events_fts (rowid, text) VALUES (new.id, new.text);
            END
            """,
            """
            CREATE TRIGGER events_fts_ad AFTER DELETE ON events BEGIN
                INSERT INTO events_fts (events_fts, rowid, text) VALUES ('delete', old.id, old.text);
            END
            """,
            """
            CREATE TRIGGER events_fts_au AFTER UPDATE OF text ON events BEGIN
                INSERT INTO events_fts (events_fts, rowid, text) VALUES ('delete', old.id, old.text);
                INSERT INTO events_fts (rowid, text) VALUES (new.id, new.text);
            END
            """,
            # Rows stored before this migration get indexed now.
            "INSERT INTO events_fts (events_fts) VALUES ('rebuild')",
        ),
    ),
    Migration(
        3,
        "index on the embedding model, so a model change is found without a table scan",
        ("CREATE INDEX events_embedding_model ON events (embedding_model, embedding_dim)",),
    ),
    Migration(
        4,
        "sender_verified: 1 when the NATS server authenticated from_handle, 0 when the sender only claimed it",
        ("ALTER TABLE events ADD COLUMN sender_verified INTEGER NOT NULL DEFAULT 0",),
    ),
    Migration(
        5,
        "service and sender indexes carry occurred_at, so a filter plus a time window is answered from "
        "the index alone (no table row read per candidate); the time index carries the filtered columns, "
        "so the daemon loads them (memory_agent.columns) without reading the table",
        (
            "CREATE INDEX events_service_occurred_at ON events (service, occurred_at)",
            "CREATE INDEX events_from_handle_occurred_at ON events (from_handle, occurred_at)",
            "CREATE INDEX events_occurred_at_columns ON events (occurred_at, event, service, from_handle)",
            "DROP INDEX events_service",
            "DROP INDEX events_from_handle",
            "DROP INDEX events_occurred_at",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


def user_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the file (0 for a new file)."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(
    path: Path, *, target: int = SCHEMA_VERSION, migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[int, int]:
    """Bring the database at ``path`` up to ``target`` (creating the file and its directory).

    Also switches the file to WAL. Returns ``(version_before, version_after)``. Blocking.
    Raises ``ConfigError`` when the file is newer than this code knows (written by a later release)
    or is not an SQLite database.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            before = user_version(conn)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"store {path}: not a usable SQLite database ({exc})") from exc
        known = migrations[-1].version if migrations else 0
        if before > known:
            raise ConfigError(
                f"store {path}: schema version {before} is newer than this memory_agent knows ({known}); "
                "upgrade memory_agent or point the store at another file"
            )
        for step in migrations:
            if step.version <= before or step.version > target:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have migrated between our read and the lock.
                if user_version(conn) >= step.version:
                    conn.execute("ROLLBACK")
                    continue
                for statement in step.statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {int(step.version)}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return before, user_version(conn)
    finally:
        conn.close()
