"""The SQLite schema of the event store: its column list (the one place that names the columns) and its
versioned migrations.

:data:`EVENT_COLUMNS` lists the stored fields of an event with how each is written to and read from
SQLite; every query, the export and the in-memory filter columns take their columns from it, by name.
Adding a column is one entry here (with its field on :class:`memory_agent.types.NewEvent`, checked
below at import) plus a migration.

The version lives in ``PRAGMA user_version``. Each migration runs in its own ``BEGIN IMMEDIATE``
transaction together with the ``user_version`` bump, so a crash leaves the file at the previous
version and the next open retries. Migrations are append-only: never edit a released one.

These functions are blocking (plain :mod:`sqlite3`); callers run them off the event loop.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from memory_agent.errors import ConfigError
from memory_agent.types import NewEvent, StoredEvent

__all__ = [
    "EVENT_COLUMNS",
    "EVENT_FIELDS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SELECT_EVENT",
    "Column",
    "Migration",
    "decode_event",
    "encode_event",
    "migrate",
    "user_version",
]

log = logging.getLogger(__name__)


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Column:
    """One stored field of an event: its name (the same on :class:`~memory_agent.types.NewEvent` and in
    SQL) and how its Python value is written (``encode``) and read back (``decode``)."""

    name: str
    encode: Callable[[Any], Any] = _same
    decode: Callable[[Any], Any] = _same


def _payload_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


#: The stored fields of an event, besides ``id`` (assigned by SQLite) and the embedding columns
#: (``embedding``, ``embedding_model``, ``embedding_dim``, ``embedding_error``: written and read by
#: :mod:`memory_agent.store.vectors` only; all NULL until the row is embedded behind ingest).
EVENT_COLUMNS: tuple[Column, ...] = (
    Column("message_id"),
    Column("session"),
    Column("from_handle"),
    Column("trace_id"),
    Column("event"),
    Column("service"),
    Column("occurred_at", float, float),
    Column("received_at", float, float),
    Column("payload", _payload_json, json.loads),
    Column("text"),
    Column("sender_verified", int, bool),
)
EVENT_FIELDS: tuple[str, ...] = tuple(c.name for c in EVENT_COLUMNS)
#: ``id`` and every stored field, comma-separated, for ``SELECT {SELECT_EVENT} FROM events``.
SELECT_EVENT = ", ".join(("id", *EVENT_FIELDS))

if set(EVENT_FIELDS) != {f.name for f in fields(NewEvent)}:  # pragma: no cover - fails at import, loudly
    raise RuntimeError(
        f"memory_agent.store.schema.EVENT_COLUMNS {sorted(EVENT_FIELDS)} and the fields of NewEvent "
        f"{sorted(f.name for f in fields(NewEvent))} differ: add the column to both (and a migration)"
    )


def encode_event(event: NewEvent) -> dict[str, Any]:
    """The SQL values of ``event``'s stored fields, by column name."""
    return {c.name: c.encode(getattr(event, c.name)) for c in EVENT_COLUMNS}


def decode_event(row: Sequence[Any]) -> StoredEvent:
    """A row of ``SELECT {SELECT_EVENT}`` (id first, then :data:`EVENT_FIELDS` in order) as a StoredEvent."""
    values: dict[str, Any] = {c.name: c.decode(v) for c, v in zip(EVENT_COLUMNS, row[1:], strict=True)}
    return StoredEvent(id=int(row[0]), **values)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``version`` is the ``user_version`` after ``statements`` ran.

    ``apply``, when given, runs after the statements inside the same transaction, for a step SQL text
    alone cannot say; the connection is reopened after such a step, so later steps parse the new schema.
    """

    version: int
    description: str
    statements: tuple[str, ...]
    apply: Callable[[sqlite3.Connection], None] | None = None


# The embedding columns as migration 1 declared them, and without NOT NULL (migration 7).
_EMBEDDING_NOT_NULL = (
    ("embedding BLOB NOT NULL", "embedding BLOB"),
    ("embedding_model TEXT NOT NULL", "embedding_model TEXT"),
    ("embedding_dim INTEGER NOT NULL", "embedding_dim INTEGER"),
)


def _edit_schema(conn: sqlite3.Connection, updates: Sequence[tuple[str, tuple[str, ...]]]) -> None:
    """Run ``updates`` (``UPDATE sqlite_schema ...`` statements with their parameters) and bump the schema
    version, inside the caller's transaction: SQLite's "simpler procedure" for schema changes that leave
    the on-disk format alone (https://sqlite.org/lang_altertable.html#otheralter). SQLite reads the edited
    schema at the next statement."""
    version = int(conn.execute("PRAGMA schema_version").fetchone()[0])
    conn.execute("PRAGMA writable_schema = ON")
    try:
        for statement, parameters in updates:
            conn.execute(statement, parameters)
        conn.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        conn.execute("PRAGMA writable_schema = OFF")


def _nullable_embeddings(conn: sqlite3.Connection) -> None:
    """Drop NOT NULL from the three embedding columns by editing the table's definition in place.

    SQLite's documented "simpler procedure" for schema changes that leave the on-disk format alone,
    such as removing NOT NULL constraints (https://sqlite.org/lang_altertable.html#otheralter): the
    ``CREATE TABLE`` text in ``sqlite_schema`` is rewritten and the schema version bumped, inside the
    migration's transaction. No row is copied, so a store of a million events migrates in milliseconds.
    """
    row = conn.execute("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'events'").fetchone()
    sql = str(row[0])
    for old, new in _EMBEDDING_NOT_NULL:
        if old not in sql:
            raise ConfigError(f"store: the events table does not declare {old!r} as expected; cannot migrate it")
        sql = sql.replace(old, new)
    _edit_schema(conn, [("UPDATE sqlite_schema SET sql = ? WHERE type = 'table' AND name = 'events'", (sql,))])


def _message_ids_per_sender(conn: sqlite3.Connection) -> None:
    """Make ``message_id`` unique per sender instead of across all senders, without copying the table.

    The column's ``UNIQUE`` lives in SQLite's automatic index ``sqlite_autoindex_events_1``, which cannot be
    dropped while the constraint names it. As in migration 7 (SQLite's "simpler procedure",
    https://sqlite.org/lang_altertable.html#otheralter), the table's ``CREATE TABLE`` text loses the
    ``UNIQUE``, and the automatic index becomes an ordinary ``CREATE UNIQUE INDEX ... (message_id)``: the
    same b-tree, whose entries are ``(message_id, rowid)`` either way. With the schema version bumped,
    SQLite reads the new schema and the index is dropped like any other, its pages freed; the unique
    index on ``(message_id, from_handle)`` replaces it. Rows, ids and the FTS5 index are untouched, so a
    store of a million events migrates in seconds (bench/migrate.py).
    """
    table = conn.execute("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'events'").fetchone()
    old = "message_id TEXT NOT NULL UNIQUE"
    auto = [str(r[0]) for r in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'events' AND sql IS NULL")]
    columns = [str(r[2]) for r in conn.execute("PRAGMA index_info('sqlite_autoindex_events_1')")]
    if table is None or old not in str(table[0]) or auto != ["sqlite_autoindex_events_1"] or columns != ["message_id"]:
        raise ConfigError(f"store: the events table does not declare {old!r} as one automatic index, as "
                          "expected; cannot migrate it")
    _edit_schema(conn, [
        ("UPDATE sqlite_schema SET sql = ? WHERE type = 'table' AND name = 'events'",
         (str(table[0]).replace(old, "message_id TEXT NOT NULL"),)),
        ("UPDATE sqlite_schema SET name = 'events_message_id_v9', "
         "sql = 'CREATE UNIQUE INDEX events_message_id_v9 ON events (message_id)' "
         "WHERE type = 'index' AND name = 'sqlite_autoindex_events_1'", ()),
    ])
    conn.execute("DROP INDEX events_message_id_v9")
    conn.execute("CREATE UNIQUE INDEX events_message_sender ON events (message_id, from_handle)")


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
        "so the daemon loads them (memory_agent.store.filter_columns) without reading the table",
        (
            "CREATE INDEX events_service_occurred_at ON events (service, occurred_at)",
            "CREATE INDEX events_from_handle_occurred_at ON events (from_handle, occurred_at)",
            "CREATE INDEX events_occurred_at_columns ON events (occurred_at, event, service, from_handle)",
            "DROP INDEX events_service",
            "DROP INDEX events_from_handle",
            "DROP INDEX events_occurred_at",
        ),
    ),
    Migration(
        6,
        "vector memory (shared memory's vector.set/search): caller-supplied embeddings by namespace and key, "
        "each namespace's dimension fixed by its first vector (memory_agent.shared.vectors)",
        (
            """
            CREATE TABLE vector_namespaces (
                namespace TEXT PRIMARY KEY,
                dim INTEGER NOT NULL,
                created_at REAL NOT NULL
            )
            """,
            # AUTOINCREMENT: a FAISS file can never hold an old vector under a new row's id.
            """
            CREATE TABLE vectors (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                namespace TEXT NOT NULL REFERENCES vector_namespaces (namespace),
                key TEXT NOT NULL,
                embedding BLOB NOT NULL,
                metadata TEXT NOT NULL,
                updated_at REAL NOT NULL,
                updated_by TEXT NOT NULL,
                UNIQUE (namespace, key)
            )
            """,
        ),
    ),
    Migration(
        7,
        "embedding columns nullable: a report is stored (and acknowledged) first and embedded behind",
        (),
        apply=_nullable_embeddings,
    ),
    Migration(
        8,
        "embedding_error: why a row could not be embedded (it is then left out of the backlog); the backlog "
        "index holds exactly the rows still waiting for a vector, so finding and counting them costs the "
        "backlog's size, not the store's",
        (
            "ALTER TABLE events ADD COLUMN embedding_error TEXT",
            "CREATE INDEX events_backlog ON events (id) WHERE embedding_model IS NULL AND embedding_error IS NULL",
        ),
    ),
    Migration(
        9,
        "the time index also carries received_at, so the filter columns leave out reports dated ahead of "
        "their receipt and retention expires them by it (issue 14), still without reading the table",
        (
            "CREATE INDEX events_occurred_at_received ON events (occurred_at, event, service, from_handle, received_at)",
            "DROP INDEX events_occurred_at_columns",
        ),
    ),
    Migration(
        10,
        "message_id unique per sender (from_handle, message_id), not across senders: the mesh scopes a "
        "message id by its sender, so another agent's report of the same id is another report, not a "
        "redelivery to drop",
        (),
        apply=_message_ids_per_sender,
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
                if before > 0:  # an existing store: say what the wait is for (a step may build an index)
                    log.info("store %s: migrating to schema version %d (%s) ...", path, step.version,
                             step.description)
                started = time.monotonic()
                for statement in step.statements:
                    conn.execute(statement)
                if step.apply is not None:
                    step.apply(conn)
                conn.execute(f"PRAGMA user_version = {int(step.version)}")
                conn.execute("COMMIT")
                if before > 0:
                    log.info("store %s: at schema version %d after %.1f s", path, step.version,
                             time.monotonic() - started)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if step.apply is not None:  # later steps parse the edited schema afresh
                conn.close()
                conn = sqlite3.connect(path, isolation_level=None)
        return before, user_version(conn)
    finally:
        conn.close()
