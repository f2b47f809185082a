"""Every name, prefix and default the mesh puts on NATS, in one place (shared by all agents)."""

from __future__ import annotations

import re
from typing import Final

#: Version of the msgpack envelope this package writes; readers reject other versions.
ENVELOPE_VERSION: Final = 1

#: ``^[a-z][a-z0-9_-]{0,62}$``: what a handle may look like.
HANDLE_RE: Final = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

#: The stream holding every inbox's normal lane; subjects ``mesh.inbox.<to>.<from>``: the recipient's
#: handle, then the sender's, so a NATS server can tie each user's publish permission to its own handle,
#: and each (recipient, sender) pair is one subject, which the per-sender quota counts.
STREAM_NAME: Final = "MESH_INBOX"
INBOX_PREFIX: Final = "mesh.inbox."
#: The stream of every inbox's priority lane (questions and operations, as each recipient's manifest
#: says): subjects ``mesh.prio.<to>.<from>``, consumed by a second durable consumer with its own slots.
PRIORITY_STREAM: Final = "MESH_PRIORITY"
PRIORITY_PREFIX: Final = "mesh.prio."
#: Push-consumer delivery subjects ``mesh.deliver.<handle>.<owner>`` (outside the streams' subjects): one
#: per owner of the handle, so that a new owner's consumers never deliver to the old one.
DELIVER_PREFIX: Final = "mesh.deliver."
#: Durable consumer name prefixes: ``inbox_<handle>`` (normal lane), ``priority_<handle>``.
DURABLE_PREFIX: Final = "inbox_"
PRIORITY_DURABLE_PREFIX: Final = "priority_"

#: Window (seconds) in which a re-published ``Nats-Msg-Id`` is stored only once.
DUPLICATE_WINDOW: Final = 120.0
#: Messages nobody consumed are dropped after this many seconds (7 days).
STREAM_MAX_AGE: Final = 7 * 24 * 3600.0

#: KV bucket of registered handles (manifest, owner, heartbeat).
REGISTRY_BUCKET: Final = "mesh_registry"
#: KV bucket of session records: each participant keeps its own, under ``<owner>.<session>`` (peer,
#: trace id, sequences, resolved), which only that owner may read or write.
SESSIONS_BUCKET: Final = "mesh_sessions"
#: Session records expire after this many seconds (7 days), like unconsumed messages.
SESSIONS_MAX_AGE: Final = 7 * 24 * 3600.0

# ── quotas (defaults of mesh.quotas.Quotas; the creator of a stream or bucket sets them) ──────────

#: The most messages one sender may have waiting in one recipient's inbox, per lane (``max_msgs_per_subject``
#: with discard-new per subject: the sender's next publish is refused, nobody else's).
DEFAULT_PER_SENDER_MESSAGES: Final = 512
#: The largest message the inbox and rooms streams store: a 1 MiB payload plus its envelope.
DEFAULT_MESSAGE_MAX_BYTES: Final = 1024 * 1024 + 64 * 1024
#: The largest payload that travels in the priority lane (UTF-8 bytes); larger ones take the normal lane.
DEFAULT_PRIORITY_PAYLOAD_MAX: Final = 64 * 1024
#: Upper bounds of the streams; when full, publishes are refused (discard new), never dropped.
DEFAULT_INBOX_MAX_BYTES: Final = 4 * 1024 * 1024 * 1024
DEFAULT_PRIORITY_MAX_BYTES: Final = 512 * 1024 * 1024
DEFAULT_ROOMS_MAX_BYTES: Final = 1024 * 1024 * 1024
#: KV buckets: total bytes and the largest record.
DEFAULT_REGISTRY_MAX_BYTES: Final = 64 * 1024 * 1024
DEFAULT_REGISTRY_RECORD_MAX: Final = 64 * 1024
DEFAULT_SESSIONS_MAX_BYTES: Final = 1024 * 1024 * 1024
DEFAULT_SESSION_RECORD_MAX: Final = 4 * 1024
DEFAULT_ROOM_RECORDS_MAX_BYTES: Final = 256 * 1024 * 1024
DEFAULT_ROOM_RECORD_MAX: Final = 64 * 1024
#: Seconds a send to a recipient's full inbox (its per-sender quota, or the stream's bytes) waits without
#: the recipient taking any of this sender's messages before it raises InboxFull.
DEFAULT_FULL_WAIT: Final = 10.0

#: Replicas of every stream and bucket the mesh creates (1 on a single server, 3 on a cluster):
#: ``AsyncAgent(replicas=...)``, else ``$MESH_REPLICAS``, else 1.
REPLICAS_ENV: Final = "MESH_REPLICAS"

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
#: Default seconds ``close()`` waits for running handlers before cancelling them (their messages are
#: nak'ed, so redelivered at once to the next holder of the handle).
DEFAULT_DRAIN_TIMEOUT: Final = 5.0
#: Seconds a message waits before it is redelivered after a handler asked for a retry.
NAK_DELAY: Final = 1.0

MESSAGE_TYPES: Final = ("session_open", "message", "session_resolve")

#: Where an agent connects when ``servers`` is not given: ``$NATS_URL`` (comma-separated URLs, the
#: convention of NATS's own tools), else this.
NATS_URL_ENV: Final = "NATS_URL"
DEFAULT_SERVERS: Final = "nats://127.0.0.1:4222"
#: Directory of an agent's claim files (see mesh.claim): ``$MESH_STATE_DIR``, else
#: ``$XDG_STATE_HOME/mesh``, else ``~/.local/state/mesh``.
STATE_DIR_ENV: Final = "MESH_STATE_DIR"

# ── rooms ───────────────────────────────────────────────────────────

#: The stream holding every member's copy of every room event: ``mesh.room.<member>.<room_id>.<poster>``.
#: The member first, so that a server can let each user read only its own copies; the poster last, so
#: that it can let each user post only as itself.
ROOMS_STREAM: Final = "MESH_ROOMS"
ROOM_PREFIX: Final = "mesh.room."
#: Durable consumer of a member's room events: ``rooms_<handle>`` (delivers to ``mesh.deliver.<handle>``).
ROOMS_DURABLE_PREFIX: Final = "rooms_"
#: Short-lived pull consumer ``replay_<handle>`` that ``replay_room`` reads a member's copies with.
REPLAY_PREFIX: Final = "replay_"
#: KV bucket of room records (title, members, status, last room_seq, usage and limits).
ROOMS_BUCKET: Final = "mesh_rooms"
#: Room events, and room records not changed for this long, expire after 30 days.
ROOMS_MAX_AGE: Final = 30 * 24 * 3600.0
#: Default limits of one room: events (tailbus keeps the last 10,000) and payload bytes posted.
DEFAULT_ROOM_MAX_EVENTS: Final = 10_000
DEFAULT_ROOM_MAX_BYTES: Final = 16 * 1024 * 1024
#: The most members a room may have (each post is copied to every member).
MAX_ROOM_MEMBERS: Final = 256
#: The longest room title, in UTF-8 bytes.
MAX_ROOM_TITLE: Final = 1024
#: A room id: what ``create_room`` makes (a uuid4) or anything of these characters (one NATS token).
ROOM_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
ROOM_EVENT_TYPES: Final = ("message_posted", "member_joined", "member_left", "room_closed")
