"""Shared memory's commands: ``memory-agent kv get|set|delete|list|watch`` and ``memory-agent outcomes``."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from memory_agent.cli.common import ConfigOpt, JsonOpt, NatsOpt, TimeoutOpt, app, fail, load, talk
from memory_agent.errors import MemoryAgentError

__all__ = ["kv_app"]

kv_app = typer.Typer(
    help="Shared memory's key-value state (README \"Shared memory\"): get, set, delete, list and watch keys.\n\n"
    "Scopes: workflow (--id = a trace id), session (--id = a session id), actor (--id = a handle; default "
    "this CLI's nats.client_handle), global (no id).",
    no_args_is_help=True,
)
app.add_typer(kv_app, name="kv")

ScopeOpt = Annotated[str | None, typer.Option("--scope", "-s", help="workflow, session, actor or global.")]
IdOpt = Annotated[str | None, typer.Option("--id", help="The scope's id (trace id, session id, handle).")]


def _scoped(client: Any, scope: str | None, scope_id: str | None) -> Any:
    """The client's view of one scope (``None``: the unscoped, hierarchical view)."""
    if scope is None:
        if scope_id is not None:
            fail("--id needs --scope", code=2)
        return client.unscoped
    if scope == "global":
        return client.global_scope
    if scope == "actor":
        return client.actor(scope_id)
    if scope not in ("workflow", "session"):
        fail(f"--scope must be workflow, session, actor or global, not {scope!r}", code=2)
    if not scope_id:
        fail(f"the {scope} scope needs --id", code=2)
    return client.session(scope_id) if scope == "session" else client.workflow(scope_id)


def _require_scope(scope: str | None) -> str:
    if scope is None:
        fail("give --scope (workflow, session, actor or global) and, for workflow and session, --id", code=2)
    return scope


@kv_app.command("get")
def kv_get(key: Annotated[str, typer.Argument(help="The key.")], config: ConfigOpt = None, nats_url: NatsOpt = None,
           scope: ScopeOpt = None, scope_id: IdOpt = None,
           workflow: Annotated[str | None, typer.Option(help="Without --scope: the workflow (trace id) to look in first.")] = None,
           session: Annotated[str | None, typer.Option(help="Without --scope: the session to look in after it.")] = None,
           json_out: JsonOpt = False, timeout: TimeoutOpt = 10.0) -> None:
    """Print a key's value as JSON (exit 1 when absent). Without --scope: workflow, session, actor, global."""
    cfg = load(config, nats_url=nats_url)
    entry = talk(cfg, timeout, lambda c: _scoped(c, scope, scope_id).get_entry(key), workflow_id=workflow,
                  session_id=session)
    if entry is None:
        typer.echo(f"memory-agent: {key!r} is not set", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(entry.to_json() if json_out else entry.value, ensure_ascii=False))


@kv_app.command("set")
def kv_set(key: Annotated[str, typer.Argument(help="The key.")],
           value: Annotated[str, typer.Argument(help='The value as JSON: 42, \'"text"\', \'{"status": "open"}\'.')],
           config: ConfigOpt = None, nats_url: NatsOpt = None, scope: ScopeOpt = None, scope_id: IdOpt = None,
           ttl: Annotated[float | None, typer.Option("--ttl", help="Seconds until it expires.")] = None,
           if_version: Annotated[int | None, typer.Option(help="Write only if the key is at this version (0 = absent).")] = None,
           text: Annotated[bool, typer.Option("--text", help="Store VALUE as a string, not JSON.")] = False,
           timeout: TimeoutOpt = 10.0) -> None:
    """Set a key; prints {"scope", "scope_id", "version"}."""
    if text:
        decoded: Any = value
    else:
        try:
            decoded = json.loads(value)
        except ValueError:
            fail(f"VALUE is not JSON: quote a string as '\"{value[:40]}\"', or pass --text", code=2)
    cfg = load(config, nats_url=nats_url)
    target = _require_scope(scope)

    async def write(client: Any) -> dict[str, Any]:
        view = _scoped(client, target, scope_id)
        version = await view.set(key, decoded, ttl_s=ttl, if_version=if_version)
        where = view.target()
        return {"key": key, "scope": where[0], "scope_id": where[1], "version": version}

    typer.echo(json.dumps(talk(cfg, timeout, write), ensure_ascii=False))


@kv_app.command("delete")
def kv_delete(key: Annotated[str, typer.Argument(help="The key.")], config: ConfigOpt = None, nats_url: NatsOpt = None,
              scope: ScopeOpt = None, scope_id: IdOpt = None,
              if_version: Annotated[int | None, typer.Option(help="Delete only if the key is at this version.")] = None,
              timeout: TimeoutOpt = 10.0) -> None:
    """Delete a key (exit 1 when it was not set)."""
    cfg = load(config, nats_url=nats_url)
    target = _require_scope(scope)
    deleted = talk(cfg, timeout, lambda c: _scoped(c, target, scope_id).delete(key, if_version=if_version))
    typer.echo(json.dumps({"key": key, "deleted": deleted}))
    if not deleted:
        raise typer.Exit(1)


@kv_app.command("list")
def kv_list(config: ConfigOpt = None, nats_url: NatsOpt = None, scope: ScopeOpt = None, scope_id: IdOpt = None,
            prefix: Annotated[str, typer.Option(help="Only keys starting with this.")] = "",
            limit: Annotated[int | None, typer.Option(help="At most this many keys.")] = None,
            timeout: TimeoutOpt = 10.0) -> None:
    """Print a scope's keys, one per line, sorted."""
    cfg = load(config, nats_url=nats_url)
    target = _require_scope(scope)
    for key in talk(cfg, timeout, lambda c: _scoped(c, target, scope_id).list_keys(prefix, limit=limit)):
        typer.echo(key)


@kv_app.command("watch")
def kv_watch(patterns: Annotated[list[str] | None, typer.Argument(help='Key globs ("ticket:*"); default every key.')] = None,
             config: ConfigOpt = None, nats_url: NatsOpt = None, scope: ScopeOpt = None, scope_id: IdOpt = None,
             since: Annotated[str | None, typer.Option(help="Replay changes from this time (ISO-8601 or unix s).")] = None,
             from_seq: Annotated[int | None, typer.Option(help="Replay from this change sequence.")] = None,
             count: Annotated[int | None, typer.Option(help="Stop after this many changes.")] = None,
             timeout: TimeoutOpt = 10.0) -> None:
    """Print changes as JSON lines (with their "seq" to resume from) until Ctrl-C or --count."""
    from memory_agent.tools.snapshot import time_bound

    cfg = load(config, nats_url=nats_url)
    start = None
    if since is not None:
        try:
            start = time_bound(since, tz=cfg.tz, name="since")
        except MemoryAgentError as exc:
            fail(str(exc), code=2)

    async def watch(client: Any) -> None:
        view = client.unscoped if scope is None else _scoped(client, scope, scope_id)
        seen = 0
        async with view.watch(patterns or ["*"], since=start, from_seq=from_seq) as changes:
            async for change in changes:
                typer.echo(json.dumps({**change.to_json(), "seq": change.seq}, ensure_ascii=False))
                seen += 1
                if count is not None and seen >= count:
                    return

    talk(cfg, timeout, watch, bounded=False)


@app.command()
def outcomes(config: ConfigOpt = None, nats_url: NatsOpt = None,
             node_id: Annotated[str | None, typer.Option(help="Only this node.")] = None,
             since: Annotated[str | None, typer.Option(help="Only outcomes since this time (ISO-8601 or unix s).")] = None,
             json_out: JsonOpt = False, timeout: TimeoutOpt = 10.0) -> None:
    """Success rate, mean confidence and verifier score per node, from the outcomes agents recorded."""
    cfg = load(config, nats_url=nats_url)
    since_value: float | str | None = since
    if since is not None:
        with contextlib.suppress(ValueError):
            since_value = float(since)
    nodes = talk(cfg, timeout, lambda c: c.outcomes(node_id, since=since_value))
    if json_out:
        typer.echo(json.dumps(nodes, indent=2))
        return
    if not nodes:
        typer.echo("no outcomes recorded" + (f" for {node_id}" if node_id else ""))
        return

    def number(value: float | None, pattern: str) -> str:
        return "-" if value is None else pattern.format(value)

    typer.echo(f"{'node':<24} {'count':>6} {'success':>8} {'confidence':>10} {'verifier':>9}  last")
    for n in nodes:
        last = datetime.fromtimestamp(n["last_at"], tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        typer.echo(f"{n['node_id'][:24]:<24} {n['count']:>6} {number(n['success_rate'], '{:.0%}'):>8} "
                   f"{number(n['mean_confidence'], '{:.2f}'):>10} {number(n['mean_verifier_score'], '{:.2f}'):>9}  {last}")
