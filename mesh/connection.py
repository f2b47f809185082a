"""Opening an agent's NATS connection, and turning the server's refusals into errors at once.

NATS reports a refused login (``Authorization Violation``), a failed TLS handshake and a permission
violation asynchronously, to the connection's error callback; nats-py would go on retrying a login
that cannot succeed, and a denied publish would only show up as a timeout. Here:

* :func:`connect` raises :class:`~mesh.errors.AuthenticationError` as soon as the server refuses the
  credentials or the TLS handshake fails during the first connect (other failures are retried
  as configured, since a server may still be starting);
* :class:`Denials` lets an operation wait on "the server denied this subject" next to its own
  result, so a denied publish or subscribe raises :class:`~mesh.errors.PermissionDenied` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, TypeVar

import nats.errors
from nats.aio.client import Client as NATS

from .constants import DEFAULT_SERVERS, NATS_URL_ENV
from .errors import AuthenticationError, MeshError, PermissionDenied

__all__ = ["Denials", "connect", "servers_from_env"]

log = logging.getLogger("mesh.agent")

T = TypeVar("T")
Operation = Literal["publish", "subscribe"]
ErrorCallback = Callable[[Exception], Awaitable[None]]

# nats-server: 'Permissions Violation for Publish to "subj"' or '... for Subscription to "subj" [using queue "q"]'
_VIOLATION = re.compile(r'Permissions Violation for (Publish|Subscription) to "([^"]+)"', re.IGNORECASE)
_AUTH_FAILURES = ("authorization violation", "authentication expired", "authentication revoked",
                  "account authentication expired", "user authentication")


def _auth_failure(exc: BaseException) -> str | None:
    """The reason if ``exc`` means "these credentials or TLS settings can never work", else None."""
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({getattr(exc, 'verify_message', None) or exc.reason or exc})"
    if isinstance(exc, nats.errors.AuthorizationError):
        return "authorization violation"
    text = str(exc).lower()
    for marker in _AUTH_FAILURES:
        if marker in text:
            return str(exc).removeprefix("nats: ").strip("'")
    return None


class _Watch:
    """One operation waiting on its subjects; ``denied`` is set (and its task cancelled) on a violation."""

    __slots__ = ("denied", "operation", "patterns", "task")

    def __init__(self, task: asyncio.Task[Any], operation: Operation, patterns: tuple[str, ...]) -> None:
        self.task = task
        self.operation = operation
        self.patterns = patterns
        self.denied: PermissionDenied | None = None


class Denials:
    """Permission violations reported by the server, matched to the operations waiting on them.

    An operation runs in its own task under :meth:`guard`; when the server reports a violation on one
    of its subjects, the task is cancelled and the cancellation turned into PermissionDenied (the
    pattern of ``asyncio.timeout``), so the common case costs no extra task.
    """

    def __init__(self, handle: str) -> None:
        self._handle = handle
        self._watches: set[_Watch] = set()

    def feed(self, exc: BaseException) -> bool:
        """Handle one error from the connection; True if it was a permission violation."""
        m = _VIOLATION.search(str(exc))
        if m is None:
            return False
        operation: Operation = "publish" if m.group(1).lower() == "publish" else "subscribe"
        subject = m.group(2).lower()  # nats-py lower-cases the whole error line, so compare in lower case
        log.warning("mesh agent %s: the NATS server denied %s on %s", self._handle, operation, subject)
        for watch in list(self._watches):
            if watch.operation != operation or watch.denied is not None:
                continue
            for pattern in watch.patterns:
                if _matches(pattern.lower(), subject):
                    watch.denied = PermissionDenied(self._handle, operation, pattern)
                    watch.task.cancel()
                    break
        return True

    async def guard(self, op: Awaitable[T], operation: Operation, subjects: Iterable[str]) -> T:
        """Await ``op``; raise PermissionDenied (naming the subject as given here) instead if the server
        denies ``operation`` on one of ``subjects`` (exact, or a prefix when one ends in ``.>``)."""
        task = asyncio.current_task()
        if task is None:
            return await op
        watch = _Watch(task, operation, tuple(subjects))
        self._watches.add(watch)
        try:
            result = await op
        except BaseException as exc:
            # Cancelled by feed(), or the operation turned that cancellation into an error of its own.
            if watch.denied is not None and task.uncancel() == 0:
                raise watch.denied from (None if isinstance(exc, asyncio.CancelledError) else exc)
            raise
        finally:
            self._watches.discard(watch)
        if watch.denied is not None:  # the operation swallowed the cancellation
            task.uncancel()
            raise watch.denied
        return result


def _matches(pattern: str, subject: str) -> bool:
    if pattern.endswith(".>"):
        return subject.startswith(pattern[:-1])
    return pattern == subject


async def connect(options: dict[str, Any], *, on_error: ErrorCallback) -> NATS:
    """``nats.connect(**options)``, but an authentication or TLS failure raises at once.

    ``options["error_cb"]``, if given, is still called for every error, after ``on_error``.
    Raises AuthenticationError (credentials refused, TLS handshake failed) or MeshError (cannot
    connect within the configured attempts).
    """
    servers = options.get("servers") or []
    servers = [servers] if isinstance(servers, str) else list(servers)
    user_cb: ErrorCallback | None = options.pop("error_cb", None)
    refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    nc = NATS()

    async def error_cb(exc: Exception) -> None:
        if not nc.is_connected and not refused.done():
            reason = _auth_failure(exc)
            if reason is not None:
                refused.set_result(reason)
        await on_error(exc)
        if user_cb is not None:
            await user_cb(exc)

    attempt: asyncio.Future[None] = asyncio.ensure_future(nc.connect(**options, error_cb=error_cb))
    try:
        both: list[asyncio.Future[Any]] = [attempt, refused]
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        attempt.cancel()
        await _abandon(nc, attempt)
        raise
    if attempt.done():
        exc = attempt.exception()
        if exc is None:
            return nc
        reason = _auth_failure(exc)
        if reason is not None:
            raise AuthenticationError(servers, reason) from exc
        raise MeshError(f"cannot connect to NATS at {servers}: {type(exc).__name__}: {exc}") from exc
    attempt.cancel()
    await _abandon(nc, attempt)
    raise AuthenticationError(servers, refused.result())


async def _abandon(nc: NATS, attempt: asyncio.Future[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await attempt
    with contextlib.suppress(Exception):
        await nc.close()


def servers_from_env() -> list[str]:
    """``$NATS_URL`` split at commas (as NATS's own tools read it), else ``["nats://127.0.0.1:4222"]``."""
    urls = [u.strip() for u in os.environ.get(NATS_URL_ENV, "").split(",") if u.strip()]
    return urls or [DEFAULT_SERVERS]
