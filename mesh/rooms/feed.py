"""Room events on JetStream: each member's copy is published by the sender, and read back by a replay.

A room event goes to every recipient as its own copy on ``mesh.room.<member>.<room_id>.<sender>``
(``Nats-Msg-Id = <event_id>.<member>``, so a retried publish is stored once). Members receive their
copies through their durable consumer ``rooms_<handle>``; ``replay`` reads this agent's copies of one
room through a short-lived pull consumer ``replay_<handle>``. Neither needs any permission on another
member's copies, which is what lets a server keep non-members out (see examples/nats-server.conf).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ..connection import Denials
from ..constants import ROOMS_STREAM
from ..errors import EnvelopeError, PermissionDenied
from ..handles import parse_room_subject, replay_consumer_name, room_replay_filter, room_subject
from ..sender import publish
from ..types import RoomEvent
from .wire import decode_room_event, encode_room_event

__all__ = ["RoomFeed"]

log = logging.getLogger("mesh.rooms")

#: Copies fetched per pull request during a replay.
_FETCH_BATCH = 256
#: Seconds a pull request waits for copies the consumer said are there.
_FETCH_TIMEOUT = 5.0
#: Seconds after which the server removes a replay consumer left behind (say, by a crash).
_REPLAY_INACTIVE = 60.0


class RoomFeed:
    """Publishes room events as ``handle`` and replays ``handle``'s copies."""

    def __init__(self, handle: str, *, js: JetStreamContext, denials: Denials) -> None:
        self._handle = handle
        self._js = js
        self._denials = denials
        self._replaying = asyncio.Lock()  # one replay consumer per handle: replays of one agent take turns

    async def publish(self, event: RoomEvent, recipients: Iterable[str]) -> None:
        """Publish one copy of ``event`` per recipient, concurrently; waits for every one of them.

        Raises the first failure (PermissionDenied first) after all were tried: MeshTimeout, MeshError.
        """
        data = encode_room_event(event)
        members = list(dict.fromkeys(recipients))
        results = await asyncio.gather(*(
            publish(self._js, self._denials, handle=self._handle,
                    subject=room_subject(member, event.room_id, event.sender_handle), data=data,
                    msg_id=f"{event.event_id}.{member}", what=f"room event {event.event_id} for {member!r}")
            for member in members), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            log.warning("mesh agent %s: room event %s (room %s, seq %d) reached %d of %d members", self._handle,
                        event.event_id, event.room_id, event.room_seq, len(members) - len(errors), len(members))
            denied = [e for e in errors if isinstance(e, PermissionDenied)]
            raise (denied or errors)[0]

    async def replay(self, room_id: str) -> list[RoomEvent]:
        """This agent's copies of ``room_id``'s events, in stream order (copies that fail the subject
        check are skipped with a warning). Raises PermissionDenied, MeshTimeout, MeshError."""
        name = replay_consumer_name(self._handle)
        filter_subject = room_replay_filter(self._handle, room_id)
        api = f"$JS.API.CONSUMER.%s.{ROOMS_STREAM}.{name}"
        subjects = [api % "DELETE", f"{api % 'CREATE'}.{filter_subject}", api % "MSG.NEXT"]
        async with self._replaying:
            return await self._denials.guard(self._read(name, filter_subject, room_id), "publish", subjects)

    async def _read(self, name: str, filter_subject: str, room_id: str) -> list[RoomEvent]:
        js = self._js
        with contextlib.suppress(nats.js.errors.NotFoundError):  # a consumer left by a crash has moved on
            await js.delete_consumer(ROOMS_STREAM, name)
        info = await js.add_consumer(ROOMS_STREAM, ConsumerConfig(
            name=name, description=f"replay of room {room_id} for {self._handle}", filter_subject=filter_subject,
            deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=_REPLAY_INACTIVE,
            mem_storage=True,
        ))
        total = info.num_pending or 0
        raw: list[tuple[str, bytes]] = []
        try:
            if total:
                sub = await js.pull_subscribe_bind(name, stream=ROOMS_STREAM)
                try:
                    while len(raw) < total:
                        try:
                            batch = await sub.fetch(min(_FETCH_BATCH, total - len(raw)), timeout=_FETCH_TIMEOUT)
                        except nats.errors.TimeoutError:
                            break  # copies expired meanwhile (max age): return what is there
                        raw.extend((m.subject, m.data) for m in batch)
                finally:
                    await sub.unsubscribe()
        finally:
            with contextlib.suppress(nats.js.errors.NotFoundError, nats.errors.TimeoutError):
                await js.delete_consumer(ROOMS_STREAM, name)
        events: list[RoomEvent] = []
        for subject, data in raw:
            try:
                event = decode_room_event(data)
            except EnvelopeError as exc:
                log.warning("mesh agent %s: skipped an undecodable copy in room %s (%d bytes): %s", self._handle,
                            room_id, len(data), exc)
                continue
            if parse_room_subject(subject) != (self._handle, event.room_id, event.sender_handle) \
                    or event.room_id != room_id:
                log.warning("mesh agent %s: skipped room event %s: sent on %s but it says room %s from %s",
                            self._handle, event.event_id, subject, event.room_id, event.sender_handle)
                continue
            events.append(event)
        if len(raw) < total:
            log.info("mesh agent %s: replay of room %s read %d of %d copies", self._handle, room_id, len(raw), total)
        return events

