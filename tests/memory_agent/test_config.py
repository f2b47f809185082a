"""Config: TOML < MEMORY_AGENT_* environment < flags, and config.example.toml mirrors the Config object."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from memory_agent.config import Config, load_config
from memory_agent.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


def _keys(model: BaseModel, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for name in type(model).model_fields:
        value = getattr(model, name)
        out |= _keys(value, f"{prefix}{name}.") if isinstance(value, BaseModel) else {prefix + name}
    return out


def _toml_keys(table: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in table.items():
        out |= _toml_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return out


def test_example_documents_every_key_with_its_default() -> None:
    table = tomllib.loads(EXAMPLE.read_text())
    assert _toml_keys(table) == _keys(Config())
    assert load_config(EXAMPLE) == Config()


def test_precedence_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text('nats_url = "nats://file:4222"\ntimezone = "Europe/Berlin"\n[llm]\nmodel = "m"\n')
    monkeypatch.setenv("MEMORY_AGENT_NATS_URL", "nats://env:4222")
    monkeypatch.setenv("MEMORY_AGENT_LLM__BASE_URL", "http://llm/v1")
    cfg = load_config(path, data_dir=tmp_path / "flag", nats_url=None)
    assert cfg.nats_url == "nats://env:4222"  # env beats the file; an unset flag changes nothing
    assert cfg.timezone == "Europe/Berlin" and cfg.llm.model == "m" and cfg.llm.enabled
    assert cfg.data_dir == tmp_path / "flag"
    assert load_config(path, nats_url="nats://flag:4222").nats_url == "nats://flag:4222"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("bogus = 1\n", "bogus"),
        ('timezone = "Mars/Olympus"\n', "unknown time zone"),
        ('handle = "Memory!"\n', "invalid handle"),
        ("[retrieval]\nrrf_k = 0\n", "retrieval.rrf_k"),
        ("not toml at all [", "cannot read config"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        load_config(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
