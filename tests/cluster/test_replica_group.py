"""@memory replicas sharing the handle ``memory`` (issue 15, items 3 and 5) on a real nats-server: with
``[cluster] replica_key`` every replica joins the handle's replica group, each report or question reaches
one of them, every report is stored once on both, both answer; a replica with another key, or none, is
refused the handle with an error that says what to set; one replica closing leaves @memory serving."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter

import memory_agent.daemon as daemon_module
from memory_agent.cluster.replica import replica_id
from memory_agent.config import Config, load_config
from memory_agent.daemon import MemoryDaemon
from memory_agent.errors import ConfigError
from memory_agent.types import Filters
from mesh import AsyncAgent, HandleTaken
from tests.conftest import NOW

pytestmark = pytest.mark.timeout(180)
CI = os.environ.get("CI") == "true"
N = 16 if CI else 40
KEY = "memory-replica-group-secret-0123456789"


def grouped(key: str = KEY, **cluster: Any) -> dict[str, Any]:
    return {"cluster": {"enabled": True, "stream_replicas": 1, "replica_key": key, **cluster},
            "security": {"admins": ["ops"]}}


async def send(agent: AsyncAgent, payload: dict[str, Any]) -> dict[str, Any]:
    reply = await agent.request("memory", json.dumps(payload), content_type="application/json", timeout=30)
    assert reply.from_handle == "memory"
    return dict(json.loads(reply.payload))


def rollback(i: int) -> dict[str, Any]:
    return {"event": "rollback", "service": f"svc-{i % 3}", "reason": f"error spike {i}", "trace_id": f"t-{i}",
            "occurred_at": NOW - 3600 + i}


async def rows(daemon: MemoryDaemon) -> list[tuple[int, str]]:
    return [(e.id, e.message_id) for e in await daemon.store.select(None, Filters())]


async def applied(daemon: MemoryDaemon, seq: int) -> None:
    replica = daemon._applier
    assert replica is not None
    assert await replica.wait_applied(seq, 60), f"{daemon.replica_id} applied {replica.applied_seq}, not {seq}"


def answered(counter: Counter) -> float:
    """Questions a daemon answered (its own metrics registry)."""
    return sum(s.value for metric in counter.collect() for s in metric.samples
               if s.name.endswith("_total") and s.labels.get("result") == "answered")


async def test_two_replicas_on_memory_both_answer_and_store_every_report_once(
        nats_url, make_daemon, mesh_agent, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = await make_daemon(nats_url, data_dir=tmp_path / "a", **grouped())
    b = await make_daemon(nats_url, data_dir=tmp_path / "b", **grouped())
    assert a.config.handle == b.config.handle == "memory"
    assert a.replica_id and b.replica_id and a.replica_id != b.replica_id  # the default differs by data_dir

    deploy = await mesh_agent("deploy")
    replies = [await send(deploy, rollback(i)) for i in range(N)]
    assert all(r["status"] == "stored" and r["duplicate"] is False for r in replies), replies
    ids = [r["id"] for r in replies]
    assert ids == sorted(ids) and len(set(ids)) == N
    accepted = [d._stream_acceptor.published for d in (a, b)]  # type: ignore[union-attr]
    assert sum(accepted) == N and min(accepted) > 0, accepted  # the reports were spread over both replicas
    for d in (a, b):
        await applied(d, ids[-1])
    assert await rows(a) == await rows(b) and [i for i, _ in await rows(a)] == ids  # once on each, same ids

    asker = await mesh_agent("asker")
    for _ in range(N):
        answer = await send(asker, {"query": "How many rollbacks happened today?", "min_seq": ids[-1]})
        assert answer["caught_up"] is True and f"{N} " in answer["answer"], answer
    per_replica = [answered(d.metrics.questions) for d in (a, b)]
    assert sum(per_replica) == N and min(per_replica) > 0, per_replica  # both answered questions

    listed = [e for e in await asker.list_handles() if e.handle == "memory"]
    assert len(listed) == 1 and listed[0].replicas == tuple(sorted((a.replica_id, b.replica_id)))
    stats = await send(asker, {"op": "stats"})
    assert stats["cluster"]["replica_id"] in (a.replica_id, b.replica_id) and stats["events"] == N

    await a.close()  # one replica goes: @memory keeps serving through the other
    later = [await send(deploy, rollback(i)) for i in range(N, N + 4)]
    assert all(r["status"] == "stored" for r in later)
    await applied(b, later[-1]["id"])
    assert await b.store.count(None, Filters()) == N + 4
    assert (await asker.introspect("memory")).replicas == (b.replica_id,)


async def test_a_replica_with_another_key_or_none_is_refused_saying_what_to_set(
        nats_url, make_daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    await make_daemon(nats_url, data_dir=tmp_path / "a", **grouped())
    monkeypatch.setattr(daemon_module, "CLAIM_WAIT", 0.5)  # no crashed predecessor to wait for here
    with pytest.raises(HandleTaken, match=r"same \[cluster\] replica_key \(MEMORY_AGENT_CLUSTER__REPLICA_KEY\)"):
        await make_daemon(nats_url, data_dir=tmp_path / "b", **grouped("another-secret-of-this-length"))
    with pytest.raises(HandleTaken, match=r"to join it set \[cluster\] enabled = true and its replica_key"):
        await make_daemon(nats_url, data_dir=tmp_path / "c")
    with pytest.raises(HandleTaken, match=r"distinct \[cluster\] replica_id"):
        await make_daemon(nats_url, data_dir=tmp_path / "d", **grouped(replica_id=_id_of(tmp_path / "a")))


def _id_of(data_dir: Path) -> str:
    return replica_id(Config(data_dir=data_dir))


def test_replica_key_is_checked_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config(**grouped())
    assert KEY not in repr(cfg) and KEY not in str(cfg.model_dump())
    with pytest.raises(ConfigError, match=r"cluster\.enabled = true"):
        load_config(None, cluster={"replica_key": KEY})
    with pytest.raises(ConfigError, match="at least 16"):
        load_config(None, cluster={"enabled": True, "replica_key": "short"})
    monkeypatch.setenv("MEMORY_AGENT_CLUSTER__ENABLED", "true")
    monkeypatch.setenv("MEMORY_AGENT_CLUSTER__REPLICA_KEY", KEY)
    assert load_config(None).cluster.replica_key.get_secret_value() == KEY
