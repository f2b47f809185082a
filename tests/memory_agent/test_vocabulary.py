"""The vocabulary index: names added one by one are found in questions, nothing is rebuilt (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from memory_agent.query.understand import understand
from memory_agent.query.vocabulary import MAX_NAME_CHARS, MAX_NAME_TOKENS, VocabularyIndex
from memory_agent.types import Understanding, Vocabulary

NOW = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)


def ask(question: str, index: VocabularyIndex) -> Understanding:
    return understand(question, now=NOW, tz=ZoneInfo("UTC"), vocabulary=index)


def test_names_added_later_are_recognised_and_counted_once() -> None:
    index = VocabularyIndex.build(Vocabulary(events=frozenset({"rollback"})))
    assert ask("How many cache flushes happened?", index).filters.event == ()
    assert index.add(events=["cache_flush"], services=["edge-proxy", None], handles=["janitor"]) == 3
    assert index.add(events=["cache_flush", "rollback"], services=["edge-proxy"]) == 0  # nothing new
    assert len(index) == 4
    u = ask("How many cache flushes did janitor report on edge-proxy?", index)
    assert u.filters.event == ("cache_flush",)
    assert u.filters.service == ("edge-proxy",)
    assert u.filters.from_handle == ("janitor",)


def test_many_names_sharing_parts_do_not_confuse_or_slow_the_lookup() -> None:
    index = VocabularyIndex()
    # 20,000 event types and services that share their first words: every lookup is still one key.
    index.add(events=[f"custom_event_{i}" for i in range(20_000)],
              services=[f"svc-{i}" for i in range(20_000)])
    u = ask("How many custom event 12345 reports from svc-777 were there?", index)
    assert u.filters.event == ("custom_event_12345",)
    assert u.filters.service == ("svc-777",)
    assert ask("How many custom events were there?", index).filters.event == ()


def test_multi_part_event_types_in_any_order_and_compounds() -> None:
    index = VocabularyIndex.build(Vocabulary(events=frozenset({"test_quarantined", "rollback", "incident_opened"})))
    assert ask("Which tests were quarantined?", index).filters.event == ("test_quarantined",)
    assert ask("What was rolled back?", index).filters.event == ("rollback",)
    assert ask("Which incidents were opened this week?", index).filters.event == ("incident_opened",)


def test_overlong_names_are_not_indexed() -> None:
    index = VocabularyIndex()
    long_service = "x" * (MAX_NAME_CHARS + 1)
    many_tokens = "-".join(["part"] * (MAX_NAME_TOKENS + 1))
    assert index.add(services=[long_service, many_tokens], events=["e" * (MAX_NAME_CHARS + 1)]) == 0
    assert len(index) == 0
    assert index.add(services=["a" * MAX_NAME_CHARS]) == 1


def test_a_plain_vocabulary_is_indexed_on_the_fly() -> None:
    u = understand("How many rollbacks did monitor report?", now=NOW, tz=ZoneInfo("UTC"),
                   vocabulary=Vocabulary(events=frozenset({"rollback"}), handles=frozenset({"monitor"})))
    assert u.filters.event == ("rollback",) and u.filters.from_handle == ("monitor",)
