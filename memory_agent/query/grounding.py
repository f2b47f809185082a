"""Is a retrieved event about a name the question uses that no stored report holds as a word?

"When did the Kafka brokers lose quorum?" asked of a memory in which no report says "Kafka" is about
something nobody reported, unless some report is about it in other words ("JVM" for a report of GC
pauses, "European" for one that says "EU"). Neither retriever can tell on its own: BM25 finds nothing
for the name and matches the other words, and the dense retriever's best match for an unknown topic
scores as high as the right report of a paraphrase (cosine 0.28-0.42 against 0.28-0.60 on the ops set of
``bench/opsgen.py``), so no floor on the fused score separates them.

So each such name is checked against each hit by the embeddings of the name alone and of the hit: the
hit is about the name when their cosine stands out from the name's cosine with stored reports in
general. The measure is the standard score (z-score) of the hit's cosine within that background
distribution, estimated on a uniform sample of stored embeddings::

    z(name, hit) = (cos(name, hit) - mean_s cos(name, s)) / std_s cos(name, s)

(z-score normalisation of retrieval scores: Montague and Aslam, "Relevance score normalization for
metasearch", CIKM 2001; Arampatzis and Kamps, "A signal-to-noise approach to score normalization",
CIKM 2009). A hit is kept when ``z >= min_z`` for every such name; the default 3 is the three-sigma rule
(a cosine that high is an outlier of the background, not a chance resemblance), not a value fitted to a
set. Names a report does hold as words (an FTS5 phrase lookup) are not checked: the retrievers match
them already.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from memory_agent.store.events import EventStore

__all__ = ["Grounding", "GroundingResult", "standard_scores"]

log = logging.getLogger(__name__)

#: Default threshold on the standard score (the three-sigma rule).
MIN_Z = 3.0
#: Stored embeddings in the background sample.
SAMPLE = 2048
#: Fewer sampled embeddings than this give no reliable spread: hits are then kept, with a note.
MIN_SAMPLE = 50
#: The sample is drawn again once the store has grown by this share since it was drawn.
REFRESH_GROWTH = 0.25


def standard_scores(name: np.ndarray, hits: np.ndarray, background: np.ndarray) -> np.ndarray:
    """z-scores of the cosines of ``name`` ``(dim,)`` with ``hits`` ``(m, dim)`` within its cosines with
    ``background`` ``(n, dim)``; all L2-normalised float32. Returns ``(m,)`` float64; ``+inf`` where the
    background has no spread (every cosine equal) and the hit's cosine is above it."""
    ref = background @ name
    mean, std = float(ref.mean()), float(ref.std())
    cos = (hits @ name).astype(np.float64)
    if std <= 1e-9:
        return np.where(cos > mean, np.inf, -np.inf)
    return (cos - mean) / std


@dataclass(frozen=True, slots=True)
class GroundingResult:
    """``kept``: the hit ids about every name, in the order given; ``note``: how it was decided."""

    kept: tuple[int, ...]
    note: str


class Grounding:
    """Keeps the hits that are about names no report holds as words (see the module docstring).

    ``store``: the event store (vectors of hits, the background sample); ``embed``: the query embedder
    (``text -> (dim,) float32, L2-normalised``, or ``None`` when the model is not loaded);
    ``min_z``: threshold on the standard score; ``sample``: stored embeddings in the background.
    """

    def __init__(
        self,
        store: EventStore,
        embed: Callable[[str], Awaitable[np.ndarray | None]],
        *,
        min_z: float = MIN_Z,
        sample: int = SAMPLE,
    ) -> None:
        self._store = store
        self._embed = embed
        self.min_z = min_z
        self._size = sample
        self._background: np.ndarray | None = None
        self._drawn_at = 0  # last_id() when the sample was drawn

    async def keep(self, names: Sequence[str], ids: Sequence[int], *, ranked: bool = False) -> GroundingResult:
        """The ids of ``ids`` whose events are about every name of ``names`` (z >= ``min_z``).

        ``ranked``: ``ids`` are best first, and the question is judged by its best match: when that one
        is not about the names, none is kept (testing each of a hundred weaker matches would let some
        pass the threshold by chance: the multiple-comparisons problem).

        Without the model (degraded mode), a name that cannot be embedded or hits without a vector yet,
        nothing can be judged by meaning: those hits are not kept (no stored word says they are about the
        name). With too few stored embeddings for a background, every hit is kept.
        """
        label = ", ".join(repr(n) for n in names)
        if not names or not ids:
            return GroundingResult(tuple(ids), "")
        background = await self._sample()
        if len(background) < MIN_SAMPLE:
            return GroundingResult(tuple(ids), f"{label}: too few embedded reports ({len(background)}) to judge "
                                               "by meaning; hits kept")
        vectors = []
        for name in names:
            v = await self._embed(name)
            if v is None:
                return GroundingResult((), f"{label}: the model is not loaded to judge reports by meaning")
            vectors.append(np.asarray(v, dtype=np.float32).reshape(-1))
        found, hit_vectors = await self._store.vectors(list(ids))
        if not len(found) or hit_vectors.shape[1] != background.shape[1]:
            return GroundingResult((), f"{label}: no match has an embedding to judge by meaning")
        ok = np.ones(len(found), dtype=bool)
        for v in vectors:
            if v.shape[0] != background.shape[1]:
                return GroundingResult((), f"{label}: embedding of {v.shape[0]} dims, stored {background.shape[1]}")
            ok &= standard_scores(v, hit_vectors, background) >= self.min_z
        about = {int(i) for i in found[ok]}
        kept = tuple(i for i in ids if i in about)
        if ranked and kept and kept[0] != ids[0]:
            return GroundingResult((), f"{label}: the best match is not about it by meaning "
                                       f"(z < {self.min_z:g} over {len(background)} "
                                       "sampled reports)")
        return GroundingResult(kept, f"{label}: {len(kept)} of {len(ids)} "
                                     f"{'match is' if len(ids) == 1 else 'matches are'} about it by meaning "
                                     f"(z >= {self.min_z:g} over {len(background)} sampled reports)")

    async def _sample(self) -> np.ndarray:
        """The background sample, drawn again once the store has grown by ``REFRESH_GROWTH``."""
        last = await self._store.last_id()
        if self._background is None or last > self._drawn_at * (1 + REFRESH_GROWTH) or (
            len(self._background) < self._size and last > self._drawn_at
        ):
            self._background = await self._draw(last)
            self._drawn_at = last
            log.debug("grounding background: %d embeddings sampled (last id %d)", len(self._background), last)
        return self._background

    async def _draw(self, last: int) -> np.ndarray:
        """Up to ``sample`` stored embeddings: ids drawn uniformly from 1..``last`` (ids missing after forget
        or not embedded yet are skipped), without reading every id; a small store is read whole."""
        if last <= 2 * self._size:
            return await self._store.sample_vectors(self._size)
        rng = np.random.default_rng(last)
        ids = np.unique(rng.integers(1, last + 1, size=2 * self._size, dtype=np.int64))
        _, vectors = await self._store.vectors(rng.permutation(ids)[: 2 * self._size])
        return vectors[: self._size]
