"""Frozen, slotted value types of the mesh API (names and fields follow the tailbus Python SDK)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .priority import Lane, PriorityRule

__all__ = [
    "CommandSpec",
    "HandleEntry",
    "HandleInfo",
    "HandleList",
    "HandleMatch",
    "HandleMatches",
    "Introspected",
    "Lane",
    "Manifest",
    "Message",
    "MessageType",
    "Opened",
    "PriorityRule",
    "Registered",
    "Resolved",
    "RoomCreated",
    "RoomEvent",
    "RoomEventType",
    "RoomInfo",
    "RoomList",
    "RoomMembers",
    "RoomOpResult",
    "RoomPosted",
    "RoomReplay",
    "RoomStatus",
    "Sent",
    "SessionInfo",
    "SessionList",
    "SessionState",
]

MessageType = Literal["session_open", "message", "session_resolve"]
RoomEventType = Literal["message_posted", "member_joined", "member_left", "room_closed"]
RoomStatus = Literal["open", "closed"]
SessionState = Literal["open", "resolved"]


def _strs(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"manifest field {field!r} must be a list of strings")
    if not all(isinstance(v, str) for v in value):
        raise TypeError(f"manifest field {field!r} must be a list of strings")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command an agent exposes: ``name``, ``description`` and an optional JSON-schema string."""

    name: str
    description: str = ""
    parameters_schema: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (msgpack/JSON safe); empty fields are omitted like tailbus does."""
        d: dict[str, Any] = {"name": self.name, "description": self.description}
        if self.parameters_schema:
            d["parameters_schema"] = self.parameters_schema
        return d


@dataclass(frozen=True, slots=True)
class Manifest:
    """What an agent offers, published in the registry by ``register()`` and used by discovery.

    tailbus's fields, plus ``priority``: which payloads take this agent's priority lane (see
    :class:`~mesh.priority.PriorityRule`; None: every message takes the normal lane).
    """

    description: str = ""
    commands: tuple[CommandSpec, ...] = ()
    tags: tuple[str, ...] = ()
    version: str = ""
    capabilities: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    input_types: tuple[str, ...] = ()
    output_types: tuple[str, ...] = ()
    priority: PriorityRule | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the tailbus keys; empty fields are omitted."""
        d: dict[str, Any] = {}
        if self.description:
            d["description"] = self.description
        if self.commands:
            d["commands"] = [c.to_dict() for c in self.commands]
        for key in ("tags", "capabilities", "domains", "input_types", "output_types"):
            values = getattr(self, key)
            if values:
                d[key] = list(values)
        if self.version:
            d["version"] = self.version
        if self.priority is not None:
            d["priority"] = self.priority.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Manifest | None:
        """Inverse of ``to_dict``; ``None`` stays ``None``; raises TypeError on a malformed dict."""
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise TypeError("manifest must be a mapping")
        commands = []
        for c in data.get("commands") or ():
            if not isinstance(c, Mapping) or not isinstance(c.get("name"), str):
                raise TypeError("manifest command must be a mapping with a string 'name'")
            commands.append(
                CommandSpec(
                    name=c["name"],
                    description=str(c.get("description", "")),
                    parameters_schema=str(c.get("parameters_schema", "")),
                )
            )
        return cls(
            description=str(data.get("description", "")),
            commands=tuple(commands),
            tags=_strs(data.get("tags"), "tags"),
            version=str(data.get("version", "")),
            capabilities=_strs(data.get("capabilities"), "capabilities"),
            domains=_strs(data.get("domains"), "domains"),
            input_types=_strs(data.get("input_types"), "input_types"),
            output_types=_strs(data.get("output_types"), "output_types"),
            priority=PriorityRule.from_dict(data.get("priority")),
        )


@dataclass(frozen=True, slots=True)
class Message:
    """A message delivered to an agent.

    ``sent_at`` is seconds since the epoch (float, the sender's clock); ``sequence`` is the message's
    position in its session as its sender saw it: the open is 1, and each message numbers one past the
    last one its sender sent or received in the session (so sides taking turns count 1, 2, 3 ...; it
    increases along each sender's messages and along cause and effect). ``lane`` is the inbox lane it
    came in: ``"priority"`` for what the recipient's manifest declares priority, else ``"normal"``.
    """

    session: str
    from_handle: str
    to_handle: str
    payload: str
    content_type: str
    message_type: MessageType
    trace_id: str
    message_id: str
    sent_at: float
    sequence: int
    lane: Lane = "normal"


@dataclass(frozen=True, slots=True)
class Opened:
    """Result of ``open_session``: the new session id, the open message's id, the session's trace_id."""

    session: str
    message_id: str
    trace_id: str


@dataclass(frozen=True, slots=True)
class Sent:
    """Result of ``send``: the id of the published message and its sequence in the session."""

    message_id: str
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class Resolved:
    """Result of ``resolve``: the id of the published resolve message and its sequence."""

    message_id: str
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class Registered:
    """Result of ``register``: the claimed handle and whether it is ephemeral."""

    handle: str
    ephemeral: bool = False


@dataclass(frozen=True, slots=True)
class HandleInfo:
    """A registry record as discovery sees it.

    ``online`` is true while the owner heartbeats (last heartbeat younger than 3 intervals);
    ``last_seen`` and ``registered_at`` are seconds since the epoch (the owner's clock).
    """

    handle: str
    manifest: Manifest | None
    online: bool
    last_seen: float
    registered_at: float
    ephemeral: bool = False
    #: live members of the replica group holding the handle (their replica ids, sorted); empty when one agent
    #: holds it (an addition to tailbus's fields, see mesh.replicas)
    replicas: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Introspected:
    """Result of ``introspect(handle)``; ``found`` is false (and manifest None) for unknown handles."""

    handle: str
    found: bool
    manifest: Manifest | None = None
    online: bool = False
    #: live members of the replica group holding the handle (their replica ids, sorted); empty when one agent
    #: holds it (an addition to tailbus's fields, see mesh.replicas)
    replicas: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HandleEntry:
    """One entry of ``list_handles``."""

    handle: str
    manifest: Manifest | None = None
    online: bool = False
    #: live members of the replica group holding the handle (their replica ids, sorted); empty when one agent
    #: holds it (an addition to tailbus's fields, see mesh.replicas)
    replicas: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HandleMatch:
    """One ranked result of ``find_handles``: tailbus scores (capability 100, domain 30, command 20,
    tag 10, version 10) and the reasons (``"capability:x"``, ...)."""

    handle: str
    manifest: Manifest | None = None
    score: int = 0
    match_reasons: tuple[str, ...] = ()
    online: bool = False
    #: live members of the replica group holding the handle (their replica ids, sorted); empty when one agent
    #: holds it (an addition to tailbus's fields, see mesh.replicas)
    replicas: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HandleList:
    """tailbus's wrapper of ``list_handles`` entries (``list_handles`` itself returns the list)."""

    entries: tuple[HandleEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class HandleMatches:
    """tailbus's wrapper of ``find_handles`` matches (``find_handles`` itself returns the list)."""

    matches: tuple[HandleMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session of ``list_sessions()``: its participants, ``state`` (``"open"`` or ``"resolved"``) and
    trace id (an addition to tailbus's fields)."""

    session: str
    from_handle: str
    to_handle: str
    state: SessionState
    trace_id: str = ""


@dataclass(frozen=True, slots=True)
class SessionList:
    """tailbus's wrapper of ``list_sessions`` (``list_sessions`` itself returns the list)."""

    sessions: tuple[SessionInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """One event of a room, as delivered to ``on_message`` and returned by ``replay_room``.

    Fields as in tailbus: ``room_seq`` is the event's 1-based position in the room (unique and
    increasing, assigned under the room record's compare-and-set); ``sender_handle`` posted it or made
    the change; ``subject_handle`` is the member who joined or left (``""`` otherwise); ``event_type``
    is ``message_posted``, ``member_joined``, ``member_left`` or ``room_closed``; ``trace_id`` is the
    poster's, else the room's; ``sent_at`` is seconds since the epoch (float, the sender's clock);
    ``members`` are the members after the event. Added: ``title``, the room's title.
    """

    room_id: str
    room_seq: int
    sender_handle: str
    subject_handle: str
    payload: str
    content_type: str
    event_type: RoomEventType
    trace_id: str
    event_id: str
    sent_at: float
    members: tuple[str, ...] = ()
    title: str = ""


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """A room as ``list_rooms`` returns it (tailbus's fields; ``home_node_id`` is always ``""``, a
    room lives in JetStream, not on a node). ``next_seq`` is the sequence the next event gets;
    ``created_at``/``updated_at`` are seconds since the epoch. Added: the room's ``trace_id`` and its
    limits (``max_events``, ``max_bytes``)."""

    room_id: str
    title: str
    created_by: str
    home_node_id: str
    members: tuple[str, ...]
    status: RoomStatus
    next_seq: int
    created_at: float
    updated_at: float
    trace_id: str = ""
    max_events: int = 0
    max_bytes: int = 0


@dataclass(frozen=True, slots=True)
class RoomPosted:
    """Result of ``post_room_message``: the event's id and its ``room_seq``."""

    event_id: str
    room_seq: int


@dataclass(frozen=True, slots=True)
class RoomCreated:
    """tailbus's result type of creating a room (``create_room`` itself returns the room id)."""

    room_id: str


@dataclass(frozen=True, slots=True)
class RoomReplay:
    """tailbus's wrapper of ``replay_room`` (``replay_room`` itself returns the list of events)."""

    events: tuple[RoomEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class RoomMembers:
    """tailbus's wrapper of ``list_room_members`` (which itself returns the list of handles)."""

    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RoomList:
    """tailbus's wrapper of ``list_rooms`` (which itself returns the list of RoomInfo)."""

    rooms: tuple[RoomInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class RoomOpResult:
    """tailbus's result of join/leave/close (those methods themselves return the bool)."""

    ok: bool
