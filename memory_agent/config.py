"""The daemon's configuration: one typed object, read from TOML, ``MEMORY_AGENT_*`` variables and flags.

Precedence, highest first: CLI flags (passed to :func:`load_config` as ``overrides``), environment
variables, the TOML file, the defaults below. Top-level keys map to ``MEMORY_AGENT_<KEY>`` (e.g.
``MEMORY_AGENT_NATS_URL``); keys inside a table use a double underscore
(``MEMORY_AGENT_LLM__BASE_URL``), the convention of pydantic-settings, which does the reading.
``config.example.toml`` documents every key and mirrors this module field for field.
"""

from __future__ import annotations

import contextvars
import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from memory_agent.errors import ConfigError

ENV_PREFIX = "MEMORY_AGENT_"
_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("memory_agent_toml", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddingConfig(_Section):
    """How reports and questions are embedded."""

    model: str = ""
    """sentence-transformers model name or local path; empty = bundled all-MiniLM-L6-v2 (384 dims)."""
    device: str = "cpu"
    max_batch: int = Field(default=128, ge=1, le=4096)
    """Most texts in one encode call; concurrent reports are coalesced up to this many."""


class RetrievalConfig(_Section):
    """Hybrid retrieval: FAISS (dense) and FTS5 BM25 (sparse) fused by reciprocal-rank fusion."""

    rrf_k: int = Field(default=60, ge=1)
    """The k of RRF, score = sum 1/(k + rank); 60 is the value of Cormack, Clarke and Buettcher (SIGIR 2009)."""
    candidates: int = Field(default=100, ge=1, le=10_000)
    """How many hits each retriever contributes before fusion."""
    default_limit: int = Field(default=20, ge=1, le=10_000)
    """Events returned by a ranked search when the question gives no ``limit``."""
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
    index_save_interval: float = Field(default=10.0, gt=0)
    """Seconds between saves of the FAISS file while new vectors arrive (it is also saved on shutdown)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    embedding: EmbeddingConfig = EmbeddingConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    llm: LLMConfig = LLMConfig()

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
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", value):
            raise ValueError(f"invalid handle {value!r}: lower-case letters, digits, '_' and '-', starting with a letter")
        return value

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
