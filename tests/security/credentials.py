"""Real NATS credentials made at test time: NKey seeds, JWT operator/account/user chains with a .creds
file, and a TLS CA with server and client certificates. Nothing here is checked in; every test makes
its own.

JWTs are built here (about 20 lines, with the ``nkeys`` package nats-py itself uses) rather than with
a NATS JWT library: the one on PyPI (nats-jwt) calls itself untested and pins old dependencies, and
``nsc`` is a Go binary. The claims follow nats-io/jwt v2: ``{"typ": "JWT", "alg": "ed25519-nkey"}``,
claims signed with the issuer's Ed25519 NKey, base64url without padding.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class NKey:
    """An NKey pair: ``seed`` (``S...``, secret) and ``public`` (``U...``/``A...``/``O...``)."""

    seed: str
    public: str

    def sign(self, data: bytes) -> bytes:
        return bytes(nkeys.from_seed(bytearray(self.seed.encode())).sign(data))

    def write_seed(self, path: Path) -> Path:
        path.write_text(self.seed + "\n")
        path.chmod(0o600)
        return path


def new_nkey(prefix: int = nkeys.PREFIX_BYTE_USER) -> NKey:
    """A fresh random NKey of the given role (user by default)."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return NKey(seed=seed.decode(), public=nkeys.from_seed(bytearray(seed)).public_key.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_jwt(issuer: NKey, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS v2 JWT for ``subject`` signed by ``issuer``."""
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject,
                              "nats": {**nats, "version": 2}}
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()).decode()
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(issuer.sign(f'{head}.{body}'.encode()))}"


_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
              "conn": -1, "leaf": -1}


def operator_mode(directory: Path, users: list[str]) -> tuple[str, dict[str, Path]]:
    """Server config (operator mode, memory resolver, JetStream-enabled account) and one .creds file per user."""
    operator, system, account = (new_nkey(nkeys.PREFIX_BYTE_OPERATOR), new_nkey(nkeys.PREFIX_BYTE_ACCOUNT),
                                 new_nkey(nkeys.PREFIX_BYTE_ACCOUNT))
    operator_jwt = encode_jwt(operator, operator.public, "test-operator",
                              {"type": "operator", "system_account": system.public})
    system_jwt = encode_jwt(operator, system.public, "SYS", {"type": "account", "limits": _UNLIMITED})
    account_jwt = encode_jwt(operator, account.public, "MESH", {
        "type": "account",
        "limits": {**_UNLIMITED, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1},
    })
    creds: dict[str, Path] = {}
    for name in users:
        user = new_nkey()
        user_jwt = encode_jwt(account, user.public, name,
                              {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
        path = directory / f"{name}.creds"
        path.write_text(
            f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user.seed}\n------END USER NKEY SEED------\n"
        )
        path.chmod(0o600)
        creds[name] = path
    config = (f"operator: {operator_jwt}\nsystem_account: {system.public}\nresolver: MEMORY\n"
              f"resolver_preload: {{\n  {system.public}: {system_jwt}\n  {account.public}: {account_jwt}\n}}\n")
    return config, creds


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost, and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
          *, ca: bool, usage: x509.ObjectIdentifier | None, sans: list[x509.GeneralName]) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                        critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls(directory: Path, name: str = "test") -> TlsFiles:
    """A fresh CA (``<name>-ca.pem``) with a server certificate (127.0.0.1, localhost) and a client certificate."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = _cert(f"{name} CA", ca_key, ca_name, ca_key, ca=True, usage=None, sans=[])
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("nats-server", server_key, ca_name, ca_key, ca=False, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                   sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("memory", client_key, ca_name, ca_key, ca=False, usage=ExtendedKeyUsageOID.CLIENT_AUTH, sans=[])
    pem = serialization.Encoding.PEM
    (directory / f"{name}-ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / f"{name}-server.pem").write_bytes(server.public_bytes(pem))
    (directory / f"{name}-client.pem").write_bytes(client.public_bytes(pem))
    return TlsFiles(
        ca=directory / f"{name}-ca.pem",
        server_cert=directory / f"{name}-server.pem",
        server_key=_key_pem(server_key, directory / f"{name}-server-key.pem"),
        client_cert=directory / f"{name}-client.pem",
        client_key=_key_pem(client_key, directory / f"{name}-client-key.pem"),
    )
