"""A second Azurite that accepts OAuth bearer tokens (HTTPS), and a stand-in managed-identity endpoint.

Azurite's ``--oauth basic`` checks a bearer token's issuer, audience and lifetime but not its signature,
and only over HTTPS. The token comes from :class:`IdentityEndpoint`, which speaks the App Service
managed-identity protocol (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``) that azure-identity's
ManagedIdentityCredential uses; it is the one stand-in of the identity tests, because the real token
service (Entra ID behind the App Service / IMDS endpoints) cannot run on this machine.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import testbed
from .ports import free_port
from .servers import QuietHandler, answers, running, serve, stop

# An issuer Azurite accepts (it checks the prefix https://sts.windows.net/ and a few other clouds').
TENANT = "72f988bf-0000-4000-8000-000000000001"
ISSUER = f"https://sts.windows.net/{TENANT}/"
STORAGE_AUDIENCE = "https://storage.azure.com"
ACCOUNT = "devstoreaccount1"
# The emulator's well-known key (public, documented by Microsoft): used only to seed and inspect blobs.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# What Azurite's debug log says for each request whose bearer token it accepted.
TOKEN_ACCEPTED = "Validation against token authentication successfully"


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for IP 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.timezone.utc)
    valid = {"not_valid_before": now - dt.timedelta(minutes=5), "not_valid_after": now + dt.timedelta(days=1)}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelship test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name, public_key=ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid["not_valid_before"])
        .not_valid_after(valid["not_valid_after"])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder(
            subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
            issuer_name=ca_name,
            public_key=key.public_key(),
        )
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid["not_valid_before"])
        .not_valid_after(valid["not_valid_after"])
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@dataclass
class OAuthAzurite:
    """An Azurite blob service on https://127.0.0.1:PORT with ``--oauth basic``."""

    port: int
    ca_file: Path
    debug_log: Path

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}/{ACCOUNT}"

    def tokens_accepted(self) -> int:
        """How many requests Azurite has let in on a bearer token so far."""
        return self.debug_log.read_text(errors="replace").count(TOKEN_ACCEPTED) if self.debug_log.exists() else 0


@contextmanager
def start_oauth_azurite(directory: Path) -> Iterator[OAuthAzurite]:
    """The testbed's Azurite with OAuth over HTTPS, storing in ``directory``; entered once it answers over TLS."""
    ca, cert, key = make_tls_files(directory)
    port = free_port()
    server = OAuthAzurite(port, ca, directory / "debug.log")
    cmd = [
        testbed.azurite_binary(), "--blobHost", "127.0.0.1", "--blobPort", str(port),
        "--location", str(directory / "data"), "--skipApiVersionCheck", "--loose", "--disableTelemetry",
        "--oauth", "basic", "--cert", str(cert), "--key", str(key), "--debug", str(server.debug_log),
    ]  # fmt: skip
    # any HTTP answer (403: no credential) means TLS and routing are up
    ready = answers(f"{server.endpoint}?comp=list", verify=str(ca))
    with running(cmd, ready=ready, what="the OAuth Azurite", log=directory / "azurite.log"):
        yield server


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(audience: str, lifetime_s: int, issuer: str = ISSUER) -> str:
    """An Entra-shaped access token (HS256 with a random key: Azurite's basic mode does not check signatures)."""
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {
        "aud": audience,
        "iss": issuer,
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + lifetime_s,
        "tid": TENANT,
        "oid": "00000000-0000-4000-8000-00000000beef",
        "sub": "modelship-test-managed-identity",
        "ver": "1.0",
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secrets.token_bytes(32), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@dataclass
class TokenRequest:
    path: str
    query: dict[str, list[str]]
    identity_header: str | None


@dataclass
class IdentityEndpoint:
    """App Service's local managed-identity endpoint (GET ?api-version=2019-08-01&resource=...).

    ``mode``: "ok" (a valid token for the requested resource), "wrong-audience", "expired" (a token whose
    ``exp`` has passed while ``expires_on`` claims an hour, as a skewed clock would give), or "error"
    (HTTP 400, as App Service answers when no identity is assigned).
    """

    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    mode: str = "ok"
    requests: list[TokenRequest] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}/msi/token"

    def answer(self, query: dict[str, list[str]], header: str | None) -> tuple[int, dict]:
        if header != self.secret:
            return 401, {"statusCode": 401, "message": "X-IDENTITY-HEADER missing or wrong"}
        if self.mode == "error":
            return 400, {"statusCode": 400, "message": "No managed identity is assigned to this resource"}
        resource = query.get("resource", [""])[0]
        audience = "https://vault.azure.net" if self.mode == "wrong-audience" else resource
        token = make_jwt(audience, -120 if self.mode == "expired" else 3600)
        self.issued.append(token)
        expires_on = int(time.time()) + 3600
        return 200, {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": "00000000-0000-4000-8000-0000000000c1",
        }

    def start(self) -> IdentityEndpoint:
        endpoint = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                header = self.headers.get("X-IDENTITY-HEADER")
                endpoint.requests.append(TokenRequest(parts.path, query, header))
                self.send_json(*endpoint.answer(query, header))

        self.server = serve(Handler)
        return self

    def stop(self) -> None:
        if self.server is not None:
            stop(self.server)
