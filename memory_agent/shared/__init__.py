"""Shared memory: scoped state on JetStream KV, change events, vector memory, outcomes (README "Shared memory").

The daemon side is :mod:`~memory_agent.shared.service` (kv), :mod:`~memory_agent.shared.vectors`,
:mod:`~memory_agent.shared.outcomes`, routed by :mod:`~memory_agent.shared.ops`; the wire contract is
:mod:`~memory_agent.shared.wire` (with :mod:`~memory_agent.shared.requests`), the key and subject mapping :mod:`~memory_agent.shared.keys`, and
:mod:`~memory_agent.shared.state` talks to JetStream for both the daemon and the SDK.
"""

from memory_agent.shared.constants import SCOPES, Scope
from memory_agent.shared.keys import Address, KeyPattern
from memory_agent.shared.wire import SHARED_OPERATIONS, ChangeEvent, Entry, VectorHit

__all__ = ["SCOPES", "SHARED_OPERATIONS", "Address", "ChangeEvent", "Entry", "KeyPattern", "Scope", "VectorHit"]
