"""The daemon's configuration sections for the network: ``[nats]`` (how @memory joins the mesh),
``[security]`` (who may do what) and ``[http]`` (metrics, health and the timeline page), with their URL
and address helpers (see :mod:`memory_agent.config`)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import field_validator, model_validator

from memory_agent.config.sections import Section
from memory_agent.errors import ConfigError
from mesh.auth import NatsAuth
from mesh.handles import validate_handle

__all__ = ["NATS_SCHEMES", "HttpConfig", "NatsConfig", "SecurityConfig", "is_loopback", "parse_listen",
           "validate_nats_urls"]


class NatsConfig(Section):
    """How the daemon and the CLI authenticate to NATS (one credential kind at most, plus TLS).

    Secrets never go in the file: a token or password is read from the environment variable named by
    ``*_env`` or from the file named by ``*_file``; an NKey seed or ``.creds`` file is given by path.
    """

    token_env: str = ""
    """Name of the environment variable holding the NATS token."""
    token_file: str = ""
    """File holding the NATS token (surrounding whitespace is stripped)."""
    user: str = ""
    """NATS user name; its password comes from ``password_env`` or ``password_file``."""
    password_env: str = ""
    password_file: str = ""
    nkey_seed_file: str = ""
    """File holding the user's NKey seed (``SU...``)."""
    creds_file: str = ""
    """A ``.creds`` file (user JWT and seed, as written by ``nsc``)."""
    tls_ca: str = ""
    """PEM file of the CA that signed the server's certificate; set to use TLS."""
    tls_cert: str = ""
    """PEM client certificate, for servers that verify clients; needs ``tls_key``."""
    tls_key: str = ""
    client_handle: str = ""
    """Handle the CLI (``ask``, ``report``, ``forget`` ...) uses on the mesh; empty = ``cli-<8 hex>``. A
    server with per-handle permissions needs a fixed one; ``forget`` needs one listed in security.admins."""

    @field_validator("client_handle")
    @classmethod
    def _valid_client_handle(cls, value: str) -> str:
        return validate_handle(value) if value else value

    @model_validator(mode="after")
    def _one_credential(self) -> NatsConfig:
        kinds = [name for name, on in (("token", self.token_env or self.token_file),
                                       ("user/password", self.user or self.password_env or self.password_file),
                                       ("nkey_seed_file", self.nkey_seed_file), ("creds_file", self.creds_file)) if on]
        if len(kinds) > 1:
            raise ValueError(f"set one way to authenticate to NATS, not {' and '.join(kinds)}")
        for name in ("token", "password"):
            if getattr(self, f"{name}_env") and getattr(self, f"{name}_file"):
                raise ValueError(f"{name}_env and {name}_file are both set: keep one")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        return self

    @property
    def configured(self) -> bool:
        """True when any credential or TLS option is set."""
        return any((self.token_env, self.token_file, self.user, self.password_env, self.password_file,
                    self.nkey_seed_file, self.creds_file, self.tls_ca, self.tls_cert, self.tls_key))

    def auth(self) -> NatsAuth | None:
        """The credentials, with secrets read from the named variables and files; None when none are set.

        Raises ConfigError naming the key when a variable is unset, a file cannot be read, or the
        options contradict each other (two credential kinds, a password without a user ...).
        """
        if not self.configured:
            return None
        token = self._secret("token", self.token_env, self.token_file)
        password = self._secret("password", self.password_env, self.password_file)
        if password is not None and not self.user:
            raise ConfigError("nats.password_env/password_file is set but nats.user is empty: set the user too", key="nats.user")
        if self.user and password is None:
            raise ConfigError(f"nats.user is {self.user!r} but no password: set nats.password_env or nats.password_file", key="nats.password_env")
        try:
            return NatsAuth(
                token=token,
                user=self.user or None,
                password=password,
                nkey_seed_file=Path(self.nkey_seed_file) if self.nkey_seed_file else None,
                creds_file=Path(self.creds_file) if self.creds_file else None,
                tls_ca=Path(self.tls_ca) if self.tls_ca else None,
                tls_cert=Path(self.tls_cert) if self.tls_cert else None,
                tls_key=Path(self.tls_key) if self.tls_key else None,
            )
        except ValueError as exc:
            raise ConfigError(f"[nats]: {exc}") from None

    @staticmethod
    def _secret(name: str, env: str, file: str) -> str | None:
        if env and file:
            raise ConfigError(f"nats.{name}_env and nats.{name}_file are both set: keep one", key=f"nats.{name}_env")
        if env:
            value = os.environ.get(env, "")
            if not value:
                raise ConfigError(f"nats.{name}_env names the environment variable {env}, which is not set or empty", key=f"nats.{name}_env")
            return value
        if file:
            try:
                value = Path(file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"nats.{name}_file {file} cannot be read ({exc.strerror})", key=f"nats.{name}_file") from None
            if not value:
                raise ConfigError(f"nats.{name}_file {file} is empty", key=f"nats.{name}_file")
            return value
        return None


class SecurityConfig(Section):
    """Who may delete memory, and whether the sender's handle is authenticated by the NATS server."""

    admins: tuple[str, ...] = ()
    """Handles allowed to send ``{"op": "forget", ...}``; empty = nobody may delete events."""
    authenticated_senders: bool = False
    """True only when the NATS server lets each user publish on ``mesh.inbox.*.<its own handle>`` and nothing
    else under ``mesh.inbox`` (as examples/nats-server.conf does): the sender's handle is then
    authenticated, stored with ``sender_verified = true`` and trusted for the admin check."""

    @field_validator("admins")
    @classmethod
    def _valid_admins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for handle in value:
            validate_handle(handle)
        return value


#: URL schemes nats-py connects with.
NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def validate_nats_urls(value: str) -> str:
    """``value`` when every comma-separated part is a NATS URL such as ``nats://host:4222`` (``tls``, ``ws``
    and ``wss`` too); raises ``ValueError`` naming the bad part and the expected form."""
    for part in (p.strip() for p in value.split(",")):
        problem = None
        try:
            url = urlsplit(part)
            port = url.port  # ValueError when not a number or out of range
        except ValueError as exc:
            problem, url, port = str(exc), None, None
        if problem is None and url is not None:
            if url.scheme not in NATS_SCHEMES:
                problem = f"scheme must be one of {', '.join(s + '://' for s in NATS_SCHEMES)}"
            elif not url.hostname:
                problem = "it names no host"
            elif url.path not in ("", "/") or url.query or url.fragment:
                problem = "it has a path or query, which NATS URLs do not"
        if problem is not None or port == 0:
            raise ValueError(f"{part[:80]!r} is not a NATS URL ({problem or 'port 0'}): "
                             "write it like nats://127.0.0.1:4222 (several: comma-separated)")
    return value


def parse_listen(value: str) -> tuple[str, int] | None:
    """``"host:port"`` (``"[::1]:9464"`` for IPv6) as ``(host, port)``; ``None`` for an empty value (off).

    Raises ``ValueError`` saying the expected form. Port 0 means any free port.
    """
    value = value.strip()
    if not value:
        return None
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ValueError(f"{value[:80]!r} is not HOST:PORT: write it like 127.0.0.1:9464 (empty turns it off)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} of {value[:80]!r} is above 65535")
    return host, port


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpConfig(Section):
    """The daemon's HTTP listener: Prometheus metrics (``/metrics``), liveness (``/healthz``), readiness
    (``/readyz``) and the read-only timeline page (``/``). See "Observing @memory" in the README."""

    listen: str = "127.0.0.1:9464"
    """``HOST:PORT`` to listen on (9464 is the port OpenTelemetry's Prometheus exporter uses); empty = no
    HTTP listener. On an address other than loopback the timeline page is served only with a token
    (``token_env``/``token_file``); metrics and health are served either way."""
    token_env: str = ""
    """Name of the environment variable holding the page's token (the token itself never goes in a file)."""
    token_file: str = ""
    """File holding the page's token (surrounding whitespace is stripped)."""

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value.strip()

    @model_validator(mode="after")
    def _one_token_source(self) -> HttpConfig:
        if self.token_env and self.token_file:
            raise ValueError("token_env and token_file are both set: keep one")
        return self

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` to listen on, ``None`` when off."""
        return parse_listen(self.listen)

    def token(self) -> str | None:
        """The page's token from ``token_env`` or ``token_file``; ``None`` when neither is set.

        Raises ConfigError naming the key when the variable is unset or the file unreadable or empty.
        """
        if self.token_env:
            value = os.environ.get(self.token_env, "").strip()
            if not value:
                raise ConfigError(f"http.token_env names the environment variable {self.token_env}, which is not "
                                  "set or empty", key="http.token_env")
            return value
        if self.token_file:
            try:
                value = Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"http.token_file {self.token_file} cannot be read ({exc.strerror})",
                                  key="http.token_file") from None
            if not value:
                raise ConfigError(f"http.token_file {self.token_file} is empty", key="http.token_file")
            return value
        return None

    @property
    def page_needs_token(self) -> bool:
        """True when the listener is reachable from other hosts: the page is served only with a token then."""
        address = self.address
        return address is not None and not is_loopback(address[0])
