"""`memory-agent mcp` end to end: the mcp client library starts it over stdio, lists and calls its tools,
and they reach a real daemon on a real nats-server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

mcp = pytest.importorskip("mcp", reason="the MCP server needs the mcp package: pip install -e '.[dev]'")
from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


async def test_mcp_tools_listed_and_called_against_a_daemon(start_daemon, nats_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    daemon = await start_daemon()
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "memory_agent", "mcp", "--nats-url", nats_url, "--as", "coder"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}, cwd=str(ROOT))
    errlog = tmp_path / "mcp-stderr.log"
    with open(errlog, "w") as err:
        async with stdio_client(params, errlog=err) as (read, write), ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.server_info.name == "memory"
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert set(tools) == {"report", "ask", "search", "timeline", "kv_get", "kv_set"}
            assert {"event", "service", "trace_id", "occurred_at", "details"} <= set(tools["report"].input_schema["properties"])

            stored = await session.call_tool("report", {
                "event": "rollback", "service": "api-gateway", "trace_id": "t-81",
                "occurred_at": "2026-11-20T14:05:00Z", "details": {"reason": "error rate spike"}})
            assert not stored.is_error, stored.content
            assert stored.structured_content["status"] == "stored"
            [event] = await daemon.store.get([stored.structured_content["id"]])
            assert event.from_handle == "coder" and event.trace_id == "t-81"
            assert event.payload == {"reason": "error rate spike", "event": "rollback", "service": "api-gateway",
                                     "trace_id": "t-81", "occurred_at": "2026-11-20T14:05:00Z"}
            await session.call_tool("report", {"event": "root_cause", "trace_id": "t-81",
                                               "occurred_at": "2026-11-20T14:30:00Z",
                                               "details": {"cause": "connection pool lowered to 5"}})

            answer = await session.call_tool("ask", {"question": "What rollbacks happened in the last 7 days?"})
            [text] = answer.content
            assert not answer.is_error and "@coder reported rollback" in text.text and "trace t-81" in text.text

            found = await session.call_tool("search", {"query": "connection pool", "since": "2026-11-01T00:00:00Z",
                                                       "trace_id": ["t-81"], "limit": 5})
            assert not found.is_error, found.content
            assert found.structured_content["events"][0]["event"] == "root_cause"
            assert found.structured_content["window"]["since"] == "2026-11-01T00:00:00Z"

            timeline = await session.call_tool("timeline", {"trace_id": "t-81"})
            assert [e["event"] for e in timeline.structured_content["events"]] == ["rollback", "root_cause"]

            refused = await session.call_tool("report", {"event": "   "})
            assert refused.is_error and 'needs an "event" string' in refused.content[0].text
            empty = await session.call_tool("ask", {"question": " "})
            assert empty.is_error and "the question is empty" in empty.content[0].text

            # shared memory: a workflow's state by its trace id, the agent's own actor scope, compare-and-set
            put = await session.call_tool("kv_set", {"key": "plan", "value": {"step": 2}, "scope": "workflow",
                                                     "scope_id": "t-81"})
            assert not put.is_error and put.structured_content["version"] > 0, put.content
            got = await session.call_tool("kv_get", {"key": "plan", "scope": "workflow", "scope_id": "t-81"})
            assert got.structured_content["found"] and got.structured_content["value"] == {"step": 2}
            assert got.structured_content["updated_by"] == "coder"
            mine = await session.call_tool("kv_set", {"key": "mood", "value": "busy", "scope": "actor"})
            looked_up = await session.call_tool("kv_get", {"key": "mood"})  # narrowest scope holding it
            assert looked_up.structured_content["scope"] == "actor" and looked_up.structured_content["value"] == "busy"
            stale = await session.call_tool("kv_set", {"key": "mood", "value": "idle", "scope": "actor",
                                                       "if_version": mine.structured_content["version"] - 1})
            assert stale.is_error and str(mine.structured_content["version"]) in stale.content[0].text
            assert not (await session.call_tool("kv_get", {"key": "nothing"})).structured_content["found"]
            unscoped = await session.call_tool("kv_set", {"key": "plan", "value": 1, "scope": "workflow"})
            assert unscoped.is_error and "trace id" in unscoped.content[0].text
    log = errlog.read_text()
    assert "Traceback" not in log, log


def test_a_clear_error_without_the_mcp_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """``memory-agent mcp`` without the extra installed names the package to install."""
    import typer.testing

    from memory_agent.cli import app

    monkeypatch.setitem(sys.modules, "mcp.server.mcpserver", None)  # import fails as if not installed
    monkeypatch.delitem(sys.modules, "memory_agent.mcp_server", raising=False)
    result = typer.testing.CliRunner().invoke(app, ["mcp"], catch_exceptions=False)
    assert result.exit_code == 1 and 'pip install "mesh-memory[mcp]"' in result.output

