"""The handle registry: one JetStream KV entry per handle (manifest, owner, heartbeat) and discovery.

Record (msgpack map, key = handle, bucket ``mesh_registry``)::

    {"v": 1, "handle": str, "owner": str (per-agent-instance uuid hex), "manifest": dict | None,
     "registered_at": float, "heartbeat_at": float, "ttl": float, "online": bool, "ephemeral": bool}

A handle held by a replica group (:mod:`mesh.replicas`) has two more fields, and its ``owner`` is the
group's hash (so the delivery subject names the group), its ``heartbeat_at`` the latest member's::

    {..., "group": str (32 hex, the hash of the group's key), "members": [{"id": str, "owner": str,
     "heartbeat_at": float}, ...]}

A handle is *live* while ``online`` and ``now - heartbeat_at <= ttl`` (unix seconds, the owner's
and reader's clocks: keep hosts NTP-synced); a group's member is live while its own ``heartbeat_at`` is.
Claims and heartbeats are compare-and-set on the KV revision, so two agents racing for a free handle
cannot both win; the members of a group re-read and merge the entry on every heartbeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import msgpack
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from .constants import REGISTRY_BUCKET
from .errors import HandleTaken, MeshError
from .jetstream import latest_entries
from .types import HandleInfo, HandleMatch, Manifest

__all__ = ["Beat", "Member", "Record", "Registry", "find_matches", "matches_tags"]

log = logging.getLogger(__name__)

#: What a heartbeat found: the claim held (``"ok"``), another owner's (``"taken"``), no entry (``"missing"``).
Beat = Literal["ok", "taken", "missing"]

#: Compare-and-set attempts of a group member's join, heartbeat or leave before it gives up for now.
_GROUP_CAS_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class Member:
    """One replica of a group: its ``replica_id``, its owner (as for a handle held by one agent: a random id
    or one derived from its claim token) and its last heartbeat (seconds since the epoch)."""

    replica_id: str
    owner: str
    heartbeat_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.replica_id, "owner": self.owner, "heartbeat_at": self.heartbeat_at}

    @classmethod
    def from_dict(cls, obj: Any) -> Member:
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise TypeError("registry member is not a map with an id")
        return cls(replica_id=obj["id"], owner=str(obj.get("owner", "")),
                   heartbeat_at=float(obj.get("heartbeat_at", 0.0)))


@dataclass(frozen=True, slots=True)
class Record:
    """One registry entry (see the module docstring for the wire form)."""

    handle: str
    owner: str
    manifest: Manifest | None
    registered_at: float
    heartbeat_at: float
    ttl: float
    online: bool = True
    ephemeral: bool = False
    #: the hash of the replica group's key (:func:`mesh.replicas.group_hash`); "" for a handle held by one agent
    group: str = ""
    #: the group's members (each with its own heartbeat); empty for a handle held by one agent
    members: tuple[Member, ...] = ()

    def is_live(self, now: float | None = None) -> bool:
        """True while the owner heartbeats (``online`` and last heartbeat younger than ``ttl`` s); for a
        replica group, while any member does."""
        now = time.time() if now is None else now
        if self.group:
            return self.online and bool(self.live_members(now))
        return self.online and (now - self.heartbeat_at) <= self.ttl

    def live_members(self, now: float | None = None) -> tuple[Member, ...]:
        """The group's members whose heartbeat is younger than ``ttl`` s (empty for a handle held by one agent)."""
        now = time.time() if now is None else now
        return tuple(m for m in self.members if (now - m.heartbeat_at) <= self.ttl)

    def replica_ids(self, now: float | None = None) -> tuple[str, ...]:
        """The ids of the live members, sorted (what discovery shows)."""
        if not self.online:
            return ()
        return tuple(sorted(m.replica_id for m in self.live_members(now)))

    def encode(self) -> bytes:
        obj: dict[str, Any] = {
            "v": 1,
            "handle": self.handle,
            "owner": self.owner,
            "manifest": self.manifest.to_dict() if self.manifest is not None else None,
            "registered_at": self.registered_at,
            "heartbeat_at": self.heartbeat_at,
            "ttl": self.ttl,
            "online": self.online,
            "ephemeral": self.ephemeral,
        }
        if self.group:
            obj["group"] = self.group
            obj["members"] = [m.to_dict() for m in self.members]
        return cast(bytes, msgpack.packb(obj, use_bin_type=True))

    @classmethod
    def decode(cls, data: bytes) -> Record:
        """Raises ValueError or TypeError on a malformed record."""
        try:
            obj: Any = msgpack.unpackb(data, raw=False)
        except Exception as exc:
            raise ValueError(f"registry record is not msgpack: {type(exc).__name__}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("handle"), str):
            raise TypeError("registry record is not a map with a handle")
        return cls(
            handle=obj["handle"],
            owner=str(obj.get("owner", "")),
            manifest=Manifest.from_dict(obj.get("manifest")),
            registered_at=float(obj.get("registered_at", 0.0)),
            heartbeat_at=float(obj.get("heartbeat_at", 0.0)),
            ttl=float(obj.get("ttl", 0.0)),
            online=bool(obj.get("online", False)),
            ephemeral=bool(obj.get("ephemeral", False)),
            group=str(obj.get("group") or ""),
            members=tuple(Member.from_dict(m) for m in obj.get("members") or ()),
        )

    def info(self, now: float | None = None) -> HandleInfo:
        return HandleInfo(
            handle=self.handle,
            manifest=self.manifest,
            online=self.is_live(now),
            last_seen=self.heartbeat_at,
            registered_at=self.registered_at,
            ephemeral=self.ephemeral,
            replicas=self.replica_ids(now),
        )


class Registry:
    """Handle claims, heartbeats and lookups on the ``mesh_registry`` KV bucket."""

    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self._js = js
        self._kv = kv

    async def get(self, handle: str) -> tuple[Record, int] | None:
        """(record, revision) or None if the handle was never registered (or was removed)."""
        try:
            entry = await self._kv.get(handle)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        try:
            return Record.decode(entry.value), entry.revision or 0
        except (ValueError, TypeError):
            log.warning("mesh registry: undecodable record for handle %s", handle)
            return None

    async def claim(self, record: Record) -> int:
        """Claim ``record.handle`` for ``record.owner``; returns the KV revision.

        Succeeds when the handle is free, held by the same owner, or held by an owner whose
        heartbeat expired (a crashed agent); raises HandleTaken when another live agent holds it.
        A record with a ``group`` (and its one member, the claimant) joins the group instead (see :meth:`join`).
        """
        if record.group:
            return (await self.join(record))[1]
        current = await self.get(record.handle)
        try:
            if current is None:
                return await self._kv.create(record.handle, record.encode())
            existing, revision = current
            if existing.owner != record.owner and existing.is_live():
                raise HandleTaken(record.handle, _held_by(existing, record))
            record = replace(record, registered_at=existing.registered_at if existing.owner == record.owner
                             else record.registered_at)
            return await self._kv.update(record.handle, record.encode(), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise HandleTaken(record.handle) from None

    async def heartbeat(self, record: Record, revision: int) -> tuple[Beat, int]:
        """Refresh ``heartbeat_at``. Returns ``("ok", new revision)``, ``("taken", 0)`` when another owner
        holds the handle now, or ``("missing", 0)`` when its entry is gone (deleted, or the server lost its
        store). Raises what KV raises (``NoRespondersError`` when the bucket itself is gone)."""
        try:
            return "ok", await self._kv.update(record.handle, record.encode(), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            current = await self.get(record.handle)
            if current is None:
                return "missing", 0
            if current[0].owner != record.owner:
                return "taken", 0
            try:
                return "ok", await self._kv.update(record.handle, record.encode(), last=current[1])
            except nats.js.errors.KeyWrongLastSequenceError:
                return "taken", 0

    async def join(self, record: Record) -> tuple[Record, int]:
        """Add ``record.members[0]`` to the replica group ``record.group`` holding ``record.handle``, creating
        the group when the handle is free or its holder's heartbeat expired; returns (the entry now, its
        revision). Members whose heartbeat expired are dropped on the way. Raises HandleTaken when a live
        agent or another group holds the handle, or a live member of the group has the same replica id with
        another owner; MeshError after too much contention."""
        me = record.members[0]
        for _ in range(_GROUP_CAS_ATTEMPTS):
            current = await self.get(record.handle)
            try:
                if current is None:
                    return record, await self._kv.create(record.handle, record.encode())
                existing, revision = current
                now = time.time()
                if existing.group != record.group or existing.owner != record.owner:
                    if existing.is_live(now):
                        raise HandleTaken(record.handle, _held_by(existing, record))
                    return record, await self._kv.update(record.handle, record.encode(), last=revision)
                for member in existing.live_members(now):
                    if member.replica_id == me.replica_id and member.owner != me.owner:
                        raise HandleTaken(record.handle, f"the replica group holding it has a live member with "
                                          f"replica_id {me.replica_id!r}; give each replica its own replica_id")
                merged = _with_member(existing, record, me, now)
                return merged, await self._kv.update(record.handle, merged.encode(), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # another member (or claimant) wrote first: read again
        raise MeshError(f"handle {record.handle!r}: too much contention on its registry entry; try again")

    async def beat_member(self, record: Record, member: Member) -> tuple[Beat, Record | None, int]:
        """A group member's heartbeat: refresh ``member`` in the entry (re-adding it if another member had
        dropped it as expired) and drop expired members. Returns ``("ok", entry, revision)``, ``("taken",
        None, 0)`` when the handle is no longer held by ``record.group``, ``("missing", None, 0)`` when the
        entry is gone. Raises what KV raises, MeshError after too much contention."""
        for _ in range(_GROUP_CAS_ATTEMPTS):
            current = await self.get(record.handle)
            if current is None:
                return "missing", None, 0
            existing, revision = current
            if existing.group != record.group or existing.owner != record.owner:
                return "taken", None, 0
            now = time.time()
            merged = _with_member(existing, replace(record, manifest=existing.manifest), member, now)
            try:
                revision = await self._kv.update(record.handle, merged.encode(), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            if not any(m.replica_id == member.replica_id and m.owner == member.owner
                       for m in existing.live_members(now)):
                log.warning("mesh registry: %s: replica %s had been dropped from its group as expired (frozen, or "
                            "cut off from NATS); it joined again", record.handle, member.replica_id)
            return "ok", merged, revision
        raise MeshError(f"handle {record.handle!r}: too much contention on its registry entry")

    async def leave(self, record: Record, replica_id: str, owner: str) -> None:
        """Take the member ``replica_id`` (if ``owner`` is still its owner) out of the group's entry; the last
        live member to leave marks the handle offline. Raises what KV raises."""
        for _ in range(_GROUP_CAS_ATTEMPTS):
            current = await self.get(record.handle)
            if current is None:
                return
            existing, revision = current
            if existing.group != record.group or not any(
                    m.replica_id == replica_id and m.owner == owner for m in existing.members):
                return
            now = time.time()
            rest = tuple(m for m in existing.live_members(now) if m.replica_id != replica_id)
            left = replace(existing, members=rest, online=bool(rest),
                           heartbeat_at=max((m.heartbeat_at for m in rest), default=now))
            try:
                await self._kv.update(record.handle, left.encode(), last=revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
        log.info("mesh registry: %s: could not leave its replica group (contention); it expires with its heartbeat",
                 record.handle)

    async def remove(self, handle: str, owner: str) -> None:
        """Delete the handle's record if ``owner`` still holds it (ephemeral handles on close)."""
        current = await self.get(handle)
        if current is None or current[0].owner != owner:
            return
        try:
            await self._kv.delete(handle, last=current[1])
        except nats.js.errors.KeyWrongLastSequenceError:
            log.info("mesh registry: %s changed owner before removal; left in place", handle)

    async def all(self) -> list[Record]:
        """Every registered handle's record (see ``mesh.jetstream.latest_entries``: a KV watch can miss
        handles while others heartbeat)."""
        records: list[Record] = []
        for entry in await latest_entries(self._js, REGISTRY_BUCKET):
            try:
                records.append(Record.decode(entry.value or b""))
            except (ValueError, TypeError):
                log.warning("mesh registry: undecodable record for handle %s", entry.key)
        return records


def _with_member(existing: Record, record: Record, member: Member, now: float) -> Record:
    """``existing`` with ``member`` (heartbeat now) in place of its earlier entry, expired members dropped,
    ``record``'s manifest and ttl, and the first registration time kept."""
    member = replace(member, heartbeat_at=now)
    others = tuple(m for m in existing.live_members(now) if m.replica_id != member.replica_id)
    return replace(record, registered_at=existing.registered_at if existing.is_live(now) else record.registered_at,
                   heartbeat_at=now, online=True, members=(*others, member))


def _held_by(existing: Record, claimant: Record) -> str:
    """Why ``claimant`` may not have the handle ``existing`` holds (for HandleTaken)."""
    if existing.group:
        members = ", ".join(existing.replica_ids()) or "none live"
        if claimant.group:
            return (f"it is held by a replica group with another replica_key (members: {members}); give this "
                    "agent the group's replica_key, or use another handle")
        return (f"it is held by a replica group (members: {members}); to join it, give this agent the group's "
                "replica_key")
    if claimant.group:
        return ("it is held by a single agent, not a replica group; replicas can share it once that agent has "
                "closed (or its heartbeat expired)")
    return ""


def matches_tags(tags: Iterable[str], required: Iterable[str]) -> bool:
    """True if every required tag is present (no required tags matches everything)."""
    have = set(tags)
    return all(t in have for t in required)


def _match(handle: str, manifest: Manifest, *, capabilities: tuple[str, ...], domains: tuple[str, ...],
           tags: tuple[str, ...], command_name: str, version: str) -> tuple[int, list[str]] | None:
    score = 0
    reasons: list[str] = []
    for required, have, weight, kind in (
        (capabilities, manifest.capabilities, 100, "capability"),
        (domains, manifest.domains, 30, "domain"),
        (tags, manifest.tags, 10, "tag"),
    ):
        if not matches_tags(have, required):
            return None
        for value in required:
            score += weight
            reasons.append(f"{kind}:{value}")
    if command_name:
        if not any(c.name == command_name for c in manifest.commands):
            return None
        score += 20
        reasons.append(f"command:{command_name}")
    if version:
        if manifest.version != version:
            return None
        score += 10
        reasons.append(f"version:{version}")
    return score, reasons


def find_matches(
    entries: Mapping[str, tuple[Manifest | None, bool]],
    *,
    capabilities: Iterable[str] = (),
    domains: Iterable[str] = (),
    tags: Iterable[str] = (),
    command_name: str = "",
    version: str = "",
    limit: int = 0,
) -> list[HandleMatch]:
    """tailbus ranking over ``{handle: (manifest, online)}``.

    Every constraint must hold (all capabilities, domains and tags present, the command exists,
    the version equals); score = 100 per capability + 30 per domain + 10 per tag + 20 for the
    command + 10 for the version; sorted by score descending, then handle ascending; ``limit > 0``
    truncates. A handle without a manifest is treated as an empty manifest.
    """
    caps, doms, tgs = tuple(capabilities), tuple(domains), tuple(tags)
    out: list[HandleMatch] = []
    for handle, (manifest, online) in entries.items():
        m = _match(handle, manifest or Manifest(), capabilities=caps, domains=doms, tags=tgs,
                   command_name=command_name, version=version)
        if m is None:
            continue
        out.append(HandleMatch(handle=handle, manifest=manifest, score=m[0], match_reasons=tuple(m[1]),
                               online=online))
    out.sort(key=lambda h: (-h.score, h.handle))
    return out[:limit] if limit > 0 else out
