"""A claim token that lets an agent restarting after a crash take its handle back at once.

The registry lets an owner re-claim a handle it holds (``Registry.claim``); by default an owner is one
process, so a successor has to wait until the dead one's heartbeat expires (3 intervals). With a
claim file, the owner is derived from a token kept in ``<state_dir>/claims/<servers>/<handle>.lock``,
so an agent that restarts on the same host is the same owner and re-claims at once. The file is held
with an exclusive ``flock`` while the agent runs: a second live process of the same agent cannot take
the lock, gets a one-off owner, and so still gets ``HandleTaken``; the kernel drops the lock when a
process dies, however it dies. Blocking file work: call it off the event loop.

The registry stores only a hash of the token. Under NATS permissions that tie each user to its handle
(examples/nats-server.conf), only the handle's own credentials can write its entry at all; the token
decides between processes that hold those credentials.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from .constants import STATE_DIR_ENV

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: no claim files, handles are taken back on expiry
    fcntl = None  # type: ignore[assignment]

__all__ = ["ClaimFile", "claim_path", "default_state_dir", "owner_of"]

log = logging.getLogger("mesh.agent")

_TOKEN = re.compile(r"[0-9a-f]{32}")


def default_state_dir() -> Path:
    """``$MESH_STATE_DIR``, else ``$XDG_STATE_HOME/mesh``, else ``~/.local/state/mesh``."""
    explicit = os.environ.get(STATE_DIR_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "mesh"


def claim_path(state_dir: Path, servers: Sequence[str], handle: str) -> Path:
    """``<state_dir>/claims/<12 hex of the server URLs>/<handle>.lock``: one file per mesh and handle."""
    mesh = hashlib.sha256("\n".join(sorted(servers)).encode()).hexdigest()[:12]
    return state_dir / "claims" / mesh / f"{handle}.lock"


def owner_of(token: str) -> str:
    """The registry owner for a claim token: 32 hex of its SHA-256 (the token itself is never stored)."""
    return hashlib.sha256(b"mesh-claim:" + token.encode()).hexdigest()[:32]


class ClaimFile:
    """The claim file at ``path``: :meth:`acquire` locks it and returns its token; :meth:`release` unlocks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> str | None:
        """Lock the file (made on first use, mode 0600) and return its token; None if another live process
        holds it or the file cannot be used (a read-only home, no ``fcntl``): then the handle is only
        taken back once the old owner's heartbeat expires, as without a claim file."""
        if self._fd is not None:
            return self._read(self._fd)
        if fcntl is None:
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.debug("mesh: claim file %s unusable (%s); a restart waits for the old heartbeat to expire",
                      self.path, type(exc).__name__)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # held by a live process: this one is a second instance, not a restart
            return None
        try:
            token = self._read(fd)
            if token is None:
                token = secrets.token_hex(16)
                os.ftruncate(fd, 0)
                os.pwrite(fd, token.encode() + b"\n", 0)
                os.fsync(fd)
        except OSError as exc:
            log.debug("mesh: claim file %s unreadable (%s)", self.path, type(exc).__name__)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            return None
        self._fd = fd
        return token

    @staticmethod
    def _read(fd: int) -> str | None:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        return text if _TOKEN.fullmatch(text) else None

    def release(self) -> None:
        """Unlock and close; idempotent (the token stays in the file for the next start)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
