"""The handle registry: one JetStream KV entry per handle (manifest, owner, heartbeat) and discovery.

Record (msgpack map, key = handle, bucket ``mesh_registry``)::

    {"v": 1, "handle": str, "owner": str (per-agent-instance uuid hex), "manifest": dict | None,
     "registered_at": float, "heartbeat_at": float, "ttl": float, "online": bool, "ephemeral": bool}

A handle is *live* while ``online`` and ``now - heartbeat_at <= ttl`` (unix seconds, the owner's
and reader's clocks: keep hosts NTP-synced). Claims and heartbeats are compare-and-set on the KV
revision, so two agents racing for a free handle cannot both win.
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
from .errors import HandleTaken
from .jetstream import latest_entries
from .types import HandleInfo, HandleMatch, Manifest

__all__ = ["Beat", "Record", "Registry", "find_matches", "matches_tags"]

log = logging.getLogger(__name__)

#: What a heartbeat found: the claim held (``"ok"``), another owner's (``"taken"``), no entry (``"missing"``).
Beat = Literal["ok", "taken", "missing"]


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

    def is_live(self, now: float | None = None) -> bool:
        """True while the owner heartbeats (``online`` and last heartbeat younger than ``ttl`` s)."""
        now = time.time() if now is None else now
        return self.online and (now - self.heartbeat_at) <= self.ttl

    def encode(self) -> bytes:
        return cast(
            bytes,
            msgpack.packb(
                {
                    "v": 1,
                    "handle": self.handle,
                    "owner": self.owner,
                    "manifest": self.manifest.to_dict() if self.manifest is not None else None,
                    "registered_at": self.registered_at,
                    "heartbeat_at": self.heartbeat_at,
                    "ttl": self.ttl,
                    "online": self.online,
                    "ephemeral": self.ephemeral,
                },
                use_bin_type=True,
            ),
        )

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
        )

    def info(self, now: float | None = None) -> HandleInfo:
        return HandleInfo(
            handle=self.handle,
            manifest=self.manifest,
            online=self.is_live(now),
            last_seen=self.heartbeat_at,
            registered_at=self.registered_at,
            ephemeral=self.ephemeral,
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
        """
        current = await self.get(record.handle)
        try:
            if current is None:
                return await self._kv.create(record.handle, record.encode())
            existing, revision = current
            if existing.owner != record.owner and existing.is_live():
                raise HandleTaken(record.handle)
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
