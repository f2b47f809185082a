"""The daemon's configuration sections for its own parts: embedding, ingest, retrieval, the LLM, the
FAISS index, shared memory and the cluster (each a ``[table]`` of the TOML file; see
:mod:`memory_agent.config`)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from mesh.handles import validate_handle

__all__ = ["ClusterConfig", "EmbeddingConfig", "IndexConfig", "IngestConfig", "LLMConfig", "RetrievalConfig",
           "Section", "SharedConfig"]


class Section(BaseModel):
    """A ``[table]`` of the config: unknown keys are refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddingConfig(Section):
    """How reports and questions are embedded."""

    model: str = ""
    """sentence-transformers model name or local path; empty = bundled all-MiniLM-L6-v2 (384 dims)."""
    backend: Literal["torch", "onnx", "onnx-int8"] = "torch"
    """How the model runs: ``torch`` (sentence-transformers), ``onnx`` (the same weights exported to ONNX,
    fp32, run by ONNX Runtime; vectors interchangeable with torch's) or ``onnx-int8`` (that export with
    dynamically quantised int8 weights: faster, vectors of its own, so switching to or from it needs
    ``memory-agent reindex``). ONNX exports are cached under ``models_dir``."""
    models_dir: str = ""
    """Directory of the ONNX exports (``<name>-<backend>/``); empty = ``<data_dir>/models``. An install
    without torch (the container image) runs an export made at build time from here."""
    device: str = "cpu"
    """Torch device (``torch`` backend only; the ONNX backends run on the CPU)."""
    threads: int = Field(default=0, ge=0, le=256)
    """Threads the model may use for one encode call; 0 = the library's default (one per core)."""
    max_batch: int = Field(default=8, ge=1, le=4096)
    """Most texts in one encode call. A question's embedding waits for at most the call running when it
    arrives, so this bounds what the embedding backlog adds to a question's latency
    (docs/benchmarks.md#design-encode-calls)."""
    max_batch_chars: int = Field(default=65_536, ge=1)
    """Most characters in one encode call (with ``max_batch`` and ``max_chars``, a bound on its memory)."""
    max_chars: int = Field(default=0, ge=0)
    """Characters of a text sent to the model; 0 = the model's maximum sequence length in tokens x 16
    (4,096 for all-MiniLM-L6-v2). The stored payload and full-text entry stay whole."""
    backlog_batch: int = Field(default=256, ge=1, le=100_000)
    """Stored events embedded per round of the backlog: read, embedded (in calls of ``max_batch``), written
    back in one transaction, added to FAISS."""
    retry_interval: float = Field(default=60.0, gt=0)
    """Seconds between attempts to load a model that failed to load (or to use one whose every encode
    fails); meanwhile reports are stored and answered from SQLite and FTS5 (degraded, not down)."""


class IngestConfig(Section):
    """How reports are accepted: committed to SQLite (with their FTS5 rows) before they are acknowledged,
    many per transaction; embedded afterwards (``[embedding]``)."""

    queue: int = Field(default=1024, ge=1, le=1_000_000)
    """Reports waiting to be committed, at most; more wait unacknowledged in JetStream (back-pressure)."""
    batch: int = Field(default=256, ge=1, le=100_000)
    """Most reports per SQLite transaction."""
    retry_max_delay: float = Field(default=15.0, gt=0)
    """While storage is unavailable (busy, locked, disk full, I/O error) a report stays unacknowledged and
    is tried again after a delay growing from 0.25 s to this many seconds; there is no limit on attempts."""
    watch_interval: float = Field(default=1.0, gt=0)
    """Seconds between checks that the database file is still the one opened; if it is gone, @memory
    stops acknowledging and exits non-zero."""


class RetrievalConfig(Section):
    """Hybrid retrieval: FAISS (dense) and FTS5 BM25 (sparse) fused, then spread to trace neighbours.

    The steps and their sources are in :mod:`memory_agent.query.retrieval`; how the defaults were chosen,
    on LoCoMo and the generated ops set, in docs/benchmarks.md ("Choosing the retrieval defaults").
    """

    fusion: Literal["calibrated", "convex", "rrf"] = "calibrated"
    """"calibrated": dense_weight * cosine + (1 - dense_weight) * BM25 over its upper bound for the question,
    times the share of the question's phrases the report holds (bounded scores, so a floor means the same
    for every question); "convex": the same sum of min-max normalised scores (Bruch, Gai and Ingber, ACM
    TOIS 2023); "rrf": reciprocal-rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009)."""
    dense_weight: float = Field(default=0.3, ge=0.0, le=1.0)
    """Share of the dense (FAISS) side in the fusion; BM25 gets 1 - dense_weight (with "rrf", 0.5 is plain RRF)."""
    coverage_power: float = Field(default=2.0, ge=0.0, le=8.0)
    """"calibrated" only: the BM25 side is multiplied by (phrases the report holds / phrases searched) to this
    power (0 = off), so one incidental shared word does not outvote the meaning of the whole question."""
    rrf_k: int = Field(default=60, ge=1)
    """The k of RRF, score = sum 1/(k + rank); 60 is the value of Cormack, Clarke and Buettcher (SIGIR 2009)."""
    candidates: int = Field(default=100, ge=1, le=10_000)
    """How many hits each retriever contributes before fusion."""
    context_window: int = Field(default=2, ge=0, le=5)
    """Events on each side of a hit, on the same trace in time order, that get part of its score (0 = off)."""
    context_weight: float = Field(default=0.3, ge=0.0, le=10.0)
    """Part of a hit's score its trace neighbour at distance d gets: context_weight * score / d (the largest share wins)."""
    min_score: float = Field(default=0.05, ge=0.0, le=1.0)
    """Relevance floor: ranked answers (search, why, a timeline found by search) hold only events whose fused
    score reaches it, and answer "No reports match ..." when none does ("calibrated" scores are within 0..1).
    Only such events lend score to their trace neighbours. The default is dense_weight x the 99th percentile
    of the cosine of unrelated question/report pairs across the two labelled sets (``bench/floor.py``):
    a match whose only evidence is a cosine that unrelated text reaches 1% of the time is not presented."""
    default_limit: int = Field(default=20, ge=1, le=10_000)
    """Events a structured ranked answer returns when the question gives no ``limit``."""
    text_limit: int = Field(default=5, ge=1, le=10_000)
    """Events a plain-text ranked answer shows when the question gives no ``limit`` (it says how many more matched)."""
    max_list: int = Field(default=1000, ge=1, le=100_000)
    """Most events a list, count or timeline answer carries (the count itself is always exact)."""


class LLMConfig(Section):
    """Optional summariser through any OpenAI-compatible endpoint; off while ``base_url`` or ``model`` is empty."""

    base_url: str = ""
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key (the key itself never goes in a file)."""
    timeout: float = Field(default=20.0, gt=0)
    """Seconds; on timeout the extractive answer is returned with a note."""
    max_events: int = Field(default=30, ge=1, le=500)
    """Most events given to the model."""

    @property
    def enabled(self) -> bool:
        return bool(self.base_url and self.model)


class SharedConfig(Section):
    """Shared memory: scoped state on a JetStream KV bucket, change events, vector memory (README "Shared
    memory"). The bucket and stream limits apply when @memory creates them (first start); change existing
    ones with the NATS tools."""

    enabled: bool = True
    """Serve kv.*, vector.*, outcomes and recent; false answers them with an error."""
    global_writers: tuple[str, ...] = ()
    """Handles that may write the global scope (admins always may); empty = every handle."""
    max_value_bytes: int = Field(default=256 * 1024, ge=1, le=8 * 1024 * 1024)
    """The largest value (its JSON, UTF-8 bytes). A change event carries the value and the one it replaced,
    so keep twice this under the NATS server's max_payload (1 MB by default)."""
    state_max_bytes: int = Field(default=1024**3, ge=1024 * 1024)
    """Bytes the state bucket may hold; when full, writes are refused (nothing is dropped)."""
    changes_max_bytes: int = Field(default=1024**3, ge=1024 * 1024)
    """Bytes the change stream keeps; when full, its oldest events are dropped (the state is not)."""
    changes_max_age: float = Field(default=7 * 24 * 3600.0, gt=0)
    """Seconds a change event is kept for history and replay."""
    history_per_key: int = Field(default=64, ge=1, le=100_000)
    """Change events kept per key (kv.history)."""
    replicas: int = Field(default=1, ge=1, le=5)
    """JetStream replicas of the bucket and the change stream (3 on a three-node cluster)."""

    @field_validator("global_writers")
    @classmethod
    def _valid_writers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for handle in value:
            validate_handle(handle)
        return value


class ClusterConfig(Section):
    """More than one @memory (docs/scaling.md): reports go to the replicated JetStream stream ``stream``
    first, and every replica applies that stream, in order, to its own SQLite + FTS5 + FAISS. Off: one
    @memory, reports acknowledged once committed in its SQLite (the default, unchanged)."""

    enabled: bool = False
    """Accept reports into the events stream and apply it (every replica sets this)."""
    stream_replicas: int = Field(default=1, ge=1, le=3)
    """JetStream replicas of the events stream (3 on a three-node cluster: losing one server loses nothing).
    Applies when the stream is created (the first replica's start); change it later with the NATS tools."""
    stream: str = Field(default="MEMORY_EVENTS", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """Name of the events stream; its subject is ``memory.events.<stream>``. Replicas of one memory share it."""
    max_age: float = Field(default=0.0, ge=0)
    """Seconds the stream keeps an event (0 = forever). A replica that starts empty catches up from the
    stream, so keep at least as long as retention_days (or forever)."""
    max_bytes: int = Field(default=-1, ge=-1)
    """Bytes the stream may hold (-1 = no limit); when full, reports are refused (never dropped)."""
    apply_batch: int = Field(default=256, ge=1, le=10_000)
    """Events a replica fetches from the stream and commits per transaction."""
    read_wait: float = Field(default=5.0, ge=0, le=300)
    """Seconds a question with ``"min_seq"`` waits at most for its replica to apply that far."""
    replica_key: SecretStr = SecretStr("")
    """A secret (at least 16 characters, e.g. ``openssl rand -hex 32``) shared by the replicas, so that all of
    them register the same ``handle`` as one replica group: each report or question to it reaches exactly
    one live replica, and an agent without the key is refused the handle (docs/scaling.md, "Handles"). Set
    it through ``MEMORY_AGENT_CLUSTER__REPLICA_KEY`` rather than in a file. Unset: each replica needs a
    handle of its own (``memory-1``, ``memory-2``, ...). Empty = unset."""
    replica_id: str = Field(default="", pattern=r"^([A-Za-z0-9_-]{1,64})?$")
    """This replica's id in the group (and in its consumer of the events stream, ``apply_<handle>_<id>``);
    empty = ``<hostname>-<8 hex of data_dir>``, the same at every start of this replica. Unique per replica."""

    # Embed once (memory_agent.cluster.vectors).
    share_vectors: bool = True
    """Publish the vectors this replica computes to ``vector_stream`` and take the others' instead of
    embedding again (each event is embedded by the replica that accepted it)."""
    vector_stream: str = Field(default="MEMORY_VECTORS", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """Name of the vectors stream (created with ``stream_replicas`` and ``max_age``); its subjects are
    ``memory.vectors.<stream>.<event id>``."""
    vector_wait: float = Field(default=5.0, ge=0, le=600)
    """Seconds a replica holds an event another replica accepted, waiting for its vector, before embedding
    it itself (the accepting replica died, lags, or runs another model)."""

    @model_validator(mode="after")
    def _replica_key_needs_cluster(self) -> ClusterConfig:
        if not self.replica_key.get_secret_value():
            return self
        if not self.enabled:
            raise ValueError("cluster.replica_key lets replicas share one handle, which only cluster mode keeps "
                             "consistent: set cluster.enabled = true, or unset the key")
        if len(self.replica_key.get_secret_value()) < 16:
            raise ValueError("cluster.replica_key must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        return self


class IndexConfig(Section):
    """The FAISS index: its kind by store size, the IVF parameters, how filtered searches stay exact, and
    the cap that keeps BM25 queries fast on large stores. Measured in docs/benchmarks.md (bench/query.py)."""

    kind: Literal["auto", "flat", "ivf"] = "auto"
    """``flat``: exact search over every vector. ``ivf``: inverted lists over 8-bit codes (a quarter of the
    memory, approximate, re-scored exactly; needs ``32 * 39`` vectors to train, flat until then).
    ``auto``: flat below ``exact_threshold`` vectors, ivf from there on (kept down to half of it)."""
    exact_threshold: int = Field(default=50_000, ge=1)
    """Vectors from which ``auto`` switches to ivf, decided at start, import and reindex. A one-query flat
    scan reads 1.5 KB per 384-dim vector, linear in the count (docs/benchmarks.md#design-scan-costs)."""
    nlist: int = Field(default=0, ge=0, le=65_536)
    """IVF inverted lists; 0 = the power of two nearest sqrt(vectors) (FAISS wiki "Guidelines to choose an
    index" suggests 4 to 16 * sqrt(N); training cost grows with its square; see index_kinds.auto_nlist).
    An index trained for a quarter (or four times) the auto value is rebuilt at start."""
    nprobe: int = Field(default=32, ge=1, le=65_536)
    """IVF lists scanned per search (FAISS ``nprobe``); a search restricted (window, filters) to a fraction f
    of the vectors probes nprobe / f lists, at most 4 * nprobe. With 1024 lists at a million vectors, 32
    scan ~3% of the codes (latency and recall in docs/benchmarks.md, "Query latency at scale")."""
    exact_candidates: int = Field(default=2048, ge=0)
    """An ivf search restricted (time window, filters) to at most this many ids scores each of them from
    its float32 vector in SQLite: exactly the brute-force top k (docs/benchmarks.md#design-scan-costs)."""
    rerank: int = Field(default=2, ge=0, le=64)
    """An ivf search takes k * rerank candidates from the 8-bit codes and re-scores them exactly from the
    float32 vectors in SQLite (the "re-ranking" of FAISS's IndexRefine); 0 = keep the 8-bit scores."""
    fts_max_docs: int = Field(default=2_000, ge=1)
    """The most events one BM25 query ranks: question words are taken rarest first while the events holding
    them add up to this; commoner words are left out like stopwords (lowest IDF). FTS5 scores every event
    holding a query word, so a common word costs tens of ms at a million (docs/benchmarks.md#design-scan-costs)."""
