"""How the ``memory-agent`` commands log: one line per record on stderr, as text or as JSON.

Only the CLI calls :func:`configure_logging` (library code never configures logging). Records that
carry structured fields (``extra={"message_id": ..., "duration_ms": ...}``, see
:mod:`memory_agent.handlers`) show them in the text of the line and, with ``--log-format json``, as keys
of the JSON object as well (python-json-logger writes them). Third-party libraries that narrate model
loading or HTTP requests at INFO are held to WARNING, and Hugging Face progress bars are switched off
(:mod:`memory_agent.embedding.base`), so a daemon's log holds what the daemon did.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

__all__ = ["LOG_FORMATS", "QUIET_LOGGERS", "LogFormat", "configure_logging"]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

#: Libraries whose INFO lines (model files opened, each HTTP request) say nothing an operator needs.
QUIET_LOGGERS = ("sentence_transformers", "transformers", "huggingface_hub", "httpx", "httpcore",
                 "aiohttp.access", "mcp", "openai", "faiss")

_TEXT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str = "INFO", fmt: LogFormat = "text") -> None:
    """Send every record at ``level`` or above to stderr, as text lines or JSON objects (``fmt``).

    JSON objects carry ``time`` (ISO-8601), ``level``, ``logger``, ``message`` and the record's
    structured fields. Replaces handlers set before (so calling it twice does not double lines).
    """
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
            json_ensure_ascii=False,
        ))
    else:
        handler.setFormatter(logging.Formatter(_TEXT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
