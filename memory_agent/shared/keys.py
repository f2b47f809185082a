"""Keys, scopes and patterns of shared memory, and how they map to NATS subjects. Pure: no I/O.

A value lives at an :class:`Address` ``(scope, scope_id, key)``. On NATS it is the KV key
``<scope>.<scope_id>.<key>`` (subject ``$KV.memory_state.…``) and its changes are published on
``memory.change.<scope>.<scope_id>.<key>``. The mapping is reversible:

* a key's dots separate subject tokens (``user_42.preferences`` is two tokens), so a subscriber can narrow
  by subject; a key may therefore not start or end with ``.`` nor hold ``..`` (an empty token);
* inside a token, ``A-Z a-z 0-9 - _ /`` stay as they are and every other character is written as ``=XX``
  per UTF-8 byte (``ticket:7`` → ``ticket=3A7``; ``=`` itself → ``=3D``), which leaves only characters a
  JetStream KV key allows;
* a scope id is one token (its dots are escaped too); the global scope's is ``_``.

Keys are at most :data:`~memory_agent.shared.constants.MAX_KEY_BYTES` UTF-8 bytes, without control
characters. Change patterns are AgentField's globs: ``*`` matches any run of characters (dots included),
everything else matches itself. The server narrows by the pattern's literal leading tokens
(:func:`change_filters`); :meth:`KeyPattern.matches` finishes the match on the client.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from memory_agent.errors import SharedMemoryError, ValueTooLarge, excerpt
from memory_agent.shared.constants import (
    CHANGES_PREFIX,
    GLOBAL_TOKEN,
    MAX_KEY_BYTES,
    MAX_SCOPE_ID_CHARS,
    SCOPES,
    STATE_PREFIX,
    Scope,
)

__all__ = [
    "Address",
    "KeyPattern",
    "change_filters",
    "decode_token",
    "encode_token",
    "parse_change_subject",
    "parse_kv_key",
    "subject_covers",
    "validate_key",
    "validate_scope",
    "validate_scope_id",
]

_SAFE = frozenset(string.ascii_letters + string.digits + "-_/")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ESCAPE = re.compile(r"=([0-9A-F]{2})")


def encode_token(text: str) -> str:
    """``text`` as one subject token: safe characters kept, every other one ``=XX`` per UTF-8 byte."""
    out: list[str] = []
    for char in text:
        if char in _SAFE:
            out.append(char)
        else:
            out.extend(f"={byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def decode_token(token: str) -> str:
    """Inverse of :func:`encode_token`; raises ``ValueError`` on a token it did not write."""
    data = bytearray()
    pos = 0
    while pos < len(token):
        char = token[pos]
        if char == "=":
            match = _ESCAPE.match(token, pos)
            if match is None:
                raise ValueError(f"bad escape in subject token {excerpt(token)}")
            data.append(int(match.group(1), 16))
            pos = match.end()
        elif char in _SAFE:
            data.append(ord(char))
            pos += 1
        else:
            raise ValueError(f"character {char!r} cannot appear in an encoded token")
    return data.decode("utf-8")


def _check_text(value: Any, field: str, what: str) -> str:
    if not isinstance(value, str):
        raise SharedMemoryError(f'"{field}" must be a string, not {type(value).__name__}', field=field)
    if not value:
        raise SharedMemoryError(f'"{field}" is empty: give {what}', field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SharedMemoryError(f'"{field}" {excerpt(value)} is not valid Unicode (an unpaired surrogate)',
                                field=field) from None
    if _CONTROL.search(value):
        raise SharedMemoryError(f'"{field}" {excerpt(value)} holds a control character: use printable text',
                                field=field)
    return value


def validate_key(key: Any, field: str = "key") -> str:
    """``key`` if it can be stored; raises SharedMemoryError (``ValueTooLarge`` past 512 bytes) naming the fix."""
    key = _check_text(key, field, 'a key such as "ticket:7:status" or "user_42.preferences"')
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise ValueTooLarge(f'"{field}" is {size} bytes of UTF-8; keys are at most {MAX_KEY_BYTES}',
                            field=field, size=size, limit=MAX_KEY_BYTES)
    if "" in key.split("."):
        raise SharedMemoryError(
            f'"{field}" {excerpt(key)} has an empty part between dots: each dot-separated part of a key is a NATS '
            "subject token, so a key may not start or end with '.' or hold '..'", field=field)
    return key


def validate_scope(scope: Any) -> Scope:
    """``scope`` if it is one of workflow, session, actor, global; raises SharedMemoryError."""
    if scope not in SCOPES:
        raise SharedMemoryError(f'"scope" must be one of {", ".join(SCOPES)}, not {excerpt(scope)}', field="scope")
    return cast(Scope, scope)


def validate_scope_id(scope: Scope, scope_id: Any) -> str:
    """The scope id to use: ``""`` for global (which takes none), else a non-empty string of at most 128
    characters. Raises SharedMemoryError."""
    if scope == "global":
        if scope_id not in (None, ""):
            raise SharedMemoryError('the global scope has no "scope_id": leave it out', field="scope_id")
        return ""
    scope_id = _check_text(scope_id, "scope_id", f"the id of the {scope} scope")
    if len(scope_id) > MAX_SCOPE_ID_CHARS:
        raise SharedMemoryError(f'"scope_id" is {len(scope_id)} characters; at most {MAX_SCOPE_ID_CHARS}',
                                field="scope_id")
    return scope_id


@dataclass(frozen=True, slots=True)
class Address:
    """Where one value lives: ``scope``, ``scope_id`` (``""`` for global) and ``key``, already validated."""

    scope: Scope
    scope_id: str
    key: str

    @classmethod
    def of(cls, scope: Any, scope_id: Any, key: Any) -> Address:
        """Validate the three parts; raises SharedMemoryError."""
        valid = validate_scope(scope)
        return cls(valid, validate_scope_id(valid, scope_id), validate_key(key))

    @property
    def scope_token(self) -> str:
        return GLOBAL_TOKEN if self.scope == "global" else encode_token(self.scope_id)

    @property
    def kv_key(self) -> str:
        """``<scope>.<scope_id token>.<key tokens>``: the key in the ``memory_state`` bucket."""
        key = ".".join(encode_token(part) for part in self.key.split("."))
        return f"{self.scope}.{self.scope_token}.{key}"

    @property
    def state_subject(self) -> str:
        """``$KV.memory_state.<kv_key>``."""
        return STATE_PREFIX + self.kv_key

    @property
    def change_subject(self) -> str:
        """``memory.change.<kv_key>``."""
        return CHANGES_PREFIX + self.kv_key


def _parse_tokens(tokens: list[str]) -> Address:
    if len(tokens) < 3 or tokens[0] not in SCOPES:
        raise ValueError("not <scope>.<scope_id>.<key>")
    scope = cast(Scope, tokens[0])
    scope_id = "" if scope == "global" else decode_token(tokens[1])
    return Address(scope, scope_id, ".".join(decode_token(t) for t in tokens[2:]))


def parse_kv_key(kv_key: str) -> Address:
    """Inverse of :attr:`Address.kv_key`; raises ``ValueError`` for a key this module did not write."""
    return _parse_tokens(kv_key.split("."))


def parse_change_subject(subject: str) -> Address:
    """Inverse of :attr:`Address.change_subject`; raises ``ValueError``."""
    if not subject.startswith(CHANGES_PREFIX):
        raise ValueError(f"not a change subject: {excerpt(subject)}")
    return _parse_tokens(subject[len(CHANGES_PREFIX):].split("."))


class KeyPattern:
    """One AgentField glob over keys (``customer_*``, ``ticket:*:sentiment``, ``user_*.preferences``).

    ``*`` matches any run of characters, dots included; every other character matches itself. Raises
    SharedMemoryError for an empty pattern, one over 512 bytes, or one no valid key can match (an empty
    part between dots).
    """

    __slots__ = ("_regex", "pattern")

    def __init__(self, pattern: Any) -> None:
        text = _check_text(pattern, "pattern", 'a key or a glob such as "ticket:*:sentiment"')
        probe = text.replace("*", "x")
        validate_key(probe, "pattern")
        self.pattern = text
        self._regex = re.compile(".*".join(re.escape(part) for part in text.split("*")), re.DOTALL)

    def __repr__(self) -> str:
        return f"KeyPattern({self.pattern!r})"

    def matches(self, key: str) -> bool:
        """True when ``key`` matches the whole pattern."""
        return self._regex.fullmatch(key) is not None

    def key_filter(self) -> str:
        """The subject tokens (after scope and scope id) that narrow this pattern on the server: the exact
        key's tokens when there is no ``*``, else its complete literal leading tokens then ``>``."""
        if "*" not in self.pattern:
            return ".".join(encode_token(part) for part in self.pattern.split("."))
        literal = self.pattern[: self.pattern.index("*")]
        complete = literal.split(".")[:-1]
        return ".".join([*(encode_token(part) for part in complete), ">"])


def change_filters(patterns: Iterable[KeyPattern], *, scope: Scope | None, scope_id: str | None) -> list[str]:
    """The subjects of ``MEMORY_CHANGES`` to consume for ``patterns`` in ``scope``/``scope_id`` (``None`` =
    any): one per pattern, without those another one covers, so no event is delivered twice."""
    scope_part = scope or "*"
    if scope is None or scope_id is None:
        id_part = "*"
    else:
        id_part = GLOBAL_TOKEN if scope == "global" else encode_token(scope_id)
    subjects = sorted({f"{CHANGES_PREFIX}{scope_part}.{id_part}.{p.key_filter()}" for p in patterns})
    return [s for s in subjects if not any(o != s and subject_covers(o, s) for o in subjects)]


def subject_covers(wide: str, narrow: str) -> bool:
    """True when every subject matched by the filter ``narrow`` is matched by the filter ``wide``."""
    a, b = wide.split("."), narrow.split(".")
    for i, token in enumerate(a):
        if token == ">":
            return len(b) > i
        if i >= len(b) or b[i] == ">":
            return False
        if token != "*" and token != b[i]:
            return False
    return len(a) == len(b)
