"""How a public agent method reports failure: errors named after the operation, nats-py errors wrapped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import nats.errors
import nats.js.errors

from .errors import MeshError, MeshTimeout

__all__ = ["JS_TIMEOUT", "operation", "patient"]

log = logging.getLogger("mesh.agent")

T = TypeVar("T")

#: nats-py's default JetStream API timeout, seconds.
JS_TIMEOUT = 5.0
#: Seconds start() and register() keep retrying a JetStream that does not answer yet (a server still
#: starting, a cluster electing a new stream leader after losing a node).
JETSTREAM_PATIENCE = 30.0


async def patient(op: Callable[[], Awaitable[T]], handle: str, what: str, *,
                  patience: float = JETSTREAM_PATIENCE) -> T:
    """Run ``op``, retrying for up to ``patience`` seconds while JetStream does not answer (a timeout, no
    responders, "JetStream temporarily unavailable"); other errors are raised at once, and so is the last
    one when the time is up."""
    deadline = time.monotonic() + patience
    delay = 0.25
    while True:
        try:
            return await op()
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError,
                MeshTimeout) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.info("mesh agent %s: %s did not answer (%s); trying again in %.1fs", handle, what,
                     type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 4.0)


@contextlib.contextmanager
def operation(request_type: str, what: str) -> Iterator[None]:
    """Set ``request_type`` (tailbus's name for the operation: ``"open"``, ``"post_room"`` ...) on the
    MeshErrors raised inside, and turn nats-py errors into the mesh's own: a timeout into MeshTimeout,
    anything else into MeshError, the original kept as ``__cause__``. ``what`` says what was tried."""
    try:
        yield
    except MeshError as exc:
        if not exc.request_type:
            exc.request_type = request_type
        raise
    except nats.errors.TimeoutError as exc:
        err: MeshError = MeshTimeout(f"{what}: NATS did not answer within {JS_TIMEOUT}s", timeout=JS_TIMEOUT)
        err.request_type = request_type
        raise err from exc
    except nats.errors.Error as exc:
        err = MeshError(f"{what}: {type(exc).__name__}: {exc}")
        err.request_type = request_type
        raise err from exc
