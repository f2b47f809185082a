"""What an agent stands on in NATS, made at start and register, and checked after every heartbeat.

The shared streams and buckets (the inbox lanes, the registry, the session records) and the agent's own
durable consumers. An agent whose consumer was deleted, whose stream was deleted and made again, or whose
nats-server restarted on an empty store would otherwise stay registered and "online" while nothing reaches
it. :meth:`Foundations.watch` looks (one consumer-info request per consumer), and when something is gone
says what it found, re-creates what it can (shared objects need the server's permission to create them:
in the example only the trusted creator has it; the others wait for it) and re-creates its consumers.
Work-queue streams keep what was sent while a consumer was missing, and a re-created consumer delivers it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from .connection import Denials
from .constants import PRIORITY_STREAM, REGISTRY_BUCKET, SESSIONS_BUCKET, STREAM_NAME
from .errors import MeshError
from .handles import durable_name, inbox_filter, priority_durable_name, priority_filter
from .jetstream import ConsumerSpec, ensure_bucket, ensure_consumer, ensure_inbox_streams
from .quotas import Quotas

__all__ = ["Foundations"]

log = logging.getLogger("mesh.agent")


class Foundations:
    """The JetStream objects of the agent ``handle``: see the module docstring."""

    def __init__(self, handle: str, *, js: JetStreamContext, denials: Denials, quotas: Quotas, replicas: int,
                 max_in_flight: int, max_deliver: int, ack_wait: float) -> None:
        self._handle = handle
        self._js = js
        self._denials = denials
        self._quotas = quotas
        self._replicas = replicas
        self._limits = {"max_in_flight": max_in_flight, "max_deliver": max_deliver, "ack_wait": ack_wait}
        self._consumers: dict[str, ConsumerSpec] = {}
        self._created: dict[str, float] = {}
        #: Extra shared objects to re-create before the consumers (rooms: its stream and bucket).
        self.extra: Callable[[], Awaitable[None]] | None = None

    async def shared(self) -> tuple[KeyValue, KeyValue]:
        """The inbox streams, and the registry and session buckets (made when missing): (registry, sessions)."""
        js, quotas, replicas, denials = self._js, self._quotas, self._replicas, self._denials
        await ensure_inbox_streams(js, quotas, replicas=replicas, denials=denials)
        registry = await ensure_bucket(js, REGISTRY_BUCKET, quotas, replicas=replicas, denials=denials)
        sessions = await ensure_bucket(js, SESSIONS_BUCKET, quotas, replicas=replicas, denials=denials)
        return registry, sessions

    def inbox_specs(self, deliver: str) -> list[ConsumerSpec]:
        """The handle's two inbox consumers, delivering to ``deliver``."""
        h = self._handle
        return [ConsumerSpec(STREAM_NAME, durable_name(h), inbox_filter(h), deliver, h, f"mesh inbox of {h}"),
                ConsumerSpec(PRIORITY_STREAM, priority_durable_name(h), priority_filter(h), deliver, h,
                             f"mesh priority inbox of {h}")]

    async def consumer(self, spec: ConsumerSpec) -> str:
        """Create, update or take over one consumer (see ensure_consumer) and watch it from now on."""
        result = await ensure_consumer(self._js, spec, **self._limits)  # type: ignore[arg-type]
        if result == "replaced":
            log.info("mesh agent %s: took over consumer %s of %s from the handle's previous owner (its deliveries "
                     "and acknowledgements are void; what it had not acknowledged comes here)", self._handle,
                     spec.name, spec.stream)
        self._consumers[spec.name] = spec
        await self._note_created(spec.stream)
        return result

    def forget(self) -> None:
        """Stop watching (the agent is closing)."""
        self._consumers.clear()

    async def restore(self) -> None:
        """Re-create everything (after the server lost its store): shared objects, then the consumers."""
        await self.shared()
        if self.extra is not None:
            await self.extra()
        for spec in list(self._consumers.values()):
            await ensure_consumer(self._js, spec, **self._limits)  # type: ignore[arg-type]

    async def watch(self) -> None:
        """Check that every consumer still exists; when one is gone, log what happened (its stream missing,
        made again, or only the consumer deleted) and re-create. Raises nats errors when the server cannot
        answer now (the caller tries again at the next heartbeat)."""
        missing = []
        for spec in list(self._consumers.values()):
            try:
                await self._js.consumer_info(spec.stream, spec.name)
            except nats.js.errors.NotFoundError:
                missing.append(spec)
        if not missing:
            return
        streams = sorted({spec.stream for spec in missing})
        found = [await self._describe(stream) for stream in streams]
        log.warning("mesh agent %s: consumer%s %s gone (%s); re-creating", self._handle,
                    "s" if len(missing) > 1 else "", ", ".join(spec.name for spec in missing), "; ".join(found))
        try:
            await self.shared()
            if self.extra is not None:
                await self.extra()
        except (MeshError, nats.errors.Error) as exc:
            log.warning("mesh agent %s: could not re-create the mesh's streams and buckets (%s: %s); waiting for "
                        "an agent that may", self._handle, type(exc).__name__, exc)
            return
        for spec in missing:
            await ensure_consumer(self._js, spec, **self._limits)  # type: ignore[arg-type]
            await self._note_created(spec.stream)
        log.warning("mesh agent %s: re-created consumer%s %s", self._handle, "s" if len(missing) > 1 else "",
                    ", ".join(spec.name for spec in missing))

    async def _note_created(self, stream: str) -> None:
        try:
            info = await self._js.stream_info(stream)
        except (nats.js.errors.NotFoundError, nats.errors.Error):
            return
        if info.created is not None:
            self._created.setdefault(stream, info.created.timestamp())

    async def _describe(self, stream: str) -> str:
        """What became of ``stream``: gone, made again (its messages with it), or there as before."""
        try:
            info = await self._js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return f"stream {stream} is gone too"
        created = info.created.timestamp() if info.created is not None else None
        before = self._created.get(stream)
        if created is not None and before is not None and created != before:
            self._created[stream] = created
            return f"stream {stream} was deleted and made again (what it held is gone)"
        return f"stream {stream} is there, only the consumer was deleted"
