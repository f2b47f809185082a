"""One call from a seed to a labelled set: simulate the history, deliver it, ask about it."""

from __future__ import annotations

import random

from .history import deliver, simulate
from .model import OpsSet, iso, iso_seconds
from .questions import make_questions

DEFAULT_SEED = 11
DEFAULT_WEEKS = 6
DEFAULT_AS_OF = "2026-11-26T15:30:00Z"
"""A Thursday afternoon: "this week" has four days, "on Friday" is last week's."""


def generate(seed: int = DEFAULT_SEED, *, as_of: str = DEFAULT_AS_OF, weeks: int = DEFAULT_WEEKS,
             targets: dict[str, int] | None = None) -> OpsSet:
    """The set of ``seed``: ``weeks`` weeks of history up to ``as_of`` (ISO-8601, UTC) and its questions
    (``targets``: questions per kind, see :data:`opsset.questions.TARGETS`). The same arguments give the
    same set, byte for byte (:meth:`OpsSet.dumps`). Raises ``ValueError`` for ``weeks`` < 1."""
    if weeks < 1:
        raise ValueError(f"weeks must be at least 1, not {weeks}")
    now = iso_seconds(as_of)
    rng = random.Random(f"ops-history-{seed}")
    reports = deliver(rng, simulate(rng, as_of=now, weeks=weeks), as_of=now)
    questions = make_questions(random.Random(f"ops-questions-{seed}"), reports, as_of=now, targets=targets)
    return OpsSet(seed, iso(now), weeks, tuple(reports), tuple(questions))
