"""How a public agent method reports failure: errors named after the operation, nats-py errors wrapped."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import nats.errors

from .errors import MeshError, MeshTimeout

__all__ = ["JS_TIMEOUT", "operation"]

#: nats-py's default JetStream API timeout, seconds.
JS_TIMEOUT = 5.0


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
