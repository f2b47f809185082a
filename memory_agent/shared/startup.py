"""Shared memory's start-up in the daemon: its KV bucket and change stream, write rules and vector memory."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from memory_agent.config import Config
from memory_agent.errors import ConfigError, MemoryAgentError
from memory_agent.protocols import Clock
from memory_agent.shared.ops import SharedOps
from memory_agent.shared.service import SharedState, WriteRules
from memory_agent.shared.state import StateLimits, StateStore
from memory_agent.shared.vectors import VectorMemory
from memory_agent.store.events import EventStore
from mesh.access import JetStreamContext

__all__ = ["SharedParts", "open_shared"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SharedParts:
    """What the daemon serves shared memory with: the KV state (whose expiries it watches), vector
    memory (which it closes) and the operations the handlers call."""

    state: SharedState
    vectors: VectorMemory
    ops: SharedOps


async def open_shared(cfg: Config, js: JetStreamContext, store: EventStore, *, clock: Clock) -> SharedParts:
    """Create the state bucket and change stream if missing (``[shared]`` limits) and open vector memory.

    Raises ``ConfigError`` naming ``[shared]`` when the bucket or stream cannot be made as configured.
    """
    shared = cfg.shared
    state_store = StateStore(js)
    try:
        await state_store.ensure(StateLimits(
            max_value_bytes=shared.max_value_bytes, state_max_bytes=shared.state_max_bytes,
            changes_max_bytes=shared.changes_max_bytes, changes_max_age=shared.changes_max_age,
            history_per_key=shared.history_per_key, replicas=shared.replicas))
    except MemoryAgentError as exc:
        raise ConfigError(f"[shared]: {exc}", key="shared") from None
    if shared.global_writers and not cfg.security.authenticated_senders:
        log.warning("shared.global_writers is checked against the handle a message claims: without "
                    "security.authenticated_senders (and a nats-server that enforces it) any agent can claim one")
    state = SharedState(state_store, WriteRules(
        max_value_bytes=shared.max_value_bytes, global_writers=shared.global_writers,
        admins=cfg.security.admins), clock=clock)
    vectors = await VectorMemory.open(cfg.db_path, cfg.vectors_dir, clock=clock)
    log.info("%s", vectors.report)
    return SharedParts(state, vectors, SharedOps(state=state, vectors=vectors, store=store, db_path=cfg.db_path,
                                                 tz=cfg.tz))
