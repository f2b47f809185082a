"""Every name and limit shared memory puts on NATS, in one place (the daemon and the SDK read them here).

Layout (docs in README "Shared memory"):

* KV bucket ``memory_state`` (stream ``KV_memory_state``): the state. Key ``<scope>.<scope_id>.<key>``,
  so the subject of a value is ``$KV.memory_state.<scope>.<scope_id>.<key>``; history 1 (past values are
  in the changes stream), per-message TTL allowed, and a server-placed marker when a TTL expires.
* Stream ``MEMORY_CHANGES``: every set, delete and expiry as a JSON change event on
  ``memory.change.<scope>.<scope_id>.<key>``, kept for replay and history.
"""

from __future__ import annotations

from typing import Final, Literal

#: The KV bucket holding the state, and the stream JetStream keeps it in.
STATE_BUCKET: Final = "memory_state"
STATE_STREAM: Final = f"KV_{STATE_BUCKET}"
STATE_PREFIX: Final = f"$KV.{STATE_BUCKET}."
#: The stream of change events and its subject prefix.
CHANGES_STREAM: Final = "MEMORY_CHANGES"
CHANGES_PREFIX: Final = "memory.change."

Scope = Literal["workflow", "session", "actor", "global"]
#: The four scopes, narrowest first: the order of the hierarchical get (AgentField's).
SCOPES: Final[tuple[Scope, ...]] = ("workflow", "session", "actor", "global")
#: The scope_id token of the global scope (it has no id of its own).
GLOBAL_TOKEN: Final = "_"

#: The most UTF-8 bytes of a key (before it is mapped to subject tokens).
MAX_KEY_BYTES: Final = 512
#: The most characters of a scope id (a trace id, session id or handle; the envelope's id limit).
MAX_SCOPE_ID_CHARS: Final = 128
#: Seconds a value may live at most (ttl_s): ten years.
MAX_TTL_S: Final = 10 * 365 * 24 * 3600
#: Seconds the server keeps the marker it places when a TTL expires (the expiry stays visible that long).
EXPIRY_MARKER_TTL: Final = 24 * 3600.0
#: Pages of kv.list and kv.history.
DEFAULT_LIST_LIMIT: Final = 100
MAX_LIST_LIMIT: Final = 1000
DEFAULT_HISTORY_LIMIT: Final = 20

#: Headers @memory writes on each value (the value itself is the JSON, so ``nats kv get`` shows it).
HEADER_BY: Final = "Memory-By"
HEADER_MESSAGE: Final = "Memory-Message-Id"
HEADER_KV_OPERATION: Final = "KV-Operation"
HEADER_MARKER_REASON: Final = "Nats-Marker-Reason"

#: Vector memory: the namespace used when none is given, and the limits of one request.
DEFAULT_NAMESPACE: Final = "default"
MAX_VECTOR_DIM: Final = 4096
MAX_TOP_K: Final = 1000
DEFAULT_TOP_K: Final = 10
MAX_METADATA_BYTES: Final = 64 * 1024

#: The report ``record_outcome`` sends: ``{"event": "outcome", "node_id", "success", ...}``.
OUTCOME_EVENT: Final = "outcome"
#: The most events ``recent`` returns.
MAX_RECENT: Final = 1000
