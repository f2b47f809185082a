"""The events stream: its subject, its creation, and accepting into it (:class:`StreamAcceptor`).

With ``[cluster] enabled``, the replicated JetStream stream (``MEMORY_EVENTS`` by default, limits
retention) is the source of truth and every replica's SQLite + FTS5 + FAISS is a view of it
(:mod:`memory_agent.cluster.applier`). A report is acknowledged to its sender once JetStream's publish
acknowledgement says the stream has it: on an R3 stream that means a majority of the servers stored it.
The acknowledged id is the stream sequence, the id the event gets on every replica.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo

from memory_agent.cluster.codec import encode_forget, encode_report
from memory_agent.errors import ConfigError, ReportRefused, StorageUnavailable, internal_error_id
from memory_agent.health import Outage
from memory_agent.retention import ForgetRequest
from memory_agent.types import InsertResult, NewEvent
from mesh.operation import patient

__all__ = ["START_PATIENCE", "StreamAcceptor", "StreamLimits", "create_or_open", "ensure_stream", "stream_subject",
           "while_electing"]

log = logging.getLogger(__name__)

#: Seconds within which JetStream stores a ``Nats-Msg-Id`` once (a sender's retry, a redelivery).
DUPLICATE_WINDOW = 120.0
#: Seconds a publish waits for the stream's acknowledgement.
PUBLISH_TIMEOUT = 5.0
#: Seconds a replica's start-up keeps trying a JetStream request that is not answered: a cluster that lost
#: a node elects new stream and consumer leaders meanwhile (a few seconds each; more on a loaded machine).
START_PATIENCE = 60.0
#: JetStream's error codes (nats-server's errors.json) for a stream creation that can succeed when tried
#: again: JSClusterNoPeersErr (10005: too few servers up to place the replicas) and JSStreamNameExistErr
#: (10058) while the stream is still not found (a creation of that name is still being proposed, such as
#: one that timed out while the cluster had no leader).
_CREATE_AGAIN = frozenset({10005, 10058})

T = TypeVar("T")


def stream_subject(stream: str) -> str:
    """``memory.events.<stream>``: the one subject of the events stream ``stream``."""
    return f"memory.events.{stream}"


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """How the stream is created: ``replicas`` 1..3, ``max_age`` seconds (0 = forever), ``max_bytes``
    (-1 = no limit; when full, publishes are refused, never dropped)."""

    replicas: int = 1
    max_age: float = 0.0
    max_bytes: int = -1


async def while_electing(op: Callable[[], Awaitable[T]], what: str, *, key: str, handle: str = "memory",
                         patience: float = START_PATIENCE) -> T:
    """Run ``op`` (a JetStream request at start-up), trying again for up to ``patience`` seconds while
    JetStream does not answer: a timeout, no responders, "JetStream temporarily unavailable" (the mesh's
    :func:`mesh.operation.patient`). ``what`` says what was tried ("creating the consumer ..."), ``handle``
    names the replica in the retry log lines. Raises ``ConfigError`` (``key``: the config key involved) when
    the time is up or JetStream refuses the request."""
    try:
        return await patient(op, handle, what, patience=patience)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as exc:
        raise ConfigError(f"[cluster]: {what} failed: {type(exc).__name__}: {exc}; is a majority of the NATS "
                          "servers up?", key=key) from None
    except (nats.errors.Error, nats.js.errors.Error) as exc:
        raise ConfigError(f"[cluster]: {what} failed: {type(exc).__name__}: {exc}", key=key) from None


async def create_or_open(js: JetStreamContext, config: StreamConfig, *, what: str, key: str, handle: str = "memory",
                         patience: float = START_PATIENCE) -> StreamInfo:
    """The info of the stream ``config.name``, created from ``config`` unless it exists (an existing one is
    used as it is: an operator changes it with the NATS tools). ``what`` names it in logs and errors
    ("events stream"), ``key`` is the config key that names it. A JetStream that does not answer is tried
    again for ``patience`` seconds (:func:`while_electing`). Raises ``ConfigError`` when it still does not,
    or an existing stream of that name does not take ``config``'s first subject."""
    if not config.name or not config.subjects:
        raise ValueError("create_or_open needs a stream config with a name and a subject")
    name, subject = config.name, config.subjects[0]

    async def read_or_create() -> StreamInfo:
        try:
            return await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            pass
        try:
            await js.add_stream(config)
            log.info("created the %s %s (R%d)", what, name, config.num_replicas)
        except nats.js.errors.BadRequestError as exc:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                return await js.stream_info(name)  # lost a creation race: fine
            if exc.err_code in _CREATE_AGAIN:  # tried again by while_electing, like an unanswered request
                raise nats.js.errors.ServiceUnavailableError(code=exc.code, err_code=exc.err_code,
                                                             description=exc.description) from exc
            raise
        return await js.stream_info(name)

    info = await while_electing(read_or_create, f"reading or creating the {what} {name}", key=key, handle=handle,
                                patience=patience)
    if subject not in (info.config.subjects or []):
        raise ConfigError(f"[cluster]: the stream {name} exists but does not take {subject}: name another "
                          f"stream ({key})", key=key)
    return info


async def ensure_stream(js: JetStreamContext, name: str, limits: StreamLimits, *, handle: str = "memory") -> int:
    """Create the stream unless it exists (see :func:`create_or_open`); returns its last sequence. Raises
    ``ConfigError`` when an existing stream named ``name`` does not take the subject, or JetStream does
    not answer within :data:`START_PATIENCE` seconds."""
    info = await create_or_open(js, StreamConfig(
        name=name, description="@memory events: reports and forgets, applied by every replica",
        subjects=[stream_subject(name)], retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
        discard=DiscardPolicy.NEW, max_age=limits.max_age or None, max_bytes=limits.max_bytes,
        duplicate_window=DUPLICATE_WINDOW, num_replicas=limits.replicas), what="events stream", key="cluster.stream",
        handle=handle)
    replicas = info.config.num_replicas or 1
    if replicas != limits.replicas:
        log.warning("the events stream %s has %d replica(s), not the configured %d (stream_replicas applies "
                    "when the stream is created; change it with `nats stream edit`)", name, replicas, limits.replicas)
    return int(info.state.last_seq)


class StreamAcceptor:
    """The cluster's acceptance step (:class:`memory_agent.protocols.Acceptor`): a report is acknowledged
    once the events stream has it; its id is its stream sequence.

    A ``message_id`` this replica already holds, or that JetStream already stored within its duplicate
    window, is answered with its first id and ``duplicate=True``. The stream unreachable, leaderless or
    full: ``StorageUnavailable`` (the message stays unacknowledged and is tried again); a report the
    server refuses as too large: ``ReportRefused``. ``on_accepted(seq)`` is told each report this replica
    put on the stream (it embeds those first: :mod:`memory_agent.cluster.vectors`).
    """

    def __init__(self, js: JetStreamContext, *, stream: str, outage: Outage, holds: _Holds,
                 timeout: float = PUBLISH_TIMEOUT, on_accepted: Callable[[int], None] | None = None) -> None:
        self._js = js
        self._stream = stream
        self._subject = stream_subject(stream)
        self._outage = outage
        self._holds = holds
        self._timeout = timeout
        self._on_accepted = on_accepted
        self.published = 0
        self.duplicates = 0

    async def accept(self, event: NewEvent) -> InsertResult:
        held = await self._holds.find_message(event.from_handle, event.message_id)
        if held is not None:
            self.duplicates += 1
            return InsertResult(held, duplicate=True)
        body, headers = encode_report(event)
        seq, duplicate = await self._publish(body, headers, what=f"report {event.message_id}")
        if duplicate:
            self.duplicates += 1
        else:
            self.published += 1
        if self._on_accepted is not None:
            self._on_accepted(seq)
        return InsertResult(seq, duplicate=duplicate)

    async def publish_forget(self, request: ForgetRequest, *, by: str, request_id: str) -> int:
        """Put a forget on the stream; returns its sequence (the first one's, for a repeated ``request_id``)."""
        body, headers = encode_forget(request, by=by, request_id=request_id)
        seq, _ = await self._publish(body, headers, what=f"forget {request_id}")
        return seq

    async def _publish(self, body: bytes, headers: dict[str, str], *, what: str) -> tuple[int, bool]:
        started = time.perf_counter()
        try:
            ack = await self._js.publish(self._subject, body, timeout=self._timeout, stream=self._stream,
                                         headers=headers)
        except nats.errors.MaxPayloadError:
            error_id = internal_error_id()
            log.error("%s is %d bytes, over the server's max_payload (error %s)", what, len(body), error_id)
            raise ReportRefused(error_id) from None
        except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            cause = _cause(exc)
            since = self._outage.failed(cause, exc)
            raise StorageUnavailable(f"stream {self._stream}", cause, since=since) from exc
        self._outage.recovered()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s on %s as %d%s in %.1f ms", what, self._stream, ack.seq,
                      " (duplicate)" if ack.duplicate else "", (time.perf_counter() - started) * 1000)
        return int(ack.seq), bool(ack.duplicate)


class _Holds(Protocol):
    """What the acceptor asks this replica's store (:class:`~memory_agent.store.events.EventStore`)."""

    async def find_message(self, from_handle: str, message_id: str) -> int | None: ...


def _cause(exc: BaseException) -> str:
    if isinstance(exc, nats.errors.TimeoutError):
        return "the events stream did not acknowledge in time (no leader, or the servers are unreachable)"
    if isinstance(exc, nats.errors.NoRespondersError):
        return "no JetStream server answers for the events stream"
    if isinstance(exc, nats.js.errors.APIError):
        return f"JetStream refused the publish: {exc.description or exc}"[:200]
    return f"{type(exc).__name__}: {exc}"[:200]
