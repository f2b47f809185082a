"""The daemon's commands: run it, ask and report through it, look after its store (stats, check, forget,
export, import, reindex, publish-store, events), the ONNX export and the MCP server."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from memory_agent.cli.common import (
    AsOpt,
    ConfigOpt,
    DataOpt,
    JsonOpt,
    LogFormatOpt,
    NatsOpt,
    TimeoutOpt,
    app,
    check_log_format,
    client_url,
    fail,
    load,
    nats_auth,
    setup_logging,
    talk,
)
from memory_agent.errors import MemoryAgentError
from mesh.errors import AuthenticationError, InvalidHandle, MeshError, PermissionDenied

__all__: list[str] = []  # commands register themselves on memory_agent.cli.common.app


@app.command()
def run(config: ConfigOpt = None, nats_url: NatsOpt = None, data_dir: DataOpt = None,
        port: Annotated[int | None, typer.Option(
            "--port", help="Port of the embedded nats-server (without --nats-url); 0 = any free port. "
                           "Default: embedded_nats_port, 4222.")] = None,
        listen: Annotated[str | None, typer.Option(
            "--listen", metavar="HOST:PORT",
            help="HTTP listener for /metrics, /healthz, /readyz and the timeline page; \"\" turns it off. "
                 "Default: http.listen, 127.0.0.1:9464.")] = None,
        log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = None,
        log_format: LogFormatOpt = None) -> None:
    """Run the @memory daemon until SIGINT/SIGTERM (in-flight reports finish or are redelivered)."""
    from memory_agent.daemon import MemoryDaemon

    if port is not None and not 0 <= port <= 65535:
        fail(f"--port must be from 0 to 65535, not {port}", code=2)
    overrides: dict[str, Any] = {"nats_url": nats_url, "data_dir": data_dir, "log_level": log_level,
                                 "log_format": check_log_format(log_format), "embedded_nats_port": port}
    if listen is not None:
        overrides["http"] = _with_listen(config, listen)
    cfg = load(config, **overrides)
    setup_logging(cfg)
    daemon = MemoryDaemon(cfg)

    def started(d: MemoryDaemon) -> None:
        typer.echo(f"@{cfg.handle} is up. Agents connect to: {d.nats_url}", err=True)
        if d.http_url:
            typer.echo(f"Metrics, health and the timeline page: {d.http_url}", err=True)

    try:
        asyncio.run(daemon.async_run(on_started=started))
    except MemoryAgentError as exc:
        fail(str(exc))
    except MeshError as exc:
        fail(f"{type(exc).__name__}: {exc}")


def _with_listen(config: Path | None, listen: str) -> dict[str, Any]:
    """The [http] table with ``listen`` replaced (a flag overrides one key of a table, not the table)."""
    base = load(config).http
    return {**base.model_dump(), "listen": listen}


@app.command()
def ask(question: Annotated[str, typer.Argument(help="A question in plain language.")], config: ConfigOpt = None,
        nats_url: NatsOpt = None, json_out: JsonOpt = False,
        limit: Annotated[int | None, typer.Option(min=1, help="Most events to show (and return with --json).")] = None,
        timeout: TimeoutOpt = 30.0, as_handle: AsOpt = None) -> None:
    """Ask @memory a question, e.g. "Why did production roll back on Friday?"; exits 1 if it is refused."""
    if not question.strip():
        fail("the question is empty: ask e.g. memory-agent ask \"What rollbacks happened today?\"", code=2)
    cfg = load(config, nats_url=nats_url)
    if json_out or limit:
        # A limit travels only in a structured question; without --json its answer text is printed.
        query: dict[str, Any] = {"query": question, **({"limit": limit} if limit else {})}
        reply = talk(cfg, timeout, lambda c: c.ask_structured(query), as_handle=as_handle)
        if reply.get("status") == "error":
            fail(str(reply.get("error")))
        if json_out:
            typer.echo(json.dumps(reply, indent=2))
        elif "answer" in reply:
            typer.echo(reply["answer"])
        else:
            fail(str(reply.get("error", reply)))
    else:
        typer.echo(talk(cfg, timeout, lambda c: c.ask(question), as_handle=as_handle))


@app.command()
def report(event: Annotated[str, typer.Argument(help='One JSON object, e.g. \'{"event": "rollback", "service": "api"}\'.')],
           config: ConfigOpt = None, nats_url: NatsOpt = None,
           trace_id: Annotated[str | None, typer.Option(help="Trace id (default: the payload's, or a new one).")] = None,
           timeout: TimeoutOpt = 30.0, as_handle: AsOpt = None) -> None:
    """Report one event to @memory; prints the reply, exits 1 if it was refused."""
    try:
        payload = json.loads(event)
    except ValueError as exc:
        fail(f"the event is not valid JSON ({exc}); quote it, e.g. '{{\"event\": \"rollback\"}}'", code=2)
    if not isinstance(payload, dict):
        fail("the event must be a JSON object such as '{\"event\": \"rollback\"}'", code=2)
    cfg = load(config, nats_url=nats_url)
    reply = talk(cfg, timeout, lambda c: c.report(payload, trace_id=trace_id), as_handle=as_handle)
    typer.echo(json.dumps(reply))
    if reply.get("status") != "stored":
        raise typer.Exit(1)


@app.command()
def stats(config: ConfigOpt = None, nats_url: NatsOpt = None, json_out: JsonOpt = False,
          timeout: TimeoutOpt = 10.0) -> None:
    """Event count, index size and type, model and uptime of the running daemon."""
    cfg = load(config, nats_url=nats_url)
    s = talk(cfg, timeout, lambda c: c.stats())
    if json_out:
        typer.echo(json.dumps(s, indent=2))
        return
    health = s.get("health", {})
    typer.echo(f"health:  {health.get('status', 'unknown')}" + "".join(f"; {r}" for r in health.get("reasons", ())))
    size = s["db_bytes"] + s.get("wal_bytes", 0)
    typer.echo(f"events:  {s['events']} ({size / 1e6:.1f} MB SQLite, {s.get('wal_bytes', 0) / 1e6:.1f} MB of it "
               "in the write-ahead log)")
    backlog = s.get("embedding", {})
    if backlog.get("backlog"):
        typer.echo(f"backlog: {backlog['backlog']} events to embed, oldest {backlog.get('backlog_age_s') or 0:.0f} s")
    typer.echo(f"index:   {s['index']['size']} vectors, {s['index']['type'] or 'none (no model loaded)'}")
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
           timeout: TimeoutOpt = 30.0, as_handle: AsOpt = None) -> None:
    """Delete events from @memory (SQLite, full-text index and FAISS); prints how many.

    Only for admins: the handle (--as, or nats.client_handle) must be one of @memory's security.admins.
    """
    selector = {k: v for k, v in (("trace_id", trace_id), ("id", event_id), ("before", before)) if v is not None}
    if len(selector) != 1:
        fail("give exactly one of --trace-id, --id or --before", code=2)
    cfg = load(config, nats_url=nats_url)
    reply = talk(cfg, timeout, lambda c: c.forget(**selector), as_handle=as_handle)
    typer.echo(json.dumps(reply))
    if reply.get("status") != "forgotten":
        raise typer.Exit(1)


@app.command()
def check(config: ConfigOpt = None, nats_url: NatsOpt = None, timeout: TimeoutOpt = 5.0,
          listen: Annotated[str | None, typer.Option(
              "--listen", metavar="HOST:PORT", help="Where the daemon's HTTP listener is (default: http.listen).")] = None,
          ) -> None:
    """Health check: exit 0 if @memory is ready (its /readyz), else 1 naming what is not ready.

    Readiness is answered by the daemon's HTTP listener without waiting behind queued reports. With the
    listener off (http.listen = "") it asks @memory for its stats over the mesh instead.
    """
    from memory_agent.config import parse_listen

    cfg = load(config, nats_url=nats_url)
    try:
        address = parse_listen(cfg.http.listen if listen is None else listen)
    except ValueError as exc:
        fail(f"--listen: {exc}", code=2)
    if address is None or address[1] == 0:
        s = talk(cfg, timeout, lambda c: c.stats())
        health = s.get("health", {})
        typer.echo(f"ok: @{s['handle']} up {s['uptime_s']:.0f} s, {s['events']} events, "
                   f"{health.get('backlog', 0)} to embed; {health.get('status', 'unknown')}"
                   + "".join(f"; {r}" for r in health.get("reasons", ()))
                   + " (over the mesh: the HTTP listener is off or on a random port)")
        return
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(address[0], address[0])
    url = f"http://{f'[{host}]' if ':' in host else host}:{address[1]}/readyz"
    body = _get_json(url, timeout)
    checks = body.get("checks", {})
    if body.get("ready"):
        details = "; ".join(f"{name}: {check.get('detail')}" for name, check in checks.items())
        typer.echo(f"ok: @{cfg.handle} ready ({details})")
        return
    failing = [f"{k}: {v.get('detail')}" for k, v in checks.items() if not v.get("ok")]
    fail(f"not ready ({body.get('phase', '?')}): {'; '.join(failing) or 'starting'}")


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    """GET ``url`` and decode its JSON body (a 503 has one too); exits 1 with one line when unreachable."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        try:
            return dict(json.loads(exc.read()))
        except ValueError:
            fail(f"{url} answered {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(f"no answer from {url} ({reason}): is `memory-agent run` up, and is --listen / http.listen right?")


@app.command("export-onnx")
def export_onnx(config: ConfigOpt = None, data_dir: DataOpt = None,
                backend: Annotated[str | None, typer.Option(
                    help='"onnx" (fp32) or "onnx-int8". Default: embedding.backend if it is one of them, else "onnx".')] = None,
                models_dir: Annotated[Path | None, typer.Option(
                    "--models-dir", help="Where to write it. Default: embedding.models_dir, else <data_dir>/models.")] = None) -> None:
    """Export the embedding model to ONNX now (needs torch), so an install without torch can run it.

    The daemon exports on its first start by itself; this is for images and read-only deployments (the Dockerfile runs it at build time). An export already in place and up to date is kept.
    """
    from memory_agent.embedding.base import load_embedder
    from memory_agent.embedding.onnx import ONNX_BACKENDS

    cfg = load(config, data_dir=data_dir)
    chosen = backend or (cfg.embedding.backend if cfg.embedding.backend in ONNX_BACKENDS else "onnx")
    if chosen not in ONNX_BACKENDS:
        fail(f"--backend {chosen!r}: use one of {', '.join(ONNX_BACKENDS)}", code=2)
    update: dict[str, Any] = {"backend": chosen}
    if models_dir is not None:
        update["models_dir"] = str(models_dir)
    setup_logging(cfg)
    try:
        embedder: Any = load_embedder(cfg.embedding.model_copy(update=update), data_dir=cfg.data_dir)
    except MemoryAgentError as exc:
        fail(str(exc))
    typer.echo(f"{embedder.name} ({chosen}, {embedder.dim} dims): {embedder.cache_status}")


@app.command()
def reindex(config: ConfigOpt = None, data_dir: DataOpt = None,
            rebuild_only: Annotated[bool, typer.Option(
                "--rebuild-only", help="Rebuild the FAISS file from stored vectors without re-embedding.")] = False) -> None:
    """Re-embed every stored event with the configured model and rebuild the index (daemon stopped)."""
    from memory_agent.tools.reindex import reindex as do_reindex

    cfg = load(config, data_dir=data_dir)
    setup_logging(cfg)
    try:
        summary = asyncio.run(do_reindex(cfg, rebuild_only=rebuild_only))
    except MemoryAgentError as exc:
        fail(str(exc))
    typer.echo(summary)


@app.command()
def export(config: ConfigOpt = None, data_dir: DataOpt = None,
           output: Annotated[str, typer.Option("--output", "-o", help="File to write, or - for stdout.")] = "-",
           since: Annotated[str | None, typer.Option(help="Only events at or after this time (ISO-8601 or unix s).")] = None,
           until: Annotated[str | None, typer.Option(help="Only events before this time (ISO-8601 or unix s).")] = None,
           no_vectors: Annotated[bool, typer.Option("--no-vectors", help="Leave the embeddings out.")] = False) -> None:
    """Write the stored events as JSON lines with their embeddings (safe while the daemon runs)."""
    from memory_agent.tools.snapshot import export_events, time_bound

    cfg = load(config, data_dir=data_dir)
    try:
        lo = None if since is None else time_bound(since, tz=cfg.tz, name="since")
        hi = None if until is None else time_bound(until, tz=cfg.tz, name="until")
        if output == "-":
            done = export_events(cfg.db_path, sys.stdout, since=lo, until=hi, vectors=not no_vectors)
        else:
            with open(output, "w", encoding="utf-8") as out:
                done = export_events(cfg.db_path, out, since=lo, until=hi, vectors=not no_vectors)
    except (MemoryAgentError, OSError) as exc:
        fail(str(exc))
    vectors = f" and {done.vectors} vectors of vector memory" if done.vectors else ""
    typer.echo(f"exported {done.events} events{vectors} ({done.bytes / 1e6:.1f} MB) in {done.seconds:.1f} s", err=True)


@app.command("import")
def import_(file: Annotated[str, typer.Argument(help="JSON lines written by export (or by hand), or - for stdin.")],
            config: ConfigOpt = None, data_dir: DataOpt = None,
            batch: Annotated[int, typer.Option(help="Lines validated, embedded and stored per transaction.")] = 5000,
            skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip invalid lines (listed) instead of stopping.")] = False,
            dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate every line; store nothing.")] = False) -> None:
    """Import events from JSON lines (daemon stopped); lines without a vector are embedded, duplicates skipped."""
    from memory_agent.tools.importer import import_events

    cfg = load(config, data_dir=data_dir)
    setup_logging(cfg)
    source = sys.stdin.buffer if file == "-" else Path(file)

    def bad(line: int, problem: str) -> None:
        typer.echo(f"memory-agent: skipped line {line}: {problem}", err=True)

    try:
        done = asyncio.run(import_events(cfg, source, batch=batch, skip_bad=skip_bad, dry_run=dry_run, on_bad=bad))
    except MemoryAgentError as exc:
        fail(str(exc))
    typer.echo(("dry run, nothing stored: " if dry_run else "") + done.line())


@app.command("publish-store")
def publish_store(config: ConfigOpt = None, nats_url: NatsOpt = None, data_dir: DataOpt = None,
                  batch: Annotated[int, typer.Option(help="Publishes in flight at a time.")] = 500) -> None:
    """Publish a single node's store (daemon stopped) to the cluster's events stream, so replicas started
    empty catch up with its history; ids become stream sequences (docs/scaling.md)."""
    from memory_agent.cluster.migrate import publish_store as publish

    cfg = load(config, nats_url=nats_url, data_dir=data_dir)
    setup_logging(cfg)
    try:
        done = asyncio.run(publish(cfg, batch=batch, progress=lambda s: typer.echo(
            f"memory-agent: {s.events} events read, {s.published} published", err=True)))
    except MemoryAgentError as exc:
        fail(str(exc))
    typer.echo(done.line())


@app.command()
def events(config: ConfigOpt = None, data_dir: DataOpt = None,
           last: Annotated[str | None, typer.Option(
               "--last", metavar="DURATION", help="Only events of the last 30m, 24h, 7d, 2w ... (instead of --since).")] = None,
           since: Annotated[str | None, typer.Option(help="Only events at or after this time (ISO-8601 or unix s).")] = None,
           until: Annotated[str | None, typer.Option(help="Only events before this time (ISO-8601 or unix s).")] = None,
           event: Annotated[list[str] | None, typer.Option("--event", help="Only this event type (repeatable).")] = None,
           service: Annotated[list[str] | None, typer.Option("--service", help="Only this service (repeatable).")] = None,
           from_handle: Annotated[list[str] | None, typer.Option(
               "--from", metavar="HANDLE", help="Only events reported by this handle (repeatable).")] = None,
           trace_id: Annotated[list[str] | None, typer.Option("--trace-id", help="Only this trace (repeatable).")] = None,
           limit: Annotated[int, typer.Option(help="Most events to print.")] = 50,
           oldest_first: Annotated[bool, typer.Option("--oldest-first", help="Oldest first (default: newest first).")] = False,
           json_out: JsonOpt = False) -> None:
    """List stored events (newest first) in a time window and filters, without exporting them.

    Reads the database read-only, so it is safe while the daemon runs. --json prints a JSON array of
    events shaped as in answers.
    """
    import time

    from memory_agent.query.answer import event_json
    from memory_agent.tools.listing import event_line, list_events, parse_duration
    from memory_agent.tools.snapshot import time_bound
    from memory_agent.types import Filters, TimeWindow

    cfg = load(config, data_dir=data_dir)
    if last is not None and since is not None:
        fail("give --last or --since, not both", code=2)
    if limit < 1:
        fail(f"--limit must be at least 1, not {limit}", code=2)
    try:
        lo = time.time() - parse_duration(last) if last is not None else (
            None if since is None else time_bound(since, tz=cfg.tz, name="since"))
        hi = None if until is None else time_bound(until, tz=cfg.tz, name="until")
        filters = Filters(event=tuple(e.strip().lower() for e in event or ()), service=tuple(service or ()),
                          from_handle=tuple(h.lstrip("@") for h in from_handle or ()), trace_id=tuple(trace_id or ()))
        window = None if lo is None and hi is None else TimeWindow(lo, hi)
        listing = list_events(cfg.db_path, window=window, filters=filters, limit=limit, oldest_first=oldest_first)
    except ValueError as exc:
        fail(f"--last: {exc}", code=2)
    except MemoryAgentError as exc:
        fail(str(exc))
    if json_out:
        typer.echo(json.dumps([event_json(e, 1.0) for e in listing.events], indent=2, ensure_ascii=False))
    else:
        for e in listing.events:
            typer.echo(event_line(e))
    shown = len(listing.events)
    more = f" (showing {shown}: raise --limit or narrow the window)" if listing.total > shown else ""
    typer.echo(f"{listing.total} event{'' if listing.total == 1 else 's'}{more}", err=True)


@app.command()
def mcp(config: ConfigOpt = None, nats_url: NatsOpt = None, as_handle: AsOpt = None,
        timeout: TimeoutOpt = 60.0, log_format: LogFormatOpt = None) -> None:
    """Serve @memory's tools (report, ask, search, timeline) to an MCP client over stdio.

    Add it to an MCP client's config as the command `memory-agent mcp` (with --nats-url when @memory's
    NATS is not on 127.0.0.1:4222). It joins the mesh as mcp-<8 hex> unless --as names a handle; logs go
    to stderr, stdout carries only the protocol.
    """
    try:
        from memory_agent.client import MemoryClient
        from memory_agent.mcp_server import build_server
    except ImportError as exc:
        fail(f"the MCP server needs the mcp package ({exc.name}): pip install \"mesh-memory[mcp]\"")
    cfg = load(config, nats_url=nats_url, log_format=check_log_format(log_format))
    setup_logging(cfg)
    auth = nats_auth(cfg)

    async def serve() -> None:
        async with MemoryClient(client_url(cfg), handle=cfg.handle, timeout=timeout, auth=auth,
                                client_handle=as_handle or cfg.nats.client_handle or None, handle_prefix="mcp",
                                connect_options={"max_reconnect_attempts": -1}) as client:
            await build_server(client).run_stdio_async()

    try:
        asyncio.run(serve())
    except (AuthenticationError, PermissionDenied, InvalidHandle) as exc:
        fail(f"{type(exc).__name__}: {exc}")
    except (MeshError, OSError) as exc:
        fail(f"{type(exc).__name__}: {exc} (is `memory-agent run` up, and is --nats-url {client_url(cfg)} right?)")
    except KeyboardInterrupt:
        pass
