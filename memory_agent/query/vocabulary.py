"""The names questions are read against: stored event types, services and handles, indexed for lookup.

:class:`VocabularyIndex` is built once from the store (:meth:`VocabularyIndex.build`, blocking: run it
off the event loop) and then grows by :meth:`VocabularyIndex.add` as reports arrive. Every structure
is a dict keyed by what a question's tokens give (a token's text, a stem, a tuple of tokens or of
stems), so adding a name costs O(its length) and recognising names in a question costs O(question
length), whatever the number of names: no structure is rebuilt or scanned per new name (issue 14:
20,000 names used to stall the first question after any new one for 7.5 s).

Names longer than :data:`MAX_NAME_CHARS` characters, or of more than :data:`MAX_NAME_TOKENS` tokens,
are not indexed (nobody types them in a question; they would only cost memory). Event types of 2 to
:data:`MAX_ORDER_FREE_PARTS` parts are also found with their parts in any order ("tests were
quarantined" -> ``test_quarantined``).

Mutation and lookup both happen on the event loop (``add`` from the ingest callback, lookups from
:func:`memory_agent.query.understand.understand`), so no lock is needed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from memory_agent.query.text import split_name, stem
from memory_agent.types import Vocabulary

__all__ = ["MAX_NAME_CHARS", "MAX_NAME_TOKENS", "MAX_ORDER_FREE_PARTS", "EventNames", "Names", "VocabularyIndex"]

#: Longest name (characters) put in the vocabulary: the limit on event names at the wire
#: (:data:`memory_agent.wire.MAX_EVENT_CHARS`), also applied to services and handles.
MAX_NAME_CHARS = 200
#: Most tokens of a name matched in a question; longer names are not indexed.
MAX_NAME_TOKENS = 8
#: Event types of up to this many parts are also matched with their parts in any order.
MAX_ORDER_FREE_PARTS = 4


def _append(d: dict[str, list[str]] | dict[tuple[str, ...], list[str]], key: object, value: str) -> None:
    bucket = d.setdefault(key, [])  # type: ignore[arg-type]
    if value not in bucket:  # a bucket holds the few names sharing one key
        bucket.append(value)


@dataclass(slots=True)
class Names:
    """Services or handles: each name under its token tuple, and multi-token names written together."""

    by_tokens: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    joined: dict[str, list[str]] = field(default_factory=dict)
    max_tokens: int = 0
    count: int = 0

    def add(self, name: str) -> bool:
        """Index ``name``; False when it was already there or is too long to index."""
        if len(name) > MAX_NAME_CHARS:
            return False
        parts = split_name(name)
        if not parts or len(parts) > MAX_NAME_TOKENS:
            return False
        bucket = self.by_tokens.setdefault(parts, [])
        if name in bucket:
            return False
        bucket.append(name)
        if len(parts) > 1:
            _append(self.joined, "".join(parts), name)
        self.max_tokens = max(self.max_tokens, len(parts))
        self.count += 1
        return True

    def same_tokens(self, name: str) -> list[str]:
        """Indexed names with the same tokens as ``name`` (``deploy`` and ``@deploy``)."""
        return self.by_tokens.get(split_name(name), [])


@dataclass(slots=True)
class EventNames:
    """Event types under every key a question can give: a stem key (parts' stems joined, or the stem of
    the parts written together), the sequence of part stems, and the sorted part stems."""

    single: dict[str, list[str]] = field(default_factory=dict)
    by_sequence: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    by_parts: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    by_tokens: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    max_tokens: int = 0
    count: int = 0

    def add(self, event: str) -> bool:
        """Index ``event``; False when it was already there or is too long to index."""
        if len(event) > MAX_NAME_CHARS:
            return False
        parts = split_name(event)
        if not parts or len(parts) > MAX_NAME_TOKENS:
            return False
        bucket = self.by_tokens.setdefault(parts, [])
        if event in bucket:
            return False
        bucket.append(event)
        stems = tuple(stem(p) for p in parts)
        _append(self.single, "".join(stems), event)
        _append(self.single, stem("".join(parts)), event)
        if len(parts) > 1:
            _append(self.by_sequence, stems, event)
            if len(parts) <= MAX_ORDER_FREE_PARTS:
                _append(self.by_parts, tuple(sorted(stems)), event)
        self.max_tokens = max(self.max_tokens, len(parts))
        self.count += 1
        return True

    def same_tokens(self, name: str) -> list[str]:
        """Indexed event types with the same tokens as ``name``."""
        return self.by_tokens.get(split_name(name), [])


class VocabularyIndex:
    """Event types, services and reporting handles already stored, indexed for question reading.

    ``add`` is O(length of the new names); nothing is rebuilt. ``len()`` is the number of indexed names.
    """

    __slots__ = ("events", "handles", "services")

    def __init__(self) -> None:
        self.events = EventNames()
        self.services = Names()
        self.handles = Names()

    @classmethod
    def build(cls, vocabulary: Vocabulary) -> VocabularyIndex:
        """An index of every name in ``vocabulary`` (blocking: O(names); run it off the event loop)."""
        index = cls()
        index.add(events=vocabulary.events, services=vocabulary.services, handles=vocabulary.handles)
        return index

    def add(
        self, *, events: Iterable[str] = (), services: Iterable[str | None] = (), handles: Iterable[str] = ()
    ) -> int:
        """Index the names not seen before; returns how many were new. ``None`` services are skipped."""
        added = 0
        for event in events:
            added += self.events.add(event)
        for service in services:
            if service:
                added += self.services.add(service)
        for handle in handles:
            added += self.handles.add(handle)
        return added

    def __len__(self) -> int:
        return self.events.count + self.services.count + self.handles.count
