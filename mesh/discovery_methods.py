"""The discovery methods of AsyncAgent (tailbus's names and signatures): introspect, list_handles, find_handles.

A mixin, so that agent.py stays about the agent's lifecycle and sessions; discovery needs only a started
agent (no registration), and reads the registry (see :mod:`mesh.registry`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace

from .handles import validate_handle
from .operation import operation
from .registry import Registry, find_matches, matches_tags
from .types import HandleEntry, HandleMatch, Introspected

__all__ = ["DiscoveryMethods"]


class DiscoveryMethods:
    """introspect, list_handles, find_handles."""

    async def _registry_ready(self) -> Registry:
        raise NotImplementedError  # AsyncAgent's

    async def introspect(self, handle: str) -> Introspected:
        """The handle's manifest and liveness; ``found=False`` if it is not registered (an offline handle
        is found, with ``online=False``: messages to it wait in its inbox)."""
        validate_handle(handle)
        registry = await self._registry_ready()
        with operation("introspect", f"introspect {handle!r}"):
            current = await registry.get(handle)
        if current is None:
            return Introspected(handle=handle, found=False)
        record = current[0]
        now = time.time()
        return Introspected(handle=handle, found=True, manifest=record.manifest, online=record.is_live(now),
                            replicas=record.replica_ids(now))

    async def list_handles(self, *, tags: Iterable[str] | None = None, online_only: bool = True) -> list[HandleEntry]:
        """Registered handles (sorted) whose manifest has every tag in ``tags``; only live ones unless
        ``online_only=False``. A handle held by a replica group is listed once, with its live members'
        ids in ``replicas``."""
        registry = await self._registry_ready()
        with operation("list", "list_handles"):
            records = await registry.all()
        now = time.time()
        required = tuple(tags or ())
        out = [
            HandleEntry(handle=r.handle, manifest=r.manifest, online=r.is_live(now), replicas=r.replica_ids(now))
            for r in records
            if matches_tags(r.manifest.tags if r.manifest else (), required)
        ]
        if online_only:
            out = [e for e in out if e.online]
        return sorted(out, key=lambda e: e.handle)

    async def find_handles(
        self,
        *,
        capabilities: Iterable[str] | None = None,
        domains: Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        command_name: str = "",
        version: str = "",
        limit: int = 0,
        online_only: bool = True,
    ) -> list[HandleMatch]:
        """Ranked discovery with tailbus's scoring (see ``mesh.registry.find_matches``); only live
        handles unless ``online_only=False``."""
        registry = await self._registry_ready()
        with operation("find", "find_handles"):
            records = await registry.all()
        now = time.time()
        entries = {r.handle: (r.manifest, r.is_live(now)) for r in records}
        if online_only:
            entries = {h: v for h, v in entries.items() if v[1]}
        matches = find_matches(entries, capabilities=capabilities or (), domains=domains or (), tags=tags or (),
                               command_name=command_name, version=version, limit=limit)
        replicas = {r.handle: r.replica_ids(now) for r in records if r.group}
        return [replace(m, replicas=replicas[m.handle]) if m.handle in replicas else m for m in matches]
