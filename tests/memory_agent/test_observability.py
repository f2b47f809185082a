"""Metrics, health, logs: scraped and read over HTTP from a real daemon (real NATS, SQLite, FAISS)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from memory_agent.config import Config
from memory_agent.errors import ConfigError, DataDirUnusable
from memory_agent.handlers import OPERATIONS
from memory_agent.inbox import InboxWatcher
from memory_agent.logs import configure_logging
from memory_agent.metrics import INTENTS
from mesh import Message
from mesh.server import NatsServer
from mesh.tasks import cancel_and_wait
from tests.conftest import NOW, CountingEmbedder

pytestmark = pytest.mark.timeout(120)
SECRET = "s3cr3t-payload-text"


async def get(url: str, **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        body = await response.read()
        content = json.loads(body) if response.content_type == "application/json" else body.decode()
        return response.status, content


async def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``{sample name: {sorted label items: value}}`` parsed by prometheus_client's own parser."""
    status, text = await get(f"{url}/metrics")
    assert status == 200
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


async def ask(agent: Any, payload: str, content_type: str = "application/json") -> Message:
    reply: Message = await agent.request("memory", payload, content_type=content_type, timeout=30)
    return reply


async def test_metrics_count_what_happened_and_parse(start_daemon, mesh_agent) -> None:  # type: ignore[no-untyped-def]
    daemon = await start_daemon()
    deploy = await mesh_agent("deploy")
    for n in range(3):
        await ask(deploy, json.dumps({"event": "rollback", "service": "api", "trace_id": "t-81", "n": n,
                                      "note": SECRET}))
    await ask(deploy, json.dumps({"service": "api"}))  # no "event": rejected
    [stored] = await daemon.store.get([1])
    again = Message(session=stored.session, from_handle="deploy", to_handle="memory", payload=json.dumps(stored.payload),
                    content_type="application/json", message_type="session_open", trace_id="t-81",
                    message_id=stored.message_id, sent_at=NOW, sequence=1)
    await daemon.handlers.handle(again)  # a redelivery: duplicate
    await ask(deploy, "Give me the timeline of trace t-81", "text/plain")
    await ask(deploy, json.dumps({"query": "What rollbacks happened this month?"}))
    await ask(deploy, "   ", "text/plain")  # empty question: rejected
    await ask(deploy, json.dumps({"op": "stats"}))

    m = await scrape(daemon.http_url)
    assert m["memory_reports_total"] == {(("result", "stored"),): 3.0, (("result", "duplicate"),): 1.0,
                                         (("result", "rejected"),): 1.0, (("result", "failed"),): 0.0}
    questions = m["memory_questions_total"]
    assert questions[(("intent", "timeline"), ("result", "answered"))] == 1.0
    assert questions[(("intent", "list"), ("result", "answered"))] == 1.0
    assert questions[(("intent", "none"), ("result", "rejected"))] == 1.0
    assert m["memory_question_duration_seconds_count"][(("intent", "timeline"),)] == 1.0
    assert m["memory_operations_total"][(("op", "stats"), ("result", "ok"))] == 1.0
    assert m["memory_events"][()] == 3.0 and m["memory_index_vectors"][()] == 3.0
    assert m["memory_embedding_backlog"][()] == 0.0 and m["memory_ready"][()] == 1.0
    assert m["memory_ingest_batch_size_sum"][()] == 3.0 and m["memory_ingest_batch_size_count"][()] >= 1
    assert m["memory_llm_requests_total"][(("result", "ok"),)] == 0.0
    [info] = m["memory_build_info"]
    assert dict(info) == {"version": "0.1.0", "model": "hashing-64", "index_kind": "flat"}
    assert "process_cpu_seconds_total" in m
    # No label carries a handle, trace id or message id: every label value comes from a small fixed set.
    allowed = {*INTENTS, *OPERATIONS, "stored", "duplicate", "rejected", "failed", "answered", "ok", "timeout",
               "error", "unknown", "0.1.0", "hashing-64", "flat"}
    for name, series in m.items():
        for labels in series:
            for key, value in labels:
                assert key == "le" or value in allowed, (name, key, value)
    # The inbox watcher polls JetStream in the background; its first reading comes at once.
    for _ in range(100):
        m = await scrape(daemon.http_url)
        if "memory_inbox_pending_messages" in m:
            break
        await asyncio.sleep(0.1)
    assert m["memory_inbox_pending_messages"][()] == 0.0 and m["memory_inbox_ack_pending_messages"][()] == 0.0


async def test_health_and_readiness_flip_when_nats_stops(nats_server: NatsServer, start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = await start_daemon()
    url = daemon.http_url
    status, body = await get(f"{url}/readyz")
    assert status == 200 and body["ready"] is True and body["phase"] == "serving"
    assert set(body["checks"]) == {"nats", "handle", "store", "index", "embedder"}
    assert all(check["ok"] for check in body["checks"].values())

    async def wait_ready(expected: bool) -> dict[str, Any]:
        for _ in range(300):
            status, body = await get(f"{url}/readyz")
            if body["ready"] is expected:
                assert status == (200 if expected else 503)
                return dict(body)
            await asyncio.sleep(0.1)
        raise AssertionError(f"/readyz never became ready={expected}: {body}")

    await asyncio.to_thread(nats_server.stop)
    body = await wait_ready(False)
    assert body["checks"]["nats"] == {"ok": False, "detail": "not connected (reconnecting)"}
    assert body["checks"]["store"]["ok"] and body["checks"]["index"]["ok"]
    status, alive = await get(f"{url}/healthz")
    assert status == 200 and alive["status"] == "alive"  # alive, only not ready
    assert (await scrape(url))["memory_ready"][()] == 0.0
    await asyncio.to_thread(nats_server.start)
    await wait_ready(True)


class GatedEmbedder(CountingEmbedder):
    """Blocks every encode call until ``gate`` is set: reports pile up waiting to be embedded."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.gate.wait(60)
        return super().encode(texts)


async def test_readiness_and_metrics_answer_while_reports_wait(start_daemon, mesh_agent) -> None:  # type: ignore[no-untyped-def]
    embedder = GatedEmbedder()
    daemon = await start_daemon(embedder=embedder)
    agent = await mesh_agent("loader")
    try:
        # Acknowledged once committed: every report is stored while the embedder holds its first batch.
        replies = await asyncio.gather(*(ask(agent, json.dumps({"event": "tick", "n": i})) for i in range(40)))
        assert all(json.loads(r.payload)["status"] == "stored" for r in replies)
        assert daemon.status().embedding_backlog > 0
        status, body = await get(f"{daemon.http_url}/readyz")
        assert status == 200 and body["ready"], body  # answered while the reports wait on the embedder
        assert "waiting" in body["checks"]["embedder"]["detail"]
        m = await scrape(daemon.http_url)
        assert m["memory_embedding_backlog"][()] > 0 and m["memory_events"][()] == 40.0
        assert m["memory_index_vectors"][()] < 40.0
    finally:
        embedder.gate.set()
    await daemon.wait_embedded(timeout=120)
    m = await scrape(daemon.http_url)
    assert m["memory_embedding_backlog"][()] == 0.0 and m["memory_index_vectors"][()] == 40.0


async def test_one_info_line_per_report_and_question_never_the_payload(start_daemon, mesh_agent, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    daemon = await start_daemon()
    deploy = await mesh_agent("deploy")
    reply = await ask(deploy, json.dumps({"event": "rollback", "trace_id": "t-9", "reason": SECRET,
                                          "occurred_at": "2026-11-21T09:00:00Z"}))
    stored_id = json.loads(reply.payload)["id"]
    await ask(deploy, json.dumps({"event": 5, "reason": SECRET}))
    await ask(deploy, json.dumps({"query": f"what rollbacks happened today {SECRET}"}))
    lines = [r for r in caplog.records if r.name == "memory_agent.handlers"]
    assert [getattr(r, "result", None) for r in lines] == ["stored", "rejected", "answered"]
    stored, rejected, answered = lines
    [row] = await daemon.store.get([stored_id])
    assert stored.getMessage().startswith(f"report {row.message_id} from @deploy stored as #{stored_id} (trace t-9)")
    assert stored.duration_ms >= 0 and stored.sender == "deploy"  # type: ignore[attr-defined]
    assert "rejected (ReportError on 'event')" in rejected.getMessage()
    assert answered.intent == "list" and answered.results == 1  # type: ignore[attr-defined]
    assert "answered: list, window 2026-11-21T00:00:00Z..2026-11-22T00:00:00Z, 1 result(s)" in answered.getMessage()
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_json_log_lines_carry_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("INFO", "json")
        logging.getLogger("memory_agent.handlers").info(
            "report %s stored", "m-1", extra={"message_id": "m-1", "sender": "deploy", "duration_ms": 1.5})
        logging.getLogger("transformers").info("Loading weights")  # held to WARNING
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    [line] = capsys.readouterr().err.strip().splitlines()
    record = json.loads(line)
    assert record["message"] == "report m-1 stored" and record["level"] == "INFO"
    assert record["logger"] == "memory_agent.handlers" and record["sender"] == "deploy"
    assert record["duration_ms"] == 1.5 and "time" in record


async def test_a_fresh_data_dir_logs_a_new_index_not_a_rebuild(start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = await start_daemon()
    assert daemon.index_report.startswith("new flat index for an empty store"), daemon.index_report


def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def test_http_port_in_use_is_one_clear_error(start_daemon) -> None:  # type: ignore[no-untyped-def]
    with _taken_port() as sock:
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"HTTP port {port} is in use .* --listen") as err:
            await start_daemon(http={"listen": f"127.0.0.1:{port}"})
    assert err.value.key == "http.listen" and "\n" not in str(err.value)


async def test_embedded_nats_port_in_use_names_the_port_and_the_flag(make_daemon) -> None:  # type: ignore[no-untyped-def]
    with _taken_port() as sock:
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"port {port} of the embedded nats-server is in use .* --port") as err:
            await make_daemon("", embedded_nats_port=port)
    assert "\n" not in str(err.value)


async def test_an_unusable_data_dir_is_one_clear_error(tmp_path, make_daemon) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataDirUnusable, match=r"data dir .*a-file/data cannot be used \(Not a directory\): .*--data-dir"):
        await make_daemon("nats://127.0.0.1:1", data_dir=blocker / "data")


@pytest.mark.parametrize("url", ["foo", "http://127.0.0.1:4222", "nats://:4222", "nats://host:99999",
                                 "nats://a:4222,localhost"])
def test_a_malformed_nats_url_is_refused_at_once(url: str) -> None:
    with pytest.raises(ValueError, match="is not a NATS URL"):
        Config(nats_url=url)


def test_token_sources_and_listen_values(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Config(http={"listen": "0.0.0.0:9464"}).http.page_needs_token
    assert not Config(http={"listen": "127.0.0.1:9464"}).http.page_needs_token
    assert not Config(http={"listen": "[::1]:9464"}).http.page_needs_token
    monkeypatch.setenv("PAGE_TOKEN", "tok-1")
    assert Config(http={"listen": "0.0.0.0:9464", "token_env": "PAGE_TOKEN"}).http.token() == "tok-1"
    with pytest.raises(ConfigError, match="MISSING_TOKEN, which is not set") as err:
        Config(http={"token_env": "MISSING_TOKEN"}).http.token()
    assert err.value.key == "http.token_env"
    with pytest.raises(ValueError, match="HOST:PORT"):
        Config(http={"listen": "9464"})


async def test_off_loopback_without_a_token_there_is_no_page_but_metrics(start_daemon, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING)
    daemon = await start_daemon(http={"listen": "0.0.0.0:0"})
    url = daemon.http_url.replace("0.0.0.0", "127.0.0.1")
    status, text = await get(f"{url}/")
    assert status == 403 and "timeline page is off" in text
    assert (await get(f"{url}/api/search"))[0] == 404
    assert (await get(f"{url}/readyz"))[0] == 200 and (await get(f"{url}/metrics"))[0] == 200
    assert any("the timeline page is off" in r.getMessage() for r in caplog.records)


async def test_the_token_guards_the_api_not_health(start_daemon, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PAGE_TOKEN", "tok-1")
    daemon = await start_daemon(http={"listen": "127.0.0.1:0", "token_env": "PAGE_TOKEN"})
    url = daemon.http_url
    assert (await get(f"{url}/api/search"))[0] == 401
    assert (await get(f"{url}/api/search?token=wrong"))[0] == 401
    assert (await get(f"{url}/api/search?token=tok-1"))[0] == 200
    assert (await get(f"{url}/api/search", Authorization="Bearer tok-1"))[0] == 200
    assert (await get(f"{url}/readyz"))[0] == 200 and (await get(f"{url}/metrics"))[0] == 200
    async with aiohttp.ClientSession() as session, session.post(f"{url}/api/search?token=tok-1") as response:
        assert response.status == 405  # read-only


async def test_llm_requests_are_counted_by_result(start_daemon, mesh_agent) -> None:  # type: ignore[no-untyped-def]
    from tests.memory_agent.fake_openai import fake_openai

    replies = iter(["It rolled back [#1].", "Nothing to cite here."])
    with fake_openai(lambda body: next(replies)) as (base_url, seen):
        daemon = await start_daemon(llm={"base_url": base_url, "model": "fake"})
        deploy = await mesh_agent("deploy")
        await ask(deploy, json.dumps({"event": "rollback", "occurred_at": "2026-11-21T09:00:00Z"}))
        for _ in range(2):
            await ask(deploy, "What rollbacks happened today?", "text/plain")
        m = await scrape(daemon.http_url)
    assert len(seen) == 2
    llm = m["memory_llm_requests_total"]
    assert llm[(("result", "ok"),)] == 1.0 and llm[(("result", "rejected"),)] == 1.0
    assert llm[(("result", "error"),)] == 0.0 and m["memory_llm_duration_seconds_count"][()] == 2.0


async def test_alive_but_not_ready_while_another_agent_holds_the_handle(nats_url, mesh_agent, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from memory_agent.daemon import MemoryDaemon

    holder = await mesh_agent("memory")  # a live predecessor: the daemon waits for the handle
    daemon = MemoryDaemon(Config(data_dir=tmp_path / "data", nats_url=nats_url), embedder=CountingEmbedder(),
                          clock=lambda: NOW)
    starting = asyncio.create_task(daemon.start())
    try:
        for _ in range(200):
            if daemon.http_url is not None and daemon.status().store_open:
                break
            await asyncio.sleep(0.05)
        url = daemon.http_url
        assert url is not None
        status, body = await get(f"{url}/readyz")
        assert status == 503 and body["phase"] == "starting"
        assert body["checks"]["handle"] == {"ok": False, "detail": "@memory not registered"}
        assert (await get(f"{url}/healthz"))[1]["phase"] == "starting"
        assert (await get(f"{url}/api/search"))[0] == 503  # the page waits for the daemon to serve
        await holder.close()  # the holder goes offline: the daemon claims the handle on its next try
        await asyncio.wait_for(starting, 30)
        status, body = await get(f"{url}/readyz")
        assert status == 200 and body["phase"] == "serving"
    finally:
        if not starting.done():
            starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await daemon.close()


async def test_the_inbox_watcher_closes_when_a_reply_comes_in_as_it_is_cancelled() -> None:
    """The hang seen under load: close() cancelled the watcher in the event-loop iteration in which its
    consumer_info reply came in; Python 3.11's wait_for (inside nats-py's request) returned the reply and lost
    the cancellation (CPython gh-86296), the loop went on to its next sleep, and close() waited forever."""
    class RacingWatcher(InboxWatcher):
        """Polls a reply the test controls, through wait_for as nats-py's request does."""

        def __init__(self) -> None:
            super().__init__("nats://127.0.0.1:1", handle="memory", auth=None, interval=3600.0)
            self.reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.polling = asyncio.Event()
            self.polls = 0

        async def _poll(self) -> None:
            self.polling.set()
            await asyncio.wait_for(self.reply, 5.0)
            self.polls += 1

    watcher = RacingWatcher()
    watcher.start()
    await watcher.polling.wait()
    watcher.reply.set_result(None)  # the reply arrives as close() cancels
    closing = asyncio.create_task(watcher.close())
    closed, _ = await asyncio.wait({closing}, timeout=5.0)  # never cancels close() (that would end the hang)
    if not closed:
        await cancel_and_wait(closing)  # clean up the hung close() before failing
    assert closed, "InboxWatcher.close() hung: the watcher's loop lost its cancellation and polled on"
    assert watcher.counts() is None
    if sys.version_info < (3, 12):  # the first cancellation was lost: the race was the real one
        assert watcher.polls == 1
