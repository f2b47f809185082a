"""Pure parts of discovery and naming: handle validation, Manifest dicts, tailbus ranking."""

from __future__ import annotations

import pytest

from mesh import CommandSpec, InvalidHandle, Manifest, validate_handle
from mesh.registry import find_matches


@pytest.mark.parametrize("handle", ["a", "memory", "cli-0a1b2c3d", "deploy_bot", "a" + "b" * 62, "x9-_"])
def test_valid_handles(handle: str) -> None:
    assert validate_handle(handle) == handle


@pytest.mark.parametrize(
    "handle", ["", "A", "Memory", "9lives", "-x", "_x", "a" + "b" * 63, "has space", "dot.ted", "star*",
               "gt>", "ümlaut", "new\nline"],
)
def test_invalid_handles_are_refused(handle: str) -> None:
    with pytest.raises(InvalidHandle) as info:
        validate_handle(handle)
    assert info.value.handle == handle


def test_manifest_dict_round_trip() -> None:
    m = Manifest(
        description="remembers", commands=(CommandSpec("ask", "ask a question", '{"type":"object"}'),),
        tags=("memory",), version="1.2", capabilities=("recall",), domains=("ops",),
        input_types=("text/plain",), output_types=("application/json",),
    )
    assert Manifest.from_dict(m.to_dict()) == m
    assert Manifest().to_dict() == {}
    assert Manifest.from_dict(None) is None


def test_manifest_from_malformed_dict_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        Manifest.from_dict({"tags": "not-a-list"})


ENTRIES = {
    "alpha": (Manifest(capabilities=("deploy", "rollback"), domains=("ops",), tags=("k8s",), version="2",
                       commands=(CommandSpec("ship"),)), True),
    "beta": (Manifest(capabilities=("deploy",), domains=("ops",), tags=("k8s", "aws")), False),
    "gamma": (Manifest(capabilities=("deploy",), tags=("aws",)), True),
    "delta": (None, True),
}


def test_ranking_scores_and_reasons_follow_tailbus() -> None:
    matches = find_matches(ENTRIES, capabilities=["deploy"], domains=["ops"], tags=["k8s"])
    assert [m.handle for m in matches] == ["alpha", "beta"]
    assert matches[0].score == 100 + 30 + 10
    assert matches[0].match_reasons == ("capability:deploy", "domain:ops", "tag:k8s")
    assert matches[1].online is False


def test_ranking_requires_every_constraint_and_sorts_ties_by_handle() -> None:
    assert [m.handle for m in find_matches(ENTRIES, capabilities=["deploy"])] == ["alpha", "beta", "gamma"]
    assert [m.handle for m in find_matches(ENTRIES, capabilities=["deploy", "rollback"])] == ["alpha"]
    only = find_matches(ENTRIES, command_name="ship", version="2")
    assert [(m.handle, m.score) for m in only] == [("alpha", 30)]
    assert find_matches(ENTRIES, version="3") == []


def test_ranking_without_constraints_lists_all_with_zero_score_and_limit() -> None:
    everything = find_matches(ENTRIES)
    assert [m.handle for m in everything] == ["alpha", "beta", "delta", "gamma"]
    assert all(m.score == 0 for m in everything)
    assert [m.handle for m in find_matches(ENTRIES, limit=2)] == ["alpha", "beta"]
