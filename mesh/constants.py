"""Every name, prefix and default the mesh puts on NATS, in one place (shared by all agents)."""

from __future__ import annotations

import re
from typing import Final

#: Version of the msgpack envelope this package writes; readers reject other versions.
ENVELOPE_VERSION: Final = 1

#: ``^[a-z][a-z0-9_-]{0,62}$``: what a handle may look like.
HANDLE_RE: Final = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

#: The stream holding every inbox; subjects ``mesh.inbox.<to>.<from>``: the recipient's handle, then the
#: sender's, so a NATS server can tie each user's publish permission to its own handle.
STREAM_NAME: Final = "MESH_INBOX"
INBOX_PREFIX: Final = "mesh.inbox."
#: Push-consumer delivery subjects ``mesh.deliver.<handle>`` (outside the stream's subjects).
DELIVER_PREFIX: Final = "mesh.deliver."
#: Durable consumer name prefix: ``inbox_<handle>``.
DURABLE_PREFIX: Final = "inbox_"

#: Window (seconds) in which a re-published ``Nats-Msg-Id`` is stored only once.
DUPLICATE_WINDOW: Final = 120.0
#: Messages nobody consumed are dropped after this many seconds (7 days).
STREAM_MAX_AGE: Final = 7 * 24 * 3600.0
#: Upper bound of the inbox stream (1 GiB); when full, publishes are refused (discard new), never dropped.
STREAM_MAX_BYTES: Final = 1024 * 1024 * 1024

#: KV bucket of registered handles (manifest, owner, heartbeat).
REGISTRY_BUCKET: Final = "mesh_registry"
#: KV bucket of session state (participants, trace_id, resolved, sequence).
SESSIONS_BUCKET: Final = "mesh_sessions"
#: Session records expire after this many seconds (7 days), like unconsumed messages.
SESSIONS_MAX_AGE: Final = 7 * 24 * 3600.0

#: Default limit on the payload, in UTF-8 bytes (1 MiB).
DEFAULT_MAX_PAYLOAD: Final = 1024 * 1024
#: Default limit on concurrently running handlers (and the consumer's MaxAckPending).
DEFAULT_MAX_IN_FLIGHT: Final = 64
#: Default deliveries of one message before it is given up (terminated).
DEFAULT_MAX_DELIVER: Final = 5
#: Default seconds the server waits for an ack before redelivering.
DEFAULT_ACK_WAIT: Final = 30.0
#: Default seconds between heartbeats; a handle is offline after 3 missed heartbeats.
DEFAULT_HEARTBEAT_INTERVAL: Final = 5.0
#: Seconds a failed handler's message waits before it is redelivered.
NAK_DELAY: Final = 1.0

MESSAGE_TYPES: Final = ("session_open", "message", "session_resolve")
