"""The daemon's configuration: one typed object, read from TOML, ``MEMORY_AGENT_*`` variables and flags.

Precedence, highest first: CLI flags (passed to :func:`load_config` as ``overrides``), environment
variables, the TOML file, the defaults below. Top-level keys map to ``MEMORY_AGENT_<KEY>`` (e.g.
``MEMORY_AGENT_NATS_URL``); keys inside a table use a double underscore
(``MEMORY_AGENT_LLM__BASE_URL``), the convention of pydantic-settings, which does the reading.
``config.example.toml`` documents every key and mirrors this module field for field.
"""

from __future__ import annotations

import contextvars
import ipaddress
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from memory_agent.errors import ConfigError
from mesh.auth import NatsAuth
from mesh.handles import validate_handle

__all__ = [
    "ENV_PREFIX",
    "ClusterConfig",
    "Config",
    "EmbeddingConfig",
    "HttpConfig",
    "IndexConfig",
    "IngestConfig",
    "LLMConfig",
    "NatsConfig",
    "RetrievalConfig",
    "SecurityConfig",
    "SharedConfig",
    "is_loopback",
    "load_config",
    "parse_listen",
    "validate_nats_urls",
]

ENV_PREFIX = "MEMORY_AGENT_"
_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("memory_agent_toml", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddingConfig(_Section):
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


class IngestConfig(_Section):
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


class RetrievalConfig(_Section):
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


class LLMConfig(_Section):
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


class NatsConfig(_Section):
    """How the daemon and the CLI authenticate to NATS (one credential kind at most, plus TLS).

    Secrets never go in the file: a token or password is read from the environment variable named by
    ``*_env`` or from the file named by ``*_file``; an NKey seed or ``.creds`` file is given by path.
    """

    token_env: str = ""
    """Name of the environment variable holding the NATS token."""
    token_file: str = ""
    """File holding the NATS token (surrounding whitespace is stripped)."""
    user: str = ""
    """NATS user name; its password comes from ``password_env`` or ``password_file``."""
    password_env: str = ""
    password_file: str = ""
    nkey_seed_file: str = ""
    """File holding the user's NKey seed (``SU...``)."""
    creds_file: str = ""
    """A ``.creds`` file (user JWT and seed, as written by ``nsc``)."""
    tls_ca: str = ""
    """PEM file of the CA that signed the server's certificate; set to use TLS."""
    tls_cert: str = ""
    """PEM client certificate, for servers that verify clients; needs ``tls_key``."""
    tls_key: str = ""
    client_handle: str = ""
    """Handle the CLI (``ask``, ``report``, ``forget`` ...) uses on the mesh; empty = ``cli-<8 hex>``. A
    server with per-handle permissions needs a fixed one; ``forget`` needs one listed in security.admins."""

    @field_validator("client_handle")
    @classmethod
    def _valid_client_handle(cls, value: str) -> str:
        return validate_handle(value) if value else value

    @model_validator(mode="after")
    def _one_credential(self) -> NatsConfig:
        kinds = [name for name, on in (("token", self.token_env or self.token_file),
                                       ("user/password", self.user or self.password_env or self.password_file),
                                       ("nkey_seed_file", self.nkey_seed_file), ("creds_file", self.creds_file)) if on]
        if len(kinds) > 1:
            raise ValueError(f"set one way to authenticate to NATS, not {' and '.join(kinds)}")
        for name in ("token", "password"):
            if getattr(self, f"{name}_env") and getattr(self, f"{name}_file"):
                raise ValueError(f"{name}_env and {name}_file are both set: keep one")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        return self

    @property
    def configured(self) -> bool:
        """True when any credential or TLS option is set."""
        return any((self.token_env, self.token_file, self.user, self.password_env, self.password_file,
                    self.nkey_seed_file, self.creds_file, self.tls_ca, self.tls_cert, self.tls_key))

    def auth(self) -> NatsAuth | None:
        """The credentials, with secrets read from the named variables and files; None when none are set.

        Raises ConfigError naming the key when a variable is unset, a file cannot be read, or the
        options contradict each other (two credential kinds, a password without a user ...).
        """
        if not self.configured:
            return None
        token = self._secret("token", self.token_env, self.token_file)
        password = self._secret("password", self.password_env, self.password_file)
        if password is not None and not self.user:
            raise ConfigError("nats.password_env/password_file is set but nats.user is empty: set the user too", key="nats.user")
        if self.user and password is None:
            raise ConfigError(f"nats.user is {self.user!r} but no password: set nats.password_env or nats.password_file", key="nats.password_env")
        try:
            return NatsAuth(
                token=token,
                user=self.user or None,
                password=password,
                nkey_seed_file=Path(self.nkey_seed_file) if self.nkey_seed_file else None,
                creds_file=Path(self.creds_file) if self.creds_file else None,
                tls_ca=Path(self.tls_ca) if self.tls_ca else None,
                tls_cert=Path(self.tls_cert) if self.tls_cert else None,
                tls_key=Path(self.tls_key) if self.tls_key else None,
            )
        except ValueError as exc:
            raise ConfigError(f"[nats]: {exc}") from None

    @staticmethod
    def _secret(name: str, env: str, file: str) -> str | None:
        if env and file:
            raise ConfigError(f"nats.{name}_env and nats.{name}_file are both set: keep one", key=f"nats.{name}_env")
        if env:
            value = os.environ.get(env, "")
            if not value:
                raise ConfigError(f"nats.{name}_env names the environment variable {env}, which is not set or empty", key=f"nats.{name}_env")
            return value
        if file:
            try:
                value = Path(file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"nats.{name}_file {file} cannot be read ({exc.strerror})", key=f"nats.{name}_file") from None
            if not value:
                raise ConfigError(f"nats.{name}_file {file} is empty", key=f"nats.{name}_file")
            return value
        return None


class SecurityConfig(_Section):
    """Who may delete memory, and whether the sender's handle is authenticated by the NATS server."""

    admins: tuple[str, ...] = ()
    """Handles allowed to send ``{"op": "forget", ...}``; empty = nobody may delete events."""
    authenticated_senders: bool = False
    """True only when the NATS server lets each user publish on ``mesh.inbox.*.<its own handle>`` and nothing
    else under ``mesh.inbox`` (as examples/nats-server.conf does): the sender's handle is then
    authenticated, stored with ``sender_verified = true`` and trusted for the admin check."""

    @field_validator("admins")
    @classmethod
    def _valid_admins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for handle in value:
            validate_handle(handle)
        return value


class SharedConfig(_Section):
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


class ClusterConfig(_Section):
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


class IndexConfig(_Section):
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


#: URL schemes nats-py connects with.
NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def validate_nats_urls(value: str) -> str:
    """``value`` when every comma-separated part is a NATS URL such as ``nats://host:4222`` (``tls``, ``ws``
    and ``wss`` too); raises ``ValueError`` naming the bad part and the expected form."""
    for part in (p.strip() for p in value.split(",")):
        problem = None
        try:
            url = urlsplit(part)
            port = url.port  # ValueError when not a number or out of range
        except ValueError as exc:
            problem, url, port = str(exc), None, None
        if problem is None and url is not None:
            if url.scheme not in NATS_SCHEMES:
                problem = f"scheme must be one of {', '.join(s + '://' for s in NATS_SCHEMES)}"
            elif not url.hostname:
                problem = "it names no host"
            elif url.path not in ("", "/") or url.query or url.fragment:
                problem = "it has a path or query, which NATS URLs do not"
        if problem is not None or port == 0:
            raise ValueError(f"{part[:80]!r} is not a NATS URL ({problem or 'port 0'}): "
                             "write it like nats://127.0.0.1:4222 (several: comma-separated)")
    return value


def parse_listen(value: str) -> tuple[str, int] | None:
    """``"host:port"`` (``"[::1]:9464"`` for IPv6) as ``(host, port)``; ``None`` for an empty value (off).

    Raises ``ValueError`` saying the expected form. Port 0 means any free port.
    """
    value = value.strip()
    if not value:
        return None
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ValueError(f"{value[:80]!r} is not HOST:PORT: write it like 127.0.0.1:9464 (empty turns it off)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} of {value[:80]!r} is above 65535")
    return host, port


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpConfig(_Section):
    """The daemon's HTTP listener: Prometheus metrics (``/metrics``), liveness (``/healthz``), readiness
    (``/readyz``) and the read-only timeline page (``/``). See "Observing @memory" in the README."""

    listen: str = "127.0.0.1:9464"
    """``HOST:PORT`` to listen on (9464 is the port OpenTelemetry's Prometheus exporter uses); empty = no
    HTTP listener. On an address other than loopback the timeline page is served only with a token
    (``token_env``/``token_file``); metrics and health are served either way."""
    token_env: str = ""
    """Name of the environment variable holding the page's token (the token itself never goes in a file)."""
    token_file: str = ""
    """File holding the page's token (surrounding whitespace is stripped)."""

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value.strip()

    @model_validator(mode="after")
    def _one_token_source(self) -> HttpConfig:
        if self.token_env and self.token_file:
            raise ValueError("token_env and token_file are both set: keep one")
        return self

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` to listen on, ``None`` when off."""
        return parse_listen(self.listen)

    def token(self) -> str | None:
        """The page's token from ``token_env`` or ``token_file``; ``None`` when neither is set.

        Raises ConfigError naming the key when the variable is unset or the file unreadable or empty.
        """
        if self.token_env:
            value = os.environ.get(self.token_env, "").strip()
            if not value:
                raise ConfigError(f"http.token_env names the environment variable {self.token_env}, which is not "
                                  "set or empty", key="http.token_env")
            return value
        if self.token_file:
            try:
                value = Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"http.token_file {self.token_file} cannot be read ({exc.strerror})",
                                  key="http.token_file") from None
            if not value:
                raise ConfigError(f"http.token_file {self.token_file} is empty", key="http.token_file")
            return value
        return None

    @property
    def page_needs_token(self) -> bool:
        """True when the listener is reachable from other hosts: the page is served only with a token then."""
        address = self.address
        return address is not None and not is_loopback(address[0])


class Config(BaseSettings):
    """Everything the daemon and the CLI need. Build it with :func:`load_config`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Path("./memory-data")
    """SQLite database, FAISS index and the embedded nats-server's store live here."""
    nats_url: str = ""
    """NATS server(s) to join, comma-separated; empty = start an embedded nats-server under data_dir."""
    embedded_nats_host: str = "127.0.0.1"
    """Address the embedded nats-server listens on ("0.0.0.0" to accept agents from other hosts)."""
    embedded_nats_port: int = Field(default=4222, ge=0, le=65535)
    """Port of the embedded nats-server (0 = any free port)."""
    handle: str = "memory"
    """The handle @memory registers on the mesh."""
    timezone: str = "UTC"
    """IANA zone in which questions' days and weeks are read ("today", "on Friday") and naive times parsed."""
    max_in_flight: int = Field(default=512, ge=1, le=65_536)
    """Reports and questions handled at once; more wait in the durable consumer (never dropped)."""
    drain_timeout: float = Field(default=30.0, gt=0)
    """Seconds a shutdown waits for in-flight messages to finish; the rest stay unacknowledged and are
    redelivered to the next daemon."""
    ingest: IngestConfig = IngestConfig()
    index_save_interval: float = Field(default=10.0, gt=0)
    """Seconds between saves of the FAISS file while new vectors arrive (it is also saved on shutdown)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    """``text``: one readable line per record; ``json``: one JSON object per line (for log collectors)."""
    embedding: EmbeddingConfig = EmbeddingConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    index: IndexConfig = IndexConfig()
    llm: LLMConfig = LLMConfig()
    retention_days: float = Field(default=0.0, ge=0)
    """Events whose ``occurred_at`` is older than this many days are deleted; 0 = keep forever."""
    retention_interval: float = Field(default=3600.0, gt=0)
    """Seconds between retention sweeps (the first runs at start)."""
    retention_batch: int = Field(default=500, ge=1, le=100_000)
    """Events deleted per transaction by a sweep; ingest runs between batches."""
    max_clock_skew: float = Field(default=86_400.0, gt=0)
    """Seconds a report may be dated after @memory received it. A report dated further ahead (a sender's
    clock running fast, a wrong year) is stored with its claimed time, but windows that reach the
    present ("in the last hour", "today", "this week") do not count it, and retention expires it by its
    receipt time."""
    nats: NatsConfig = NatsConfig()
    security: SecurityConfig = SecurityConfig()
    http: HttpConfig = HttpConfig()
    shared: SharedConfig = SharedConfig()
    cluster: ClusterConfig = ClusterConfig()

    @field_validator("nats_url")
    @classmethod
    def _valid_nats_url(cls, value: str) -> str:
        return validate_nats_urls(value) if value.strip() else ""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'") from exc
        return value

    @field_validator("handle")
    @classmethod
    def _valid_handle(cls, value: str) -> str:
        return validate_handle(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _toml_path.get()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "memory.sqlite3"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index.faiss"

    @property
    def vectors_dir(self) -> Path:
        """Where vector memory's FAISS files live (one per namespace)."""
        return self.data_dir / "vectors"


def load_config(path: Path | None = None, **overrides: Any) -> Config:
    """Read the config from ``path`` (TOML, optional), the environment and ``overrides`` (flags).

    Overrides that are ``None`` are ignored, so CLI options can be passed through unset.
    Raises ConfigError naming the bad key and what is expected.
    """
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist: pass --config with the path of a TOML file")
    values = {key: value for key, value in overrides.items() if value is not None}
    token = _toml_path.set(path)
    try:
        return Config(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        source = f" in {path}" if path is not None else ""
        raise ConfigError(f"invalid configuration{source} (or {ENV_PREFIX}* variables): {problems}") from exc
    except Exception as exc:  # a TOML syntax error surfaces from the source
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    finally:
        _toml_path.reset(token)
