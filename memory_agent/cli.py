"""``memory-agent``: run the @memory daemon, or talk to a running one over the mesh."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from memory_agent.config import Config, load_config
from memory_agent.errors import MemoryAgentError
from mesh.errors import MeshError

T = TypeVar("T")
app = typer.Typer(
    help="@memory: remembers what agents on a NATS mesh report, and answers questions about it.\n\n"
    "Start the daemon with `memory-agent run` (it starts its own nats-server unless you give --nats-url), "
    "then `memory-agent ask \"What rollbacks happened in the last 7 days?\"`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file (see config.example.toml).")]
NatsOpt = Annotated[
    str | None,
    typer.Option("--nats-url", help="NATS server URL. Default: MEMORY_AGENT_NATS_URL, the config, or the embedded server."),
]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="Directory for the database, index and embedded nats-server.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for @memory's answer.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _config(config: Path | None, **overrides: Any) -> Config:
    try:
        return load_config(config, **overrides)
    except MemoryAgentError as exc:
        _fail(str(exc))


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"memory-agent: {message}", err=True)
    raise typer.Exit(code)


def _client_url(cfg: Config) -> str:
    # With no URL configured the daemon runs an embedded server on embedded_nats_port.
    return cfg.nats_url or f"nats://127.0.0.1:{cfg.embedded_nats_port or 4222}"


def _talk(cfg: Config, timeout: float, call: Callable[[Any], Awaitable[T]]) -> T:
    from memory_agent.client import MemoryClient

    async def go() -> T:
        async with MemoryClient(_client_url(cfg), handle=cfg.handle, timeout=timeout) as client:
            return await call(client)

    try:
        return asyncio.run(asyncio.wait_for(go(), timeout + 15))
    except (MeshError, OSError) as exc:
        _fail(f"{type(exc).__name__}: {exc} (is `memory-agent run` up, and is --nats-url {_client_url(cfg)} right?)")
    except TimeoutError:
        _fail(f"no answer from @{cfg.handle} at {_client_url(cfg)} within {timeout + 15:.0f} s")


def _logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
def run(config: ConfigOpt = None, nats_url: NatsOpt = None, data_dir: DataOpt = None,
        log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = None) -> None:
    """Run the @memory daemon until SIGINT/SIGTERM (in-flight reports finish or are redelivered)."""
    from memory_agent.daemon import MemoryDaemon

    cfg = _config(config, nats_url=nats_url, data_dir=data_dir, log_level=log_level)
    _logging(cfg.log_level)
    daemon = MemoryDaemon(cfg)

    def started(d: MemoryDaemon) -> None:
        typer.echo(f"@{cfg.handle} is up. Agents connect to: {d.nats_url}", err=True)

    try:
        asyncio.run(daemon.async_run(on_started=started))
    except MemoryAgentError as exc:
        _fail(str(exc))
    except MeshError as exc:
        _fail(f"{type(exc).__name__}: {exc}")


@app.command()
def ask(question: Annotated[str, typer.Argument(help="A question in plain language.")], config: ConfigOpt = None,
        nats_url: NatsOpt = None, json_out: JsonOpt = False,
        limit: Annotated[int | None, typer.Option(help="Most events to return (with --json).")] = None,
        timeout: TimeoutOpt = 30.0) -> None:
    """Ask @memory a question, e.g. "Why did production roll back on Friday?"."""
    cfg = _config(config, nats_url=nats_url)
    if json_out:
        query: dict[str, Any] = {"query": question, **({"limit": limit} if limit else {})}
        typer.echo(json.dumps(_talk(cfg, timeout, lambda c: c.ask_structured(query)), indent=2))
    else:
        typer.echo(_talk(cfg, timeout, lambda c: c.ask(question)))


@app.command()
def report(event: Annotated[str, typer.Argument(help='One JSON object, e.g. \'{"event": "rollback", "service": "api"}\'.')],
           config: ConfigOpt = None, nats_url: NatsOpt = None,
           trace_id: Annotated[str | None, typer.Option(help="Trace id (default: the payload's, or a new one).")] = None,
           timeout: TimeoutOpt = 30.0) -> None:
    """Report one event to @memory; prints the reply, exits 1 if it was refused."""
    try:
        payload = json.loads(event)
    except ValueError as exc:
        _fail(f"the event is not valid JSON ({exc}); quote it, e.g. '{{\"event\": \"rollback\"}}'", code=2)
    if not isinstance(payload, dict):
        _fail("the event must be a JSON object such as '{\"event\": \"rollback\"}'", code=2)
    cfg = _config(config, nats_url=nats_url)
    reply = _talk(cfg, timeout, lambda c: c.report(payload, trace_id=trace_id))
    typer.echo(json.dumps(reply))
    if reply.get("status") != "stored":
        raise typer.Exit(1)


@app.command()
def stats(config: ConfigOpt = None, nats_url: NatsOpt = None, json_out: JsonOpt = False,
          timeout: TimeoutOpt = 10.0) -> None:
    """Event count, index size and type, model and uptime of the running daemon."""
    cfg = _config(config, nats_url=nats_url)
    s = _talk(cfg, timeout, lambda c: c.stats())
    if json_out:
        typer.echo(json.dumps(s, indent=2))
        return
    typer.echo(f"events:  {s['events']} ({s['db_bytes'] / 1e6:.1f} MB SQLite)")
    typer.echo(f"index:   {s['index']['size']} vectors, {s['index']['type']}")
    typer.echo(f"model:   {s['model']}")
    typer.echo(f"uptime:  {s['uptime_s']:.0f} s")
    typer.echo(f"ingest:  {s['ingest']['stored']} stored, {s['ingest']['duplicates']} duplicates since start")
    typer.echo(f"llm:     {s['llm'] or 'off (extractive answers)'}")


@app.command()
def check(config: ConfigOpt = None, nats_url: NatsOpt = None, timeout: TimeoutOpt = 5.0) -> None:
    """Health check: exit 0 if @memory answers on the mesh within --timeout, else 1."""
    cfg = _config(config, nats_url=nats_url)
    s = _talk(cfg, timeout, lambda c: c.stats())
    typer.echo(f"ok: @{s['handle']} up {s['uptime_s']:.0f} s, {s['events']} events")


@app.command()
def reindex(config: ConfigOpt = None, data_dir: DataOpt = None,
            rebuild_only: Annotated[bool, typer.Option(
                "--rebuild-only", help="Rebuild the FAISS file from stored vectors without re-embedding.")] = False) -> None:
    """Re-embed every stored event with the configured model and rebuild the index (daemon stopped)."""
    from memory_agent.reindex import reindex as do_reindex

    cfg = _config(config, data_dir=data_dir)
    _logging(cfg.log_level)
    try:
        summary = asyncio.run(do_reindex(cfg, rebuild_only=rebuild_only))
    except MemoryAgentError as exc:
        _fail(str(exc))
    typer.echo(summary)


def main() -> None:
    app()
