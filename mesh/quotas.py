"""Quotas: how much one sender, and the mesh as a whole, may keep in NATS (a frozen value, pure).

NATS has no per-user byte quota inside one stream, so the mesh bounds what one agent can store with
what the server does enforce:

* each (recipient, sender) pair is one subject of the inbox stream (``mesh.inbox.<to>.<from>``, and
  ``mesh.prio.<to>.<from>`` for the priority lane), and each stream keeps at most
  ``per_sender_messages`` messages per subject with *discard new per subject*: a sender that has that
  many messages waiting in one recipient's inbox has its next publish refused, and nobody else's;
* each message is at most ``message_max_bytes`` (``priority_message_max_bytes`` in the priority lane),
  so one pair holds at most ``per_sender_messages * message_max_bytes`` bytes;
* every stream and bucket has a total (``*_max_bytes``, discard new: a full stream refuses publishes, it
  never drops what it stored), and every KV record a size limit.

So one sender can fill at most ``per_sender_messages * message_max_bytes`` of a recipient's inbox per
lane; with the example's permissions (examples/nats-server.conf) it may write to a fixed list of
recipients, which bounds its total. See docs/mesh.md, "Quotas".

The quotas of a stream or bucket are those of the agent that created it (the first to start, or in the
example the trusted creator, @memory); an existing one is used as is, except that one made by an
earlier version without quotas gets them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .constants import (
    DEFAULT_FULL_WAIT,
    DEFAULT_INBOX_MAX_BYTES,
    DEFAULT_MESSAGE_MAX_BYTES,
    DEFAULT_PER_SENDER_MESSAGES,
    DEFAULT_PRIORITY_MAX_BYTES,
    DEFAULT_PRIORITY_PAYLOAD_MAX,
    DEFAULT_REGISTRY_MAX_BYTES,
    DEFAULT_REGISTRY_RECORD_MAX,
    DEFAULT_ROOM_RECORD_MAX,
    DEFAULT_ROOM_RECORDS_MAX_BYTES,
    DEFAULT_ROOMS_MAX_BYTES,
    DEFAULT_SESSION_RECORD_MAX,
    DEFAULT_SESSIONS_MAX_BYTES,
)

__all__ = ["Quotas"]

#: Bytes of a priority-lane message besides its payload (envelope, ids, handles, content type).
PRIORITY_ENVELOPE_ALLOWANCE = 4 * 1024


@dataclass(frozen=True, slots=True)
class Quotas:
    """Limits of the streams and KV buckets an agent creates, and how long a send waits on a full inbox.

    Sizes are bytes; ``full_wait`` is seconds. Defaults (see docs/mesh.md, "Quotas"): 512 messages per
    sender and lane in one recipient's inbox; messages up to 1 MiB + 64 KiB (normal lane, rooms) and
    priority payloads up to 64 KiB; inbox stream 4 GiB, priority stream 512 MiB, rooms stream 1 GiB;
    registry 64 MiB (records up to 64 KiB), sessions 1 GiB (records up to 4 KiB), room records 256 MiB
    (up to 64 KiB each); a send to a full inbox waits while the recipient takes messages, and raises
    InboxFull after 10 s in which it took none from this sender.

    Raises ValueError for a limit below 1 (``full_wait`` may be 0: fail at once).
    """

    per_sender_messages: int = DEFAULT_PER_SENDER_MESSAGES
    message_max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES
    priority_payload_max_bytes: int = DEFAULT_PRIORITY_PAYLOAD_MAX
    inbox_max_bytes: int = DEFAULT_INBOX_MAX_BYTES
    priority_max_bytes: int = DEFAULT_PRIORITY_MAX_BYTES
    rooms_max_bytes: int = DEFAULT_ROOMS_MAX_BYTES
    registry_max_bytes: int = DEFAULT_REGISTRY_MAX_BYTES
    registry_record_max_bytes: int = DEFAULT_REGISTRY_RECORD_MAX
    sessions_max_bytes: int = DEFAULT_SESSIONS_MAX_BYTES
    session_record_max_bytes: int = DEFAULT_SESSION_RECORD_MAX
    room_records_max_bytes: int = DEFAULT_ROOM_RECORDS_MAX_BYTES
    room_record_max_bytes: int = DEFAULT_ROOM_RECORD_MAX
    full_wait: float = DEFAULT_FULL_WAIT

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "full_wait":
                if not value >= 0:
                    raise ValueError("Quotas.full_wait must be >= 0 seconds")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Quotas.{f.name} must be an integer >= 1, got {value!r}")

    @property
    def priority_message_max_bytes(self) -> int:
        """The largest message the priority stream stores: a priority payload plus its envelope."""
        return self.priority_payload_max_bytes + PRIORITY_ENVELOPE_ALLOWANCE

    @property
    def per_sender_bytes(self) -> int:
        """The most bytes one sender can hold in one recipient's normal lane."""
        return self.per_sender_messages * self.message_max_bytes
