"""How bench/opsbench.py scores an answer: pure, no daemon, no model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def opsbench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("opsbench", BENCH / "opsbench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["opsbench"] = module
    spec.loader.exec_module(module)
    return module


def _question(opsbench: ModuleType, kind: str, gold: tuple[int, ...], **extra: object) -> object:
    from opsset import OpsQuestion

    return OpsQuestion("q1", kind, "text", "2026-11-26T15:30:00Z", gold, **extra)  # type: ignore[arg-type]


def test_a_count_is_read_from_total_or_the_first_line(opsbench: ModuleType) -> None:
    assert opsbench.stated_count({"answer": "3 events of type rollback last week.\n- ..."}) == 3
    assert opsbench.stated_count({"answer": "1 event of type deploy today."}) == 1
    assert opsbench.stated_count({"answer": "The 10 most relevant events in memory:"}) is None
    assert opsbench.stated_count({"answer": "No reports match.", "total": 0}) == 0


def test_exact_means_the_same_set_and_nothing_else(opsbench: ModuleType) -> None:
    q = _question(opsbench, "list", (4, 7))
    right = opsbench.score(q, opsbench.Outcome("q1", "list", "m", [7, 4], ["a", "b"]))
    extra = opsbench.score(q, opsbench.Outcome("q1", "list", "m", [7, 4, None], ["a", "b", "c"]))
    short = opsbench.score(q, opsbench.Outcome("q1", "list", "m", [7], ["a"]))
    assert (right.exact, extra.exact, short.exact) == (True, False, False)


def test_a_timeline_of_another_trace_is_counted(opsbench: ModuleType) -> None:
    q = _question(opsbench, "timeline", (1, 2), trace="t-9f3ac2")
    wrong = opsbench.score(q, opsbench.Outcome("q1", "timeline", "m", [5], ["t-9f3ac3"]))
    right = opsbench.score(q, opsbench.Outcome("q1", "timeline", "m", [1, 2], ["t-9f3ac2", "t-9f3ac2"]))
    assert wrong.other_trace and not wrong.exact
    assert right.exact and right.in_order and not right.other_trace


def test_ranked_questions_score_the_first_gold_position(opsbench: ModuleType) -> None:
    q = _question(opsbench, "paraphrase", (9, 3))
    outcome = opsbench.score(q, opsbench.Outcome("q1", "paraphrase", "m", [5, None, 3, 9], ["x"] * 4))
    assert outcome.rank == 3
    results = opsbench.Results([outcome])
    assert results.row("m", "paraphrase") == {"n": 1, "R@1": 0.0, "R@5": 1.0, "R@10": 1.0}


def test_no_answer_means_no_events(opsbench: ModuleType) -> None:
    q = _question(opsbench, "no_answer", (), spec={"absent_trace": "req_000000"})
    assert opsbench.score(q, opsbench.Outcome("q1", "no_answer", "m", [], [])).none
    answered = opsbench.score(q, opsbench.Outcome("q1", "no_answer", "m", [2], ["INC-1"]))
    assert not answered.none and answered.other_trace


def test_settings_are_toml_values(opsbench: ModuleType) -> None:
    parsed = opsbench.parse_settings(["retrieval.dense_weight=1.0", "retrieval.fusion=rrf", "index.kind=\"flat\""])
    assert parsed == {"retrieval": {"dense_weight": 1.0, "fusion": "rrf"}, "index": {"kind": "flat"}}
    with pytest.raises(SystemExit, match=r"section\.key=value"):
        opsbench.parse_settings(["dense_weight=1"])
