"""Replica groups: several agents (replicas) that hold one handle together, admitted by a shared secret.

A handle is held by one agent (the first claim wins, :mod:`mesh.registry`), or by a **replica group**: every
agent made with the same ``replica_key`` (``AsyncAgent(handle, replica_key=..., replica_id=...)``) joins the
group, and any other claimant gets HandleTaken as it would for a handle held by one agent. The registry
entry records the group as a hash of the key (:func:`group_hash`, scrypt, RFC 7914; the key itself is never
stored or sent) and one member entry per replica (``replica_id``, its owner, its heartbeat); the handle is
live while any member heartbeats, and a member whose heartbeat expires is dropped from the entry by the
next member to write it, without taking the others down.

Members share the handle's durable consumers: they deliver to one subject named after the group
(``mesh.deliver.<handle>.<group>``), to which every member subscribes in the queue group ``<handle>``, so
the server hands each message to exactly one live member, and redelivers what a dead member had not
acknowledged (after ``ack_wait``) to another. Replies sent by any member go out as the handle.

Trust: under NATS permissions that tie each user to its handle (examples/nats-server.conf), only the
handle's credentials can write its registry entry at all; the key decides between processes holding
those credentials, as the claim token does for one agent (:mod:`mesh.claim`). Use a long random key
(``openssl rand -hex 32``): the stored hash can be read by anyone who can read the registry.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from typing import Final

__all__ = ["MIN_KEY_LENGTH", "REPLICA_ID_RE", "default_replica_id", "group_hash", "validate_replica_id",
           "validate_replica_key"]

#: ``^[A-Za-z0-9_-]{1,64}$``: what a replica id may look like (one NATS token, usable in consumer names).
REPLICA_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: The shortest replica key accepted, in characters.
MIN_KEY_LENGTH: Final = 16
#: scrypt cost parameters (RFC 7914; N = 2**14, r = 8, p = 1 is the interactive-login setting it cites):
#: about 16 MiB and a few tens of milliseconds, once per start.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def validate_replica_key(key: str) -> str:
    """Return ``key`` if it can be a replica key (a string of at least 16 characters); raises ValueError."""
    if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"replica_key must be a secret of at least {MIN_KEY_LENGTH} characters, shared by every "
                         "replica of the handle (for example the output of `openssl rand -hex 32`)")
    return key


def validate_replica_id(replica_id: str) -> str:
    """Return ``replica_id`` if it matches ``^[A-Za-z0-9_-]{1,64}$``; raises ValueError."""
    if not isinstance(replica_id, str) or REPLICA_ID_RE.fullmatch(replica_id) is None:
        raise ValueError(f"replica_id must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-', got {replica_id!r}")
    return replica_id


def default_replica_id() -> str:
    """``<hostname>-<pid>`` (the hostname's other characters replaced by ``-``), at most 64 characters."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "host"
    pid = str(os.getpid())
    return f"{host[:63 - len(pid)]}-{pid}"


def group_hash(handle: str, key: str) -> str:
    """The group's identity in the registry: 32 hex digits of scrypt(``key``, salt ``mesh-replica-group:<handle>``).

    Blocking (tens of milliseconds): call it off the event loop."""
    digest = hashlib.scrypt(key.encode(), salt=f"mesh-replica-group:{handle}".encode(), n=_SCRYPT_N, r=_SCRYPT_R,
                            p=_SCRYPT_P, dklen=16)
    return digest.hex()
