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
from mesh.errors import AuthenticationError, MeshError, PermissionDenied

__all__ = ["app", "main"]

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

    try:
        auth = cfg.nats.auth()
    except MemoryAgentError as exc:
        _fail(str(exc))

    async def go() -> T:
        async with MemoryClient(_client_url(cfg), handle=cfg.handle, timeout=timeout, auth=auth,
                                client_handle=cfg.nats.client_handle or None) as client:
            return await call(client)

    try:
        return asyncio.run(asyncio.wait_for(go(), timeout + 15))
    except (AuthenticationError, PermissionDenied) as exc:
        _fail(f"{type(exc).__name__}: {exc}")
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
        limit: Annotated[int | None, typer.Option(min=1, help="Most events to show (and return with --json).")] = None,
        timeout: TimeoutOpt = 30.0) -> None:
    """Ask @memory a question, e.g. "Why did production roll back on Friday?"."""
    cfg = _config(config, nats_url=nats_url)
    if json_out or limit:
        # A limit travels only in a structured question; without --json its answer text is printed.
        query: dict[str, Any] = {"query": question, **({"limit": limit} if limit else {})}
        answer = _talk(cfg, timeout, lambda c: c.ask_structured(query))
        if json_out:
            typer.echo(json.dumps(answer, indent=2))
        elif "answer" in answer:
            typer.echo(answer["answer"])
        else:
            _fail(str(answer.get("error", answer)))
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
def forget(config: ConfigOpt = None, nats_url: NatsOpt = None,
           trace_id: Annotated[str | None, typer.Option("--trace-id", help="Delete every event of this trace.")] = None,
           event_id: Annotated[int | None, typer.Option("--id", help="Delete the event answers cite as [#ID].")] = None,
           before: Annotated[str | None, typer.Option(
               "--before", help="Delete every event that occurred before this ISO-8601 time.")] = None,
           timeout: TimeoutOpt = 30.0) -> None:
    """Delete events from @memory (SQLite, full-text index and FAISS); prints how many.

    Only for admins: nats.client_handle must be one of @memory's security.admins.
    """
    selector = {k: v for k, v in (("trace_id", trace_id), ("id", event_id), ("before", before)) if v is not None}
    if len(selector) != 1:
        _fail("give exactly one of --trace-id, --id or --before", code=2)
    cfg = _config(config, nats_url=nats_url)
    reply = _talk(cfg, timeout, lambda c: c.forget(**selector))
    typer.echo(json.dumps(reply))
    if reply.get("status") != "forgotten":
        raise typer.Exit(1)


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
    from memory_agent.tools.reindex import reindex as do_reindex

    cfg = _config(config, data_dir=data_dir)
    _logging(cfg.log_level)
    try:
        summary = asyncio.run(do_reindex(cfg, rebuild_only=rebuild_only))
    except MemoryAgentError as exc:
        _fail(str(exc))
    typer.echo(summary)


@app.command()
def export(config: ConfigOpt = None, data_dir: DataOpt = None,
           output: Annotated[str, typer.Option("--output", "-o", help="File to write, or - for stdout.")] = "-",
           since: Annotated[str | None, typer.Option(help="Only events at or after this time (ISO-8601 or unix s).")] = None,
           until: Annotated[str | None, typer.Option(help="Only events before this time (ISO-8601 or unix s).")] = None,
           no_vectors: Annotated[bool, typer.Option("--no-vectors", help="Leave the embeddings out.")] = False) -> None:
    """Write the stored events as JSON lines with their embeddings (safe while the daemon runs)."""
    from memory_agent.tools.snapshot import export_events, time_bound

    cfg = _config(config, data_dir=data_dir)
    try:
        lo = None if since is None else time_bound(since, tz=cfg.tz, name="since")
        hi = None if until is None else time_bound(until, tz=cfg.tz, name="until")
        if output == "-":
            done = export_events(cfg.db_path, sys.stdout, since=lo, until=hi, vectors=not no_vectors)
        else:
            with open(output, "w", encoding="utf-8") as out:
                done = export_events(cfg.db_path, out, since=lo, until=hi, vectors=not no_vectors)
    except (MemoryAgentError, OSError) as exc:
        _fail(str(exc))
    typer.echo(f"exported {done.events} events ({done.bytes / 1e6:.1f} MB) in {done.seconds:.1f} s", err=True)


@app.command("import")
def import_(file: Annotated[str, typer.Argument(help="JSON lines written by export (or by hand), or - for stdin.")],
            config: ConfigOpt = None, data_dir: DataOpt = None,
            batch: Annotated[int, typer.Option(help="Lines validated, embedded and stored per transaction.")] = 5000,
            skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip invalid lines (listed) instead of stopping.")] = False,
            dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate every line; store nothing.")] = False) -> None:
    """Import events from JSON lines (daemon stopped); lines without a vector are embedded, duplicates skipped."""
    from memory_agent.tools.importer import import_events

    cfg = _config(config, data_dir=data_dir)
    _logging(cfg.log_level)
    source = sys.stdin.buffer if file == "-" else Path(file)

    def bad(line: int, problem: str) -> None:
        typer.echo(f"memory-agent: skipped line {line}: {problem}", err=True)

    try:
        done = asyncio.run(import_events(cfg, source, batch=batch, skip_bad=skip_bad, dry_run=dry_run, on_bad=bad))
    except MemoryAgentError as exc:
        _fail(str(exc))
    typer.echo(("dry run, nothing stored: " if dry_run else "") + done.line())


def main() -> None:
    app()
