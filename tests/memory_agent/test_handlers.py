"""Routing a message to a reply (memory_agent.handlers), without NATS: internal failures never leak."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from memory_agent.config import Config
from memory_agent.errors import IngestClosed, ReportRefused, StorageLost, StorageUnavailable
from memory_agent.handlers import Handlers
from memory_agent.types import InsertResult, NewEvent
from mesh import Message
from tests.conftest import NOW


def message(payload: str, *, content_type: str = "application/json", message_type: str = "session_open") -> Message:
    return Message(session="s-1", from_handle="asker", to_handle="memory", payload=payload,
                   content_type=content_type, message_type=message_type,  # type: ignore[arg-type]
                   trace_id="t-1", message_id="m-1", sent_at=NOW, sequence=1)


class BrokenAnswerer:
    """Answering fails with an exception whose text must never reach the caller."""

    async def answer(self, question: Any) -> Any:
        raise RuntimeError("secret detail: /var/lib/memory/memory.sqlite3 is locked")


async def no_stats() -> dict[str, Any]:
    return {"events": 0}


async def nothing_forgotten(count: int) -> None:
    raise AssertionError("nothing may be forgotten here")


def handlers(tmp_path: Any, answerer: Any = None, acceptor: Any = None) -> Handlers:
    config = Config(data_dir=tmp_path, ingest={"retry_max_delay": 0.05})
    return Handlers(config, acceptor=acceptor, answerer=answerer, eraser=None,  # type: ignore[arg-type]
                    stats=no_stats, on_forgotten=nothing_forgotten, clock=lambda: NOW)


class ScriptedAcceptor:
    """An Acceptor that fails with the given errors first, then accepts (id 7)."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def accept(self, event: NewEvent) -> InsertResult:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return InsertResult(7, duplicate=False)


REPORT = json.dumps({"event": "rollback", "service": "api"})


async def test_a_report_waits_while_storage_is_unavailable_and_is_stored_when_it_is_back(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="memory_agent.handlers")
    busy = StorageUnavailable("memory.sqlite3", "database is busy", since=NOW)
    acceptor = ScriptedAcceptor(busy, busy, busy)
    reply = await handlers(tmp_path, acceptor=acceptor).handle(message(REPORT))
    assert reply is not None and json.loads(reply.payload) == {"status": "stored", "id": 7, "duplicate": False}
    assert acceptor.calls == 4  # never an error reply: the report was kept and tried again
    # The outage is logged once, where it is noticed, not once per try: here only the report's one line.
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["report m-1 from @asker stored as #7 (trace t-1)"]


async def test_a_refused_report_gets_an_error_and_a_lost_store_answers_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    reply = await handlers(tmp_path, acceptor=ScriptedAcceptor(ReportRefused("e-12345678"))).handle(message(REPORT))
    assert reply is not None and "e-12345678" in json.loads(reply.payload)["error"]
    lost = StorageLost("memory.sqlite3", "the database file or its directory was deleted")
    gone = ScriptedAcceptor(*[lost] * 1000)
    with pytest.raises(TimeoutError):  # held, never "stored" for what is not on disk, until the drain cancels it
        await asyncio.wait_for(handlers(tmp_path, acceptor=gone).handle(message(REPORT)), 0.5)
    assert gone.calls >= 2
    with pytest.raises(IngestClosed):
        await handlers(tmp_path, acceptor=ScriptedAcceptor(IngestClosed())).handle(message(REPORT))


async def test_an_internal_failure_replies_with_an_error_id_that_the_log_carries(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.ERROR, logger="memory_agent.handlers")
    reply = await handlers(tmp_path, BrokenAnswerer()).handle(message("What happened?", content_type="text/plain"))
    assert reply is not None
    error = json.loads(reply.payload)["error"]
    assert "internal error while answering" in error and "secret" not in error and "RuntimeError" not in error
    error_id = error.split("error id ")[1].split(")")[0]
    assert error_id.startswith("e-") and any(error_id in r.getMessage() for r in caplog.records)


async def test_a_resolve_needs_no_reply(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert await handlers(tmp_path).handle(message("", message_type="session_resolve")) is None


@pytest.mark.parametrize(("payload", "says"), [
    (json.dumps({"op": "x" * 600_000}), "unknown op"),
    (json.dumps({"op": "forget", "k" * 600_000: 1}), "may not forget"),
])
async def test_operations_refused_with_a_short_error(tmp_path, payload: str, says: str) -> None:  # type: ignore[no-untyped-def]
    reply = await handlers(tmp_path).handle(message(payload))
    assert reply is not None
    error = json.loads(reply.payload)["error"]
    assert says in error and len(error) < 400


async def test_stats_is_served(tmp_path) -> None:  # type: ignore[no-untyped-def]
    reply = await handlers(tmp_path).handle(message(json.dumps({"op": "stats"})))
    assert reply is not None and json.loads(reply.payload) == {"events": 0}
