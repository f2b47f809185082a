"""Which storage errors are transient: the store is busy, locked, full or failing I/O, and may come back.

A report whose transaction fails for one of these reasons is not bad: it stays unacknowledged and is
tried again until storage is back (docs/reliability.md, "Storage outages"). Any other error of a
transaction is the report's own (a constraint, a value SQLite refuses) and gets the report an error
reply once it has been tried alone (:mod:`memory_agent.ingest`).

The classification reads SQLite's primary result code (``sqlite3.Error.sqlite_errorcode & 0xff``,
https://sqlite.org/rescode.html) where Python exposes it, and the errno of an ``OSError``.
"""

from __future__ import annotations

import errno
import sqlite3

__all__ = ["TRANSIENT_SQLITE_CODES", "transient_cause"]

#: SQLite primary result codes that say "storage is unavailable right now", with the cause logged.
TRANSIENT_SQLITE_CODES: dict[int, str] = {
    5: "database is busy (SQLITE_BUSY: another process holds the write lock)",
    6: "database table is locked (SQLITE_LOCKED)",
    7: "out of memory (SQLITE_NOMEM)",
    10: "disk I/O error (SQLITE_IOERR)",
    13: "disk is full (SQLITE_FULL)",
    14: "database file cannot be opened (SQLITE_CANTOPEN)",
    15: "database lock protocol error (SQLITE_PROTOCOL)",
}
_TRANSIENT_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "disk is full (ENOSPC)",
    errno.EDQUOT: "disk quota exceeded (EDQUOT)",
    errno.EFBIG: "file size limit reached (EFBIG)",
    errno.EIO: "disk I/O error (EIO)",
    errno.EAGAIN: "resource temporarily unavailable (EAGAIN)",
}
# Older SQLite builds and wrappers that lose the code still say it in the message.
_TRANSIENT_WORDS = (
    ("database is locked", 5),
    ("database is busy", 5),
    ("database or disk is full", 13),
    ("disk i/o error", 10),
    ("unable to open database file", 14),
)


def transient_cause(exc: BaseException) -> str | None:
    """What made storage unavailable (a short phrase for the log and the status), or ``None`` when
    ``exc`` is not a transient storage error. Looks through ``__cause__``/``__context__`` chains."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlite3.Error):
            code = getattr(current, "sqlite_errorcode", None)
            if isinstance(code, int) and (code & 0xFF) in TRANSIENT_SQLITE_CODES:
                return TRANSIENT_SQLITE_CODES[code & 0xFF]
            text = str(current).lower()
            for words, primary in _TRANSIENT_WORDS:
                if words in text:
                    return TRANSIENT_SQLITE_CODES[primary]
        elif isinstance(current, OSError) and current.errno in _TRANSIENT_ERRNOS:
            return _TRANSIENT_ERRNOS[current.errno]
        current = current.__cause__ or current.__context__
    return None
