"""Forget in a cluster: the request is an entry on the events stream, applied by every replica at the
same point of the log (so every replica deletes the same events); the admin's reply counts what this
replica deleted once it applied the entry."""

from __future__ import annotations

import uuid

from memory_agent.cluster.applier import Applier
from memory_agent.cluster.stream import StreamAcceptor
from memory_agent.errors import StorageUnavailable
from memory_agent.retention import ForgetRequest

__all__ = ["StreamForgetter"]


class StreamForgetter:
    """:class:`memory_agent.protocols.Forgetter` of a replica: publish, then wait (at most ``wait`` seconds)
    until this replica applied it. Raises ``StorageUnavailable`` when the stream cannot take it or the
    replica did not apply it in time (the forget message is redelivered; its repeated publish is
    de-duplicated by the message id)."""

    def __init__(self, acceptor: StreamAcceptor, applier: Applier, *, wait: float = 30.0) -> None:
        self._acceptor = acceptor
        self._applier = applier
        self._wait = wait

    async def forget(self, request: ForgetRequest, *, by: str = "", request_id: str = "") -> int:
        seq = await self._acceptor.publish_forget(request, by=by, request_id=request_id or uuid.uuid4().hex)
        if not await self._applier.wait_applied(seq, self._wait):
            raise StorageUnavailable(f"replica at {self._applier.applied_seq}", f"forget {seq} not applied yet",
                                     since=0.0)
        count = self._applier.forgotten(seq)
        return count or 0
