"""The daemon's configuration: one typed object, read from TOML, ``MEMORY_AGENT_*`` variables and flags.

Precedence, highest first: CLI flags (passed to :func:`load_config` as ``overrides``), environment
variables, the TOML file, the defaults. Top-level keys map to ``MEMORY_AGENT_<KEY>`` (e.g.
``MEMORY_AGENT_NATS_URL``); keys inside a table use a double underscore
(``MEMORY_AGENT_LLM__BASE_URL``), the convention of pydantic-settings, which does the reading.
``config.example.toml`` documents every key and mirrors these modules field for field:
:mod:`~memory_agent.config.settings` (the top-level keys and the reading),
:mod:`~memory_agent.config.sections` (the daemon's own parts) and :mod:`~memory_agent.config.network`
(``[nats]``, ``[security]``, ``[http]``).
"""

from memory_agent.config.network import (
    HttpConfig,
    NatsConfig,
    SecurityConfig,
    is_loopback,
    parse_listen,
    validate_nats_urls,
)
from memory_agent.config.sections import (
    ClusterConfig,
    EmbeddingConfig,
    IndexConfig,
    IngestConfig,
    LLMConfig,
    RetrievalConfig,
    SharedConfig,
)
from memory_agent.config.settings import ENV_PREFIX, Config, load_config

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
