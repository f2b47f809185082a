"""The top-level keys of the daemon's configuration (:class:`Config`) and how it is read
(:func:`load_config`): flags over ``MEMORY_AGENT_*`` variables over the TOML file over the defaults
below; see :mod:`memory_agent.config`."""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from memory_agent.config.network import HttpConfig, NatsConfig, SecurityConfig, validate_nats_urls
from memory_agent.config.sections import (
    ClusterConfig,
    EmbeddingConfig,
    IndexConfig,
    IngestConfig,
    LLMConfig,
    RetrievalConfig,
    SharedConfig,
)
from memory_agent.errors import ConfigError
from mesh.handles import validate_handle

__all__ = ["ENV_PREFIX", "Config", "load_config"]

ENV_PREFIX = "MEMORY_AGENT_"
_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("memory_agent_toml", default=None)


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
