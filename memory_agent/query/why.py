"""Which incident a "why" question is about, among the events that match it (pure, no I/O).

"Why did production roll back?" may match several rollbacks. The answer is about the one whose trace
explains it, as an engineer reading the reports would pick it (issue 11):

1. a report on its trace that states a cause (an event type such as ``root_cause``, ``rca``,
   ``diagnosis``, ``postmortem``, or a ``root_cause``/``cause`` field);
2. else a report on its trace *before* it that shows what went wrong (``anomaly``, ``alert``,
   ``incident_opened``, ``error_spike``, ``outage`` ...);
3. else, and between equals, the most recent.

Which matches are candidates, when the question names a kind of event ("why did production roll
back?"), is decided by coordination-level matching (:func:`equal_matches`): the events that hold the
most of the question's other words, as words, match it equally well.

The other candidates are named in the answer so that nothing is hidden. Event types are free text, so
they are read by the Porter stems of their parts (:func:`memory_agent.query.text.stem`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from memory_agent.query.text import split_name, stem, tokenize, word_set
from memory_agent.types import StoredEvent

__all__ = ["WhyChoice", "choose_incident", "equal_matches", "is_cause", "is_symptom"]

#: Stems of event-type parts that state a cause.
CAUSE_STEMS = frozenset(stem(w) for w in word_set("root cause causes reason rca diagnosis diagnosed postmortem explanation"))
#: Payload fields that state a cause.
CAUSE_FIELDS = frozenset({"root_cause", "cause"})
#: Stems of event-type parts that show something went wrong.
SYMPTOM_STEMS = frozenset(
    stem(w)
    for w in word_set(
        "anomaly anomalies alert alarm incident outage spike degradation degraded error errors regression "
        "page paged failure"
    )
)


def is_cause(e: StoredEvent) -> bool:
    """Does ``e`` state a cause (its event type's words, or a ``root_cause``/``cause`` field)?"""
    return bool(CAUSE_STEMS.intersection(stem(p) for p in split_name(e.event))) or any(
        k in CAUSE_FIELDS for k in e.payload
    )


def is_symptom(e: StoredEvent) -> bool:
    """Does ``e`` show that something went wrong (anomaly, alert, incident, outage, error spike ...)?"""
    return bool(SYMPTOM_STEMS.intersection(stem(p) for p in split_name(e.event)))


@dataclass(frozen=True, slots=True)
class WhyChoice:
    """The candidate chosen, why (``reason``, in words), the reports on its trace that explain it, and the
    other candidates, in the order they were ranked."""

    chosen: StoredEvent
    reason: str
    explained_by: tuple[StoredEvent, ...]
    others: tuple[StoredEvent, ...]


def _rank(c: StoredEvent, mates: Sequence[StoredEvent]) -> tuple[bool, bool, float, int]:
    others = [m for m in mates if m.id != c.id]
    cause = any(is_cause(m) for m in others)
    before = any(is_symptom(m) and (m.occurred_at, m.id) < (c.occurred_at, c.id) for m in others)
    return cause, before, c.occurred_at, c.id


def choose_incident(
    candidates: Sequence[StoredEvent], traces: Mapping[str, Sequence[StoredEvent]]
) -> WhyChoice | None:
    """Pick the incident among ``candidates`` (events matching the question equally well); ``traces``
    maps each candidate's trace id to the reports on it. ``None`` when there is no candidate."""
    if not candidates:
        return None
    ranked = sorted(candidates, key=lambda c: _rank(c, traces.get(c.trace_id, ())), reverse=True)
    chosen = ranked[0]
    cause, before, _, _ = _rank(chosen, traces.get(chosen.trace_id, ()))
    mates = [m for m in traces.get(chosen.trace_id, ()) if m.id != chosen.id]
    if cause:
        reason = "its trace holds a report of the cause"
        explained = [m for m in mates if is_cause(m)]
    elif before:
        reason = "its trace shows what went wrong before it"
        explained = [m for m in mates if is_symptom(m) and (m.occurred_at, m.id) < (chosen.occurred_at, chosen.id)]
    else:
        reason = "the most recent match" if len(candidates) > 1 else "the only match"
        explained = []
    return WhyChoice(chosen, reason, tuple(explained), tuple(ranked[1:]))


def equal_matches(ranked: Sequence[StoredEvent], words: Iterable[str]) -> list[StoredEvent]:
    """The events of ``ranked`` (best first, all of the kind the question names) that match it equally.

    ``words``: the question's words that name no filter (``production`` in "why did production roll
    back?"). Every event holding the largest number of them (by Porter stem, in its indexed text) is an
    equal match: coordination-level matching (Cleverdon, "The Cranfield tests on index language devices",
    Aslib Proceedings 19(6), 1967), so that a wording the ranking happens to prefer cannot hide an
    incident the question names just as well. With no such words every event is an equal match; when no
    event holds any of them, the best-ranked one alone (the question is worded otherwise). Keeps the
    order of ``ranked``.
    """
    stems = {stem(w) for w in words}
    if not stems:
        return list(ranked)
    levels = [len(stems & {stem(t) for t in tokenize(e.text)}) for e in ranked]
    best = max(levels, default=0)
    if best == 0:
        return list(ranked[:1])
    return [e for e, level in zip(ranked, levels, strict=True) if level == best]
