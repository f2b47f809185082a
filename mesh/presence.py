"""An agent's presence on the mesh: its claim on the handle, its heartbeats, noticing that it lost the claim
or that its foundations were removed, and letting go on close.

One Presence per agent. The registry entry's ``owner`` is this process's (a random id), or, with a claim
file (:mod:`mesh.claim`), one derived from a token that survives restarts, so an agent that restarts after
a crash re-claims its handle at once instead of waiting for the old heartbeat to expire.

**One owner.** Another agent can claim the handle once this one's heartbeat is older than its ``ttl`` (3
intervals): this one was frozen (SIGSTOP, a VM pause), cut off from NATS, or too busy. So before this agent
acts as its handle (takes a delivery, acknowledges, publishes) it makes sure its claim was confirmed less
than 2 intervals ago, and confirms it (one heartbeat) when not: a process that resumes after a freeze
finds out before it does anything. A heartbeat that finds another owner means the claim is lost:
:meth:`confirm` answers False from then on and ``on_lost`` is called (the agent stops consuming and
acknowledges nothing more). The new owner has meanwhile replaced the handle's consumers (see
:func:`mesh.jetstream.ensure_consumer`), so the server no longer delivers to this one, and its acks are void.

**Replica groups** (:mod:`mesh.replicas`). With a ``replica_key`` the claim joins the group that holds the
handle (or founds it): the entry's owner is the group, each member heartbeats its own member entry (re-read
and merged under compare-and-set), and a member that was dropped as expired (it was frozen) joins again at
its next heartbeat: its deliveries come from the same shared consumer, so nothing of it was void. The claim
is lost only when the handle is no longer the group's (every member expired and another agent took it).

**Its foundations.** A heartbeat that finds no entry at all (the entry was deleted, the bucket removed,
or nats-server restarted on an empty store) calls ``restore`` (the agent re-creates what it owns) and
claims the handle again, with a warning that says what it found; after every heartbeat ``watch`` checks
the rest (consumers, streams).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any

import nats.errors
import nats.js.errors

from .claim import ClaimFile, owner_of
from .connection import Denials
from .constants import REGISTRY_BUCKET
from .errors import ClaimLost, HandleTaken, MeshError
from .registry import Beat, Member, Record, Registry
from .replicas import group_hash
from .tasks import cancel_and_wait
from .types import Manifest

__all__ = ["Presence"]

log = logging.getLogger("mesh.agent")

#: A claim confirmed less than this many heartbeat intervals ago is trusted without asking the registry
#: (another agent can take it only after 3 intervals without a heartbeat).
_FRESH_INTERVALS = 2.0

Hook = Callable[[], Awaitable[None]]


class Presence:
    """Claims ``handle`` in ``registry`` and keeps it alive with a heartbeat every ``interval`` seconds.

    ``on_lost(err)``: called once (as its own task) when another agent holds the handle. ``restore()``:
    called when the registry entry is gone, before the handle is claimed again. ``watch()``: called after
    every heartbeat. Exceptions from the hooks are logged, never raised into the heartbeat.
    """

    def __init__(self, handle: str, *, registry: Registry, denials: Denials, interval: float,
                 claim_file: ClaimFile | None, replica_key: str | None = None, replica_id: str = "",
                 on_lost: Callable[[ClaimLost], Coroutine[Any, Any, None]] | None = None,
                 restore: Hook | None = None, watch: Hook | None = None) -> None:
        self._handle = handle
        self._registry = registry
        self._denials = denials
        self._interval = interval
        self._claim_file = claim_file
        self._on_lost = on_lost
        self._restore = restore
        self._watch = watch
        self._owner = uuid.uuid4().hex
        self._replica_key = replica_key
        self._replica_id = replica_id
        self._group = ""  # the hash of the replica key, once computed (the key is then dropped)
        self._restartable = False
        self.record: Record | None = None
        self.lost: ClaimLost | None = None
        self._revision = 0
        self._confirmed_at = 0.0
        self._beating = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._lost_task: asyncio.Task[None] | None = None

    @property
    def owner(self) -> str:
        """This agent's own owner id (a member's, in a replica group)."""
        return self._owner

    @property
    def holder(self) -> str:
        """Who holds the handle as far as delivery is concerned: this agent's owner id, or its replica group's
        (the group's members share one delivery subject)."""
        return self._group or self._owner

    async def claim(self, manifest: Manifest | None, *, ephemeral: bool) -> Record:
        """Claim the handle (or refresh our claim); raises HandleTaken, PermissionDenied, ClaimLost."""
        if self.lost is not None:
            raise self.lost
        if not ephemeral and self._claim_file is not None and not self._restartable:
            token = await asyncio.to_thread(self._claim_file.acquire)
            if token is not None:
                self._owner, self._restartable = owner_of(token), True
        if self._replica_key is not None:
            self._group = await asyncio.to_thread(group_hash, self._handle, self._replica_key)
            self._replica_key = None
        now = time.time()
        record = Record(handle=self._handle, owner=self.holder, manifest=manifest, registered_at=now,
                        heartbeat_at=now, ttl=3 * self._interval, online=True, ephemeral=ephemeral,
                        group=self._group, members=self._members(now))
        self._revision = await self._denials.guard(self._registry.claim(record), "publish",
                                                   [f"$KV.{REGISTRY_BUCKET}.{self._handle}"])
        self.record = record
        self._confirmed_at = time.monotonic()
        return record

    def start_heartbeat(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._heartbeat_loop(), name=f"mesh-heartbeat-{self._handle}")

    async def stop_heartbeat(self) -> None:
        """Stop the heartbeat task and wait for it. Cancelled again until it has ended (a cancellation lost
        in nats-py's ``wait_for`` on Python 3.11, see :mod:`mesh.tasks`); the loop also checks the task it
        belongs to is still the current one."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def confirm(self) -> bool:
        """True while this agent may act as its handle: its claim was confirmed less than 2 intervals ago,
        or a heartbeat made now confirms it. False once the claim is lost. No I/O in the common case."""
        if self.lost is not None:
            return False
        if self.record is None or time.monotonic() - self._confirmed_at < _FRESH_INTERVALS * self._interval:
            return True
        async with self._beating:
            if self.lost is None and time.monotonic() - self._confirmed_at >= _FRESH_INTERVALS * self._interval:
                log.info("mesh agent %s: last heartbeat %.1fs ago; confirming the claim before acting on it",
                         self._handle, time.monotonic() - self._confirmed_at)
                await self._beat()
        return self.lost is None

    def _members(self, now: float) -> tuple[Member, ...]:
        return (Member(self._replica_id, self._owner, now),) if self._group else ()

    async def withdraw(self) -> None:
        """Give the claim up after a failed registration (the entry is removed if still ours; a group member
        leaves the group)."""
        record, self.record = self.record, None
        if self._group:
            if record is not None:
                await self._registry.leave(record, self._replica_id, self._owner)
            return
        await self._registry.remove(self._handle, self._owner)

    async def release(self, *, remove: bool) -> None:
        """Mark the handle offline (or remove the entry when ``remove``), then release the claim file.
        Nothing is written when the claim was lost (the entry is the new owner's).

        Raises what the registry raises (callers log it; the handle then expires with its heartbeat).
        """
        record, self.record = self.record, None
        try:
            if record is not None and self.lost is None:
                if self._group:
                    await self._registry.leave(record, self._replica_id, self._owner)
                elif remove:
                    await self._registry.remove(self._handle, self._owner)
                else:
                    offline = replace(record, heartbeat_at=time.time(), online=False)
                    await self._registry.heartbeat(offline, self._revision)
        finally:
            if self._claim_file is not None:
                await asyncio.to_thread(self._claim_file.release)
                self._restartable = False

    async def _heartbeat_loop(self) -> None:
        while self.record is not None and self.lost is None and self._task is asyncio.current_task():
            await asyncio.sleep(self._interval)
            async with self._beating:
                if self.record is None or self.lost is not None:
                    return
                await self._beat()
            if self.lost is None and self._watch is not None:
                try:
                    await self._watch()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a watchdog that cannot look now looks again next time
                    log.debug("mesh agent %s: checking consumers and streams failed (%s); next heartbeat "
                              "tries again", self._handle, type(exc).__name__)

    async def _beat(self) -> None:
        """One heartbeat: refresh the entry; notice a lost claim or a missing entry."""
        record = self.record
        if record is None:
            return
        fresh = replace(record, heartbeat_at=time.time())
        status: Beat
        try:
            if self._group:
                status, merged, revision = await self._registry.beat_member(fresh, self._members(fresh.heartbeat_at)[0])
                if merged is not None:
                    fresh = merged
            else:
                status, revision = await self._registry.heartbeat(fresh, self._revision)
        except (nats.errors.NoRespondersError, nats.js.errors.NotFoundError, nats.js.errors.BucketNotFoundError):
            status, revision = "missing", 0  # the registry bucket itself is gone
        except asyncio.CancelledError:
            raise
        except (nats.errors.Error, MeshError, TimeoutError, OSError) as exc:
            log.debug("mesh agent %s: heartbeat failed (%s); retrying", self._handle, type(exc).__name__)
            return
        if status == "ok":
            self.record, self._revision = fresh, revision
            self._confirmed_at = time.monotonic()
        elif status == "taken":
            self._lose(f"the registry names another owner; this agent's last confirmed heartbeat was "
                       f"{time.monotonic() - self._confirmed_at:.1f}s ago")
        else:
            await self._reclaim(fresh)

    async def _reclaim(self, record: Record) -> None:
        """The entry is gone: re-create what the agent owns, then claim the handle again."""
        log.warning("mesh agent %s: its registry entry is gone (deleted, or nats-server lost its store); "
                    "re-creating its inbox and registering again", self._handle)
        try:
            if self._restore is not None:
                await self._restore()
            self._revision = await self._registry.claim(replace(record, registered_at=time.time()))
        except HandleTaken:
            self._lose("another agent registered the handle after its entry was gone")
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next heartbeat tries again
            log.warning("mesh agent %s: registering again failed (%s: %s); the next heartbeat tries again",
                        self._handle, type(exc).__name__, exc)
            return
        self.record = record
        self._confirmed_at = time.monotonic()
        log.warning("mesh agent %s: registered again", self._handle)

    def _lose(self, detail: str) -> None:
        if self.lost is not None:
            return
        self.lost = ClaimLost(self._handle, detail)
        log.error("mesh agent %s: %s", self._handle, self.lost)
        if self._on_lost is not None:
            self._lost_task = asyncio.create_task(self._on_lost(self.lost), name=f"mesh-claim-lost-{self._handle}")
