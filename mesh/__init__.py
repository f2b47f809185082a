"""mesh: a tailbus-style agent SDK on NATS JetStream, durable (see docs/mesh.md)."""

from .agent import AsyncAgent, MessageHandler
from .auth import NatsAuth
from .envelope import Envelope, decode_envelope, encode_envelope
from .errors import (
    AuthenticationError,
    EnvelopeError,
    HandleNotFound,
    HandleTaken,
    InvalidHandle,
    MeshError,
    MeshTimeout,
    NotParticipant,
    NotRegistered,
    PayloadTooLarge,
    PermissionDenied,
    ServerError,
    SessionClosed,
    SessionNotFound,
)
from .handles import validate_handle
from .server import NatsServer, find_nats_server
from .sync import SyncAgent
from .types import (
    CommandSpec,
    HandleEntry,
    HandleInfo,
    HandleMatch,
    Introspected,
    Manifest,
    Message,
    MessageType,
    Opened,
    Registered,
    Resolved,
    Sent,
)

__all__ = [
    "AsyncAgent",
    "AuthenticationError",
    "CommandSpec",
    "Envelope",
    "EnvelopeError",
    "HandleEntry",
    "HandleInfo",
    "HandleMatch",
    "HandleNotFound",
    "HandleTaken",
    "Introspected",
    "InvalidHandle",
    "Manifest",
    "MeshError",
    "MeshTimeout",
    "Message",
    "MessageHandler",
    "MessageType",
    "NatsAuth",
    "NatsServer",
    "NotParticipant",
    "NotRegistered",
    "Opened",
    "PayloadTooLarge",
    "PermissionDenied",
    "Registered",
    "Resolved",
    "Sent",
    "ServerError",
    "SessionClosed",
    "SessionNotFound",
    "SyncAgent",
    "decode_envelope",
    "encode_envelope",
    "find_nats_server",
    "validate_handle",
]
