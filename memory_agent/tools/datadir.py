"""The data directory's lock: one daemon (or one ``reindex``/``import``) per directory at a time."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import IO

from memory_agent.errors import DataDirLocked, DataDirUnusable

__all__ = ["LOCK_FILE", "lock_data_dir"]

#: The lock file inside the data directory; it holds the pid of the process that has the lock.
LOCK_FILE = "daemon.lock"


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the exclusive lock ``<data_dir>/daemon.lock`` (created with the directory if missing); it is
    released when the returned file closes (or the process exits).

    Raises ``DataDirLocked`` naming the pid that holds it, ``DataDirUnusable`` (a ``ConfigError``) when
    the directory cannot be created or written.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        handle = open(data_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held for the owner's lifetime
        if not os.access(data_dir, os.W_OK):  # the lock file may exist already in a read-only directory
            handle.close()
            raise PermissionError(errno.EACCES, "Permission denied")
    except OSError as exc:
        raise DataDirUnusable(str(data_dir), exc.strerror or type(exc).__name__) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DataDirLocked(str(data_dir), holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
