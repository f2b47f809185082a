"""Keys, scopes and patterns map to NATS subjects reversibly, and AgentField's globs narrow on the server as
far as subjects allow (pure: no server)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.js.kv import VALID_KEY_RE

from memory_agent.errors import SharedMemoryError, ValueTooLarge
from memory_agent.shared.keys import (
    Address,
    KeyPattern,
    change_filters,
    decode_token,
    encode_token,
    parse_change_subject,
    parse_kv_key,
    subject_covers,
)

printable = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)
keys = st.lists(printable.filter(lambda t: "." not in t), min_size=1, max_size=4).map(".".join)


@given(text=printable)
def test_a_token_round_trips_and_holds_only_what_a_kv_key_allows(text: str) -> None:
    token = encode_token(text)
    assert decode_token(token) == text
    assert "." not in token and "*" not in token and ">" not in token
    assert VALID_KEY_RE.fullmatch(token)


@given(key=keys, scope_id=printable, scope=st.sampled_from(["workflow", "session", "actor"]))
def test_an_address_round_trips_through_its_kv_key_and_change_subject(key: str, scope_id: str, scope: str) -> None:
    if len(key.encode()) > 512 or len(scope_id) > 128:
        return
    address = Address.of(scope, scope_id, key)
    assert parse_kv_key(address.kv_key) == address
    assert parse_change_subject(address.change_subject) == address
    assert VALID_KEY_RE.fullmatch(address.kv_key)
    assert address.kv_key.count(".") == 2 + key.count(".")  # the key's dots are subject tokens


def test_examples_of_the_mapping() -> None:
    assert Address.of("workflow", "t-81", "ticket:7:status").kv_key == "workflow.t-81.ticket=3A7=3Astatus"
    assert Address.of("actor", "deploy", "user_42.preferences").state_subject == (
        "$KV.memory_state.actor.deploy.user_42.preferences")
    assert Address.of("global", None, "config").change_subject == "memory.change.global._.config"
    assert Address.of("session", "s.1 x", "a=b").kv_key == "session.s=2E1=20x.a=3Db"


@pytest.mark.parametrize(("key", "problem"), [
    ("", "is empty"),
    (".lead", "empty part between dots"),
    ("trail.", "empty part between dots"),
    ("a..b", "empty part between dots"),
    ("tab\there", "control character"),
    ("bad\ud800", "not valid Unicode"),
    (7, "must be a string"),
])
def test_keys_that_cannot_be_stored_are_refused_with_the_reason(key: object, problem: str) -> None:
    with pytest.raises(SharedMemoryError, match=problem) as refused:
        Address.of("global", None, key)
    assert refused.value.field == "key"


def test_a_key_over_512_bytes_is_too_large() -> None:
    Address.of("global", None, "é" * 256)  # 512 bytes: fits
    with pytest.raises(ValueTooLarge) as refused:
        Address.of("global", None, "é" * 256 + "x")
    assert (refused.value.size, refused.value.limit) == (513, 512)


def test_scopes_and_scope_ids_are_checked() -> None:
    with pytest.raises(SharedMemoryError, match="must be one of workflow, session, actor, global"):
        Address.of("team", "x", "k")
    with pytest.raises(SharedMemoryError, match="global scope has no"):
        Address.of("global", "x", "k")
    with pytest.raises(SharedMemoryError, match="is empty"):
        Address.of("session", "", "k")
    with pytest.raises(SharedMemoryError, match="at most 128"):
        Address.of("workflow", "t" * 129, "k")


@pytest.mark.parametrize(("pattern", "matching", "other"), [
    ("customer_*", ["customer_1", "customer_", "customer_a.b"], ["customer", "xcustomer_1"]),
    ("ticket:*:sentiment", ["ticket:1:sentiment", "ticket:a:b:sentiment"], ["ticket:1:status", "ticket:sentiment"]),
    ("user_*.preferences", ["user_42.preferences", "user_.preferences", "user_1.x.preferences"],
     ["user_42.settings", "user_42preferences"]),
    ("exact.key", ["exact.key"], ["exact.keys", "exactxkey"]),
])
def test_agentfield_globs_match_like_agentfield(pattern: str, matching: list[str], other: list[str]) -> None:
    compiled = KeyPattern(pattern)
    assert all(compiled.matches(k) for k in matching)
    assert not any(compiled.matches(k) for k in other)


def test_patterns_narrow_on_the_server_by_their_literal_leading_tokens() -> None:
    assert KeyPattern("customer_*").key_filter() == ">"
    assert KeyPattern("user_*.preferences").key_filter() == ">"
    assert KeyPattern("orders.eu.*").key_filter() == "orders.eu.>"
    assert KeyPattern("orders.e*").key_filter() == "orders.>"
    assert KeyPattern("ticket:7").key_filter() == "ticket=3A7"
    assert change_filters([KeyPattern("orders.*")], scope="workflow", scope_id="t-1") == [
        "memory.change.workflow.t-1.orders.>"]
    assert change_filters([KeyPattern("orders.*")], scope=None, scope_id=None) == ["memory.change.*.*.orders.>"]
    # A filter another one covers is dropped, so no event arrives twice.
    assert change_filters([KeyPattern("orders.*"), KeyPattern("orders.eu.*"), KeyPattern("x")],
                          scope="global", scope_id="") == ["memory.change.global._.orders.>",
                                                           "memory.change.global._.x"]
    assert change_filters([KeyPattern("user_*.preferences"), KeyPattern("user_*.settings")],
                          scope=None, scope_id=None) == ["memory.change.*.*.>"]


@pytest.mark.parametrize("pattern", ["", "a..*", ".*", "*."])
def test_patterns_no_key_can_match_are_refused(pattern: str) -> None:
    with pytest.raises(SharedMemoryError):
        KeyPattern(pattern)


@pytest.mark.parametrize(("wide", "narrow", "covers"), [
    ("a.>", "a.b", True), ("a.>", "a.b.>", True), ("a.>", "a", False), ("a.*", "a.b", True),
    ("a.*", "a.b.c", False), ("a.b", "a.*", False), ("*.*.>", "workflow.t.x", True), ("a.b", "a.b", True),
])
def test_subject_covers(wide: str, narrow: str, covers: bool) -> None:
    assert subject_covers(wide, narrow) is covers
