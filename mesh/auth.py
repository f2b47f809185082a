"""How an agent proves who it is to NATS: token, user/password, NKey seed or ``.creds`` file, plus TLS.

:class:`NatsAuth` is a frozen value; :meth:`NatsAuth.connect_options` turns it into the keyword
arguments of ``nats.connect`` (``token``, ``user``/``password``, ``nkeys_seed``, ``user_credentials``,
``tls``). Secrets are held only as long as the value lives and never appear in its ``repr``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import MeshError

__all__ = ["AuthMethod", "NatsAuth"]

AuthMethod = Literal["none", "token", "user", "nkey", "creds"]


@dataclass(frozen=True, slots=True)
class NatsAuth:
    """Credentials for one NATS connection: at most one of ``token``, ``user`` + ``password``,
    ``nkey_seed_file`` (a file holding an ``SU...`` user seed) or ``creds_file`` (a ``.creds`` file:
    user JWT and seed, as written by ``nsc``), plus optional TLS.

    ``tls_ca``: PEM file of the CA that signed the server's certificate (enables TLS and verifies
    the server). ``tls_cert`` + ``tls_key``: PEM client certificate and key, for servers that
    verify clients (``verify: true``). ``tls_hostname``: the name to check the server's certificate
    against, when it differs from the URL's host.

    Raises ValueError at construction when two credential kinds are given, a password comes without
    a user (or the reverse), or only one of ``tls_cert``/``tls_key`` is set.
    """

    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    nkey_seed_file: Path | None = None
    creds_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_hostname: str | None = None

    def __post_init__(self) -> None:
        if (self.user is None) != (self.password is None):
            raise ValueError("NATS user and password go together: give both or neither")
        kinds = [k for k, v in (("token", self.token), ("user/password", self.user),
                                ("nkey_seed_file", self.nkey_seed_file), ("creds_file", self.creds_file))
                 if v]
        if len(kinds) > 1:
            raise ValueError(f"give one way to authenticate to NATS, not {' and '.join(kinds)}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("a TLS client certificate needs its key: give tls_cert and tls_key together")

    @property
    def method(self) -> AuthMethod:
        """Which credential is used (for logs; never the credential itself)."""
        if self.token:
            return "token"
        if self.user:
            return "user"
        if self.nkey_seed_file:
            return "nkey"
        if self.creds_file:
            return "creds"
        return "none"

    @property
    def tls(self) -> bool:
        """True when TLS options are set."""
        return self.tls_ca is not None or self.tls_cert is not None

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``; raises MeshError naming a missing or unreadable file."""
        for name, path in (("nkey_seed_file", self.nkey_seed_file), ("creds_file", self.creds_file),
                           ("tls_ca", self.tls_ca), ("tls_cert", self.tls_cert), ("tls_key", self.tls_key)):
            if path is not None and not Path(path).is_file():
                raise MeshError(f"NATS {name} {path} does not exist or is not a file")
        options: dict[str, Any] = {}
        if self.token:
            options["token"] = self.token
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password
        if self.nkey_seed_file is not None:
            options["nkeys_seed"] = str(self.nkey_seed_file)
        if self.creds_file is not None:
            options["user_credentials"] = str(self.creds_file)
        if self.tls:
            options["tls"] = self.ssl_context()
            if self.tls_hostname:
                options["tls_hostname"] = self.tls_hostname
        return options

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that verifies the server against ``tls_ca`` (or the system CAs).

        Raises MeshError when a PEM file cannot be loaded.
        """
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(self.tls_ca) if self.tls_ca is not None else None
            )
            if self.tls_cert is not None and self.tls_key is not None:
                context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        except (OSError, ssl.SSLError) as exc:
            raise MeshError(f"cannot load the NATS TLS files ({type(exc).__name__}: {exc})") from exc
        return context
