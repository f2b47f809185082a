"""Which lane a payload takes: a recipient's priority rule, declared in its manifest. Pure, no I/O.

Every agent has two inboxes: the normal lane (``mesh.inbox.<to>.<from>``) and the priority lane
(``mesh.prio.<to>.<from>``), each with its own durable consumer and its own handler slots, so a burst in
one never queues the other. The *recipient* says which payloads belong to its priority lane (for @memory:
questions and operations), in its manifest; the sending SDK reads the manifest when it looks the handle
up, and picks the lane. Callers do nothing: ``open_session("memory", json)`` and plain-text questions
take the right lane by themselves. See docs/mesh.md, "Lanes".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Lane", "PriorityRule"]

#: ``"normal"`` or ``"priority"``: the lane a message travelled in (``Message.lane``).
Lane = Literal["normal", "priority"]

_MAX_KEYS = 32
_MAX_KEY_LEN = 64


@dataclass(frozen=True, slots=True)
class PriorityRule:
    """The payloads that take a recipient's priority lane.

    ``text``: every payload that does not start with ``{`` (after white space): plain text, and JSON that
    is not an object. ``json_keys``: JSON objects with one of these keys at the top level. @memory
    declares ``PriorityRule(text=True, json_keys=("query", "op"))``: questions and operations are
    priority, reports are not. Everything else is normal. A payload over the sender's
    ``Quotas.priority_payload_max_bytes`` always takes the normal lane.

    Raises ValueError for more than 32 keys or a key that is empty or over 64 characters.
    """

    text: bool = False
    json_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.json_keys, str) or len(self.json_keys) > _MAX_KEYS:
            raise ValueError(f"PriorityRule.json_keys must be a tuple of at most {_MAX_KEYS} keys")
        for key in self.json_keys:
            if not isinstance(key, str) or not 0 < len(key) <= _MAX_KEY_LEN:
                raise ValueError(f"PriorityRule.json_keys: a key is a string of 1-{_MAX_KEY_LEN} characters")

    def lane_of(self, payload: str) -> Lane:
        """The lane ``payload`` takes under this rule. A JSON object is parsed only when one of the keys
        appears in it as a string, so a report costs a substring search."""
        body = payload.lstrip()
        if not body.startswith("{"):
            return "priority" if self.text else "normal"
        if not any(f'"{key}"' in body for key in self.json_keys):
            return "normal"
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            return "normal"
        if isinstance(obj, dict) and any(key in obj for key in self.json_keys):
            return "priority"
        return "normal"

    def to_dict(self) -> dict[str, Any]:
        """``{"text": bool, "json_keys": [str, ...]}`` (the manifest's ``priority`` entry)."""
        return {"text": self.text, "json_keys": list(self.json_keys)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PriorityRule | None:
        """Inverse of ``to_dict``; None stays None; raises TypeError on a malformed entry."""
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise TypeError("manifest field 'priority' must be a mapping")
        keys = data.get("json_keys") or ()
        if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
            raise TypeError("manifest field 'priority.json_keys' must be a list of strings")
        try:
            return cls(text=bool(data.get("text", False)), json_keys=tuple(keys))
        except ValueError as exc:
            raise TypeError(str(exc)) from None
