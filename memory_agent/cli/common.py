"""What every ``memory-agent`` command shares: the typer app, the common options, loading the config,
failing with a clear message, and talking to a running @memory over the mesh (:func:`talk`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from memory_agent.config import Config, load_config
from memory_agent.errors import MemoryAgentError, QueryError, SharedMemoryError
from memory_agent.logs import LOG_FORMATS, configure_logging
from mesh.errors import AuthenticationError, HandleTaken, InvalidHandle, MeshError, PermissionDenied

__all__ = [
    "AsOpt",
    "ConfigOpt",
    "DataOpt",
    "JsonOpt",
    "LogFormatOpt",
    "NatsOpt",
    "TimeoutOpt",
    "app",
    "check_log_format",
    "client_url",
    "fail",
    "load",
    "nats_auth",
    "setup_logging",
    "talk",
]

T = TypeVar("T")
app = typer.Typer(
    help="@memory: remembers what agents on a NATS mesh report, and answers questions about it.\n\n"
    "Start the daemon with `memory-agent run` (it starts its own nats-server unless you give --nats-url), "
    "then `memory-agent ask \"What rollbacks happened in the last 7 days?\"`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "[#ID]" must not be read as markup and vanish
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file (see config.example.toml).")]
NatsOpt = Annotated[
    str | None,
    typer.Option("--nats-url", help="NATS server URL. Default: MEMORY_AGENT_NATS_URL, the config, or the embedded server."),
]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="Directory for the database, index and embedded nats-server.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for @memory's answer.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
AsOpt = Annotated[str | None, typer.Option(
    "--as", metavar="HANDLE",
    help="Handle to use on the mesh (default: nats.client_handle of the config, else cli-<8 hex>).")]
LogFormatOpt = Annotated[str | None, typer.Option(
    "--log-format", metavar="text|json", help="Log lines as text or as JSON objects (default: log_format).")]


def _version(value: bool) -> None:
    if value:
        from memory_agent import __version__

        typer.echo(f"memory-agent {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """@memory: remembers what agents on a NATS mesh report, and answers questions about it."""


def load(config: Path | None, **overrides: Any) -> Config:
    try:
        return load_config(config, **overrides)
    except MemoryAgentError as exc:
        fail(str(exc))


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"memory-agent: {message}", err=True)
    raise typer.Exit(code)


def client_url(cfg: Config) -> str:
    # With no URL configured the daemon runs an embedded server on embedded_nats_port.
    return cfg.nats_url or f"nats://127.0.0.1:{cfg.embedded_nats_port or 4222}"


def nats_auth(cfg: Config) -> Any:
    """``cfg.nats.auth()`` (a NatsAuth or None), or exit 1 naming the secret that is missing."""
    try:
        return cfg.nats.auth()
    except MemoryAgentError as exc:
        fail(str(exc))


def talk(cfg: Config, timeout: float, call: Callable[[Any], Awaitable[T]], *, as_handle: str | None = None,
          bounded: bool = True, **options: Any) -> T:
    """Run ``call(client)`` on a MemoryClient for ``cfg`` (as ``as_handle``, else ``nats.client_handle``);
    ``bounded``: give up ``timeout + 15`` s later. ``options`` go to MemoryClient (``workflow_id``,
    ``session_id``)."""
    from memory_agent.client import MemoryClient

    auth = nats_auth(cfg)

    async def go() -> T:
        async with MemoryClient(client_url(cfg), handle=cfg.handle, timeout=timeout, auth=auth,
                                client_handle=as_handle or cfg.nats.client_handle or None, **options) as client:
            return await call(client)

    try:
        return asyncio.run(asyncio.wait_for(go(), timeout + 15) if bounded else go())
    except QueryError as exc:
        fail(str(exc))
    except HandleTaken as exc:
        fail(f"{exc}: another client uses that handle right now; wait, or pick another with --as")
    except (AuthenticationError, PermissionDenied, InvalidHandle) as exc:
        fail(f"{type(exc).__name__}: {exc}")
    except SharedMemoryError as exc:
        fail(f"{exc} ({exc.code})")
    except (MeshError, OSError) as exc:
        fail(f"{type(exc).__name__}: {exc} (is `memory-agent run` up, and is --nats-url {client_url(cfg)} right?)")
    except TimeoutError:
        fail(f"no answer from @{cfg.handle} at {client_url(cfg)} within {timeout + 15:.0f} s")
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def setup_logging(cfg: Config) -> None:
    configure_logging(cfg.log_level, cfg.log_format)


def check_log_format(value: str | None) -> str | None:
    if value is not None and value not in LOG_FORMATS:
        fail(f"--log-format must be one of {', '.join(LOG_FORMATS)}, not {value!r}", code=2)
    return value
