"""The shared-memory wire contract without a server: requests are checked field by field, errors travel as
codes and come back as the same exception, values and embeddings refuse what JSON or cosine cannot hold."""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest

from memory_agent.errors import (
    DimensionMismatch,
    SharedAccessDenied,
    SharedMemoryError,
    SharedMemoryUnavailable,
    ValueTooLarge,
    VersionConflict,
)
from memory_agent.shared.context import format_context
from memory_agent.shared.requests import parse_embedding, parse_kv, parse_vector
from memory_agent.shared.wire import ChangeEvent, Entry, encode_value, error_payload, raise_for_reply


def test_a_set_request_is_read_with_its_defaults_left_open() -> None:
    request = parse_kv("kv.set", {"key": "ticket:1", "value": {"status": "open"}, "ttl_s": 1.2})
    assert (request.scope, request.scope_id, request.ttl_s, request.if_version) == (None, None, 2, None)
    assert request.encoded == b'{"status":"open"}'


@pytest.mark.parametrize(("op", "args", "field", "problem"), [
    ("kv.set", {"key": "k"}, "value", "needs \"value\""),
    ("kv.set", {"key": "k", "value": 1, "colour": "red"}, "colour", "does not take colour"),
    ("kv.set", {"key": "k", "value": 1, "ttl_s": 0.5}, "ttl_s", "from 1 to"),
    ("kv.set", {"key": "k", "value": 1, "ttl_s": True}, "ttl_s", "finite number"),
    ("kv.set", {"key": "k", "value": 1, "if_version": -1}, "if_version", "whole number"),
    ("kv.set", {"key": "k", "value": 1, "scope_id": "t-1"}, "scope_id", "needs a \"scope\""),
    ("kv.set", {"key": "k", "value": 1, "scope": "room"}, "scope", "must be one of"),
    ("kv.get", {"key": "k", "scope": "actor", "session_id": "s"}, "session_id", "hierarchical get"),
    ("kv.list", {"limit": 0}, "limit", "from 1 to 1000"),
    ("kv.history", {"key": "k", "limit": 5000}, "limit", "from 1 to 1000"),
    ("kv.delete", {"key": ""}, "key", "is empty"),
])
def test_bad_kv_requests_name_the_field(op: str, args: dict[str, object], field: str, problem: str) -> None:
    with pytest.raises(SharedMemoryError, match=problem) as refused:
        parse_kv(op, args)
    assert refused.value.field == field


@pytest.mark.parametrize("value", [math.nan, math.inf, {"x": [1, -math.inf]}, {1j}, object()])
def test_values_json_cannot_hold_are_refused(value: object) -> None:
    with pytest.raises(SharedMemoryError, match="cannot be stored as JSON"):
        encode_value(value)


def test_embeddings_are_read_normalised_from_a_list_or_base64() -> None:
    from_list = parse_embedding([3, 4])
    from_b64 = parse_embedding({"base64": base64.b64encode(np.array([3, 4], "<f4").tobytes()).decode()})
    assert np.allclose(from_list, [0.6, 0.8]) and np.array_equal(from_list, from_b64)
    assert from_list.dtype == np.float32


@pytest.mark.parametrize(("embedding", "problem"), [
    ("0.1,0.2", "must be a list of numbers"),
    ([0.1, "x"], "numbers only"),
    ([True, 0.5], "numbers only"),
    ([[0.1], [0.2]], "numbers only"),
    ([], "has 0 values"),
    ([0.1] * 4097, "has 4097 values"),
    ([0.0, 0.0], "all zeros"),
    ([1e39, 1.0], "NaN or infinite"),
    ({"base64": "!!"}, "not valid base64"),
    ({"base64": base64.b64encode(b"abc").decode()}, "not a whole number of float32"),
    ({"base64": base64.b64encode(np.array([np.nan], "<f4").tobytes()).decode()}, "NaN or infinite"),
    ({"values": [1.0]}, "base64"),
])
def test_bad_embeddings_are_refused(embedding: object, problem: str) -> None:
    with pytest.raises(SharedMemoryError, match=problem):
        parse_embedding(embedding)


@pytest.mark.parametrize(("args", "problem"), [
    ({"embedding": [1.0], "top_k": 0}, "top_k"),
    ({"embedding": [1.0], "top_k": 1001}, "top_k"),
    ({"embedding": [1.0], "min_score": 2}, "from -1 to 1"),
    ({"embedding": [1.0], "filter": ["a"]}, "JSON object"),
    ({"embedding": [1.0], "namespace": "../etc"}, "namespace"),
    ({"top_k": 3}, "needs \"embedding\""),
])
def test_bad_vector_searches_are_refused(args: dict[str, object], problem: str) -> None:
    with pytest.raises(SharedMemoryError, match=problem):
        parse_vector("vector.search", args)


def test_metadata_over_64_kib_is_too_large() -> None:
    with pytest.raises(ValueTooLarge) as refused:
        parse_vector("vector.set", {"key": "k", "embedding": [1.0], "metadata": {"x": "y" * 70_000}})
    assert refused.value.limit == 64 * 1024


@pytest.mark.parametrize("error", [
    VersionConflict("at 7", key="k", expected=3, current=7),
    SharedAccessDenied("no", handle="deploy", scope="actor", scope_id="monitor"),
    ValueTooLarge("big", field="value", size=300_000, limit=262_144),
    DimensionMismatch("dims", namespace="docs", expected=384, got=128),
    SharedMemoryUnavailable("down"),
    SharedMemoryError("bad", field="key"),
])
def test_an_error_reply_raises_the_same_error_with_its_attributes(error: SharedMemoryError) -> None:
    with pytest.raises(type(error)) as raised:
        raise_for_reply(error_payload(error))
    assert str(raised.value) == str(error) and raised.value.code == error.code
    assert {k: v for k, v in vars(raised.value).items()} == {k: v for k, v in vars(error).items()}


def test_a_reply_without_a_code_still_raises() -> None:
    with pytest.raises(SharedMemoryError, match="internal error") as raised:
        raise_for_reply({"status": "error", "error": "internal error while serving kv.set (error id e-1)"})
    assert raised.value.code == "error"
    assert raise_for_reply({"status": "ok", "version": 1}) == {"status": "ok", "version": 1}


def test_values_and_events_round_trip() -> None:
    entry = Entry(scope="workflow", scope_id="t-1", key="k", value=[1, {"a": None}], version=4, updated_at=1.5,
                  updated_by="deploy", expires_at=61.5)
    assert Entry.from_json(entry.to_json()) == entry
    event = ChangeEvent(key="k", scope="actor", scope_id="deploy", action="expire", data=None, previous_data=3,
                        version=9, at=2.0, by="")
    assert ChangeEvent.from_json(event.to_json(), seq=12) == ChangeEvent(**{**event.to_json(), "seq": 12})
    with pytest.raises(ValueError):
        ChangeEvent.from_json({**event.to_json(), "action": "rename"})


def _event(i: int, text: str) -> dict[str, object]:
    return {"id": i, "occurred_at": f"2026-11-21T10:0{i}:00Z", "from_handle": "deploy", "trace_id": "t-1",
            "event": "rollback", "payload": {"event": "rollback", "reason": text}}


@pytest.mark.parametrize("max_chars", [1, 40, 90, 150, 400, 10_000])
def test_the_working_context_never_exceeds_its_budget(max_chars: int) -> None:
    latest = [_event(i, f"reason number {i} " * 5) for i in range(1, 5)]
    relevant = [_event(2, "dup"), _event(9, "the pool was lowered to 5")]
    text = format_context(latest, relevant, max_chars=max_chars, query="why")
    assert len(text) <= max_chars
    if max_chars == 10_000:
        lines = text.splitlines()
        assert lines[0] == "Latest reports:" and lines[5].startswith("Reports relevant to 'why'")
        assert sum("(trace t-1)" in line for line in lines) == 5  # #2 listed once
        assert "the pool was lowered to 5" in lines[-1]
    if max_chars == 1:
        assert text == ""
