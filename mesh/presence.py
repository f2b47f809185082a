"""An agent's presence on the mesh: its claim on the handle, its heartbeats, and letting go on close.

One Presence per agent. The registry entry's ``owner`` is this process's (a random id), or, with a
claim file (:mod:`mesh.claim`), one derived from a token that survives restarts, so an agent that
restarts after a crash re-claims its handle at once instead of waiting for the old heartbeat to expire.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import replace

import nats.errors

from .claim import ClaimFile, owner_of
from .connection import Denials
from .constants import REGISTRY_BUCKET
from .errors import MeshError
from .registry import Record, Registry
from .types import Manifest

__all__ = ["Presence"]

log = logging.getLogger("mesh.agent")


class Presence:
    """Claims ``handle`` in ``registry`` and keeps it alive with a heartbeat every ``interval`` seconds."""

    def __init__(self, handle: str, *, registry: Registry, denials: Denials, interval: float,
                 claim_file: ClaimFile | None) -> None:
        self._handle = handle
        self._registry = registry
        self._denials = denials
        self._interval = interval
        self._claim_file = claim_file
        self._owner = uuid.uuid4().hex
        self._restartable = False
        self.record: Record | None = None
        self._revision = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def owner(self) -> str:
        return self._owner

    async def claim(self, manifest: Manifest | None, *, ephemeral: bool) -> Record:
        """Claim the handle (or refresh our claim); raises HandleTaken, PermissionDenied."""
        if not ephemeral and self._claim_file is not None and not self._restartable:
            token = await asyncio.to_thread(self._claim_file.acquire)
            if token is not None:
                self._owner, self._restartable = owner_of(token), True
        now = time.time()
        record = Record(handle=self._handle, owner=self._owner, manifest=manifest, registered_at=now,
                        heartbeat_at=now, ttl=3 * self._interval, online=True, ephemeral=ephemeral)
        self._revision = await self._denials.guard(self._registry.claim(record), "publish",
                                                   [f"$KV.{REGISTRY_BUCKET}.{self._handle}"])
        self.record = record
        return record

    def start_heartbeat(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._heartbeat_loop(), name=f"mesh-heartbeat-{self._handle}")

    async def stop_heartbeat(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def withdraw(self) -> None:
        """Give the claim up after a failed registration (the entry is removed if still ours)."""
        self.record = None
        await self._registry.remove(self._handle, self._owner)

    async def release(self, *, remove: bool) -> None:
        """Mark the handle offline (or remove the entry when ``remove``), then release the claim file.

        Raises what the registry raises (callers log it; the handle then expires with its heartbeat).
        """
        record, self.record = self.record, None
        try:
            if record is not None:
                if remove:
                    await self._registry.remove(self._handle, self._owner)
                else:
                    offline = replace(record, heartbeat_at=time.time(), online=False)
                    await self._registry.heartbeat(offline, self._revision)
        finally:
            if self._claim_file is not None:
                await asyncio.to_thread(self._claim_file.release)
                self._restartable = False

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            record = self.record
            if record is None:
                return
            try:
                fresh = replace(record, heartbeat_at=time.time())
                revision = await self._registry.heartbeat(fresh, self._revision)
            except asyncio.CancelledError:
                raise
            except (nats.errors.Error, MeshError, TimeoutError, OSError) as exc:
                log.debug("mesh agent %s: heartbeat failed (%s); retrying", self._handle, type(exc).__name__)
                continue
            if revision is None:
                log.error("mesh agent %s: handle was claimed by another agent; heartbeats stopped", self._handle)
                return
            self.record, self._revision = fresh, revision
