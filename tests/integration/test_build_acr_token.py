"""push / inspect with an ACR-style identity token: what `az acr login` leaves in the docker config.

`az acr login` stores no password: ``auths`` gets an ``identitytoken`` (an OAuth2 refresh token), and every
client trades it at the registry's token realm (``grant_type=refresh_token``) for a short-lived access token.
Here the registry is the testbed's docker-registry binary with token auth, checking RS256 tokens against a
throwaway certificate; the token realm is the one stand-in (ACR's /oauth2/token is not available here): it
issues such tokens only for the right refresh token. Both the engine (push, through docker-py's docker.auth
header) and modelship's own registry client (the push read-back and inspect) must get through with it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import io
import json
import os
import secrets
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import docker.errors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from modelship.errors import AuthError
from modelship.image import inspect, push
from modelship.image.registry import docker_credentials
from support import registries
from support.servers import QuietHandler, serve, stop

pytestmark = pytest.mark.docker
SERVICE, ISSUER = "modelship-test-registry", "modelship-test-token-issuer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenRealm:
    """ACR's /oauth2/token: trades the identity (refresh) token for access tokens the registry accepts."""

    refresh_token: str
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    grants: list[dict[str, list[str]]] = field(default_factory=list)  # every request's form, as received
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}/oauth2/token"

    def access_token(self, scopes: list[str]) -> str:
        now = int(time.time())
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")  # repository:team/app:pull,push
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        chain = [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]
        header = {"typ": "JWT", "alg": "RS256", "x5c": chain}  # the registry checks the chain against its bundle
        claims = {
            "iss": ISSUER,
            "sub": "00000000-0000-4000-8000-00000000acr1",
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 60,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def start(self) -> TokenRealm:
        realm = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # the identity-token flow: refresh token in, access token out
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                realm.grants.append(form)
                ok = form.get("grant_type") == ["refresh_token"] and form.get("refresh_token") == [realm.refresh_token]
                scopes = [s for value in form.get("scope", []) for s in value.split()]
                if ok:
                    body = {"access_token": realm.access_token(scopes), "refresh_token": realm.refresh_token}
                    self.send_json(200, {**body, "expires_in": 300})
                else:
                    self.send_json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid refresh token"}]})

            def do_GET(self) -> None:  # the Basic-credentials flow: there are none here
                realm.grants.append({"method": ["GET"]})
                self.send_json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "no basic credentials"}]})

        self.server = serve(Handler)
        return self

    def stop(self) -> None:
        if self.server is not None:
            stop(self.server)


def _signing_pair() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelship test token signer")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder(subject_name=name, issuer_name=name, public_key=key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def acr(tmp_path_factory) -> Iterator[tuple[str, TokenRealm]]:
    """(host:port of a registry with token auth, its token realm)."""
    root = tmp_path_factory.mktemp("acr-registry")
    key, cert = _signing_pair()
    (root / "signer.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    realm = TokenRealm(f"rt-{uuid.uuid4().hex}", key, cert).start()
    auth = (
        f"{{token: {{realm: {realm.url}, service: {SERVICE}, issuer: {ISSUER}, "
        f"rootcertbundle: {root / 'signer.pem'}}}}}"
    )
    try:
        with registries.registry(root, auth) as addr:
            yield addr, realm
    finally:
        realm.stop()


def _tiny_image(client, base_image: str, tag: str) -> None:
    """One file of the base image in an image of its own: a push of a few kB."""
    text = f"FROM {base_image} AS src\nFROM scratch\nCOPY --from=src /etc/os-release /etc/os-release\n"
    text += f"LABEL io.modelship.test.acr={tag}\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text.encode()))
    client.images.build(fileobj=io.BytesIO(buf.getvalue()), custom_context=True, tag=tag, rm=True, forcerm=True)


def _login(config_dir: Path, registry: str, identity_token: str) -> None:
    """What `az acr login` writes: no user, no password, an identity token."""
    config_dir.mkdir(exist_ok=True)
    (config_dir / "config.json").write_text(json.dumps({"auths": {registry: {"identitytoken": identity_token}}}))


def test_identity_token_from_az_acr_login_pushes_and_inspects(tmp_path, monkeypatch, docker_client, base_image, acr):
    registry, realm = acr
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    _login(tmp_path / "docker", registry, realm.refresh_token)
    creds = docker_credentials(registry)
    assert creds is not None and creds.identity_token == realm.refresh_token and creds.username is None

    ref = f"{registry}/team/app:{uuid.uuid4().hex[:8]}"
    _tiny_image(docker_client, base_image, ref)
    try:
        digest = push(ref)  # its own engine client, which reads the docker config as the docker CLI does
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(ref, force=True)
    assert digest.startswith("sha256:")
    remote = inspect(ref, docker_client=docker_client)  # no local image any more: read from the registry
    assert remote["source"] == "registry" and remote["image_digest"] == digest
    assert remote["labels"] == {"io.modelship.test.acr": ref}

    # every token came from the refresh-token grant with the stored identity token; none from a Basic login
    assert realm.grants and all(g.get("refresh_token") == [realm.refresh_token] for g in realm.grants), realm.grants
    scopes = [s for g in realm.grants for value in g.get("scope", []) for s in value.split()]
    assert "repository:team/app:push,pull" in scopes, scopes  # the engine pushing
    assert scopes.count("repository:team/app:pull") == 2, scopes  # modelship: the push read-back, inspect

    _login(tmp_path / "docker", registry, "rt-revoked")
    with pytest.raises(AuthError, match=f"registry {registry} refused the credentials: run 'docker login"):
        inspect(ref, docker_client=docker_client)


def test_identity_token_from_a_credential_helper(tmp_path, monkeypatch):
    """A credHelpers entry (ACR's docker-credential-acr-env and the like) answering user ``<token>``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-modelship-test"
    helper.write_text(
        "#!/bin/sh\n"
        'read server\n[ "$1" = get ] && [ "$server" = myacr.azurecr.io ] || exit 1\n'
        'echo \'{"ServerURL": "myacr.azurecr.io", "Username": "<token>", "Secret": "rt-from-helper"}\'\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(
        json.dumps({"credHelpers": {"myacr.azurecr.io": "modelship-test", "gone.azurecr.io": "not-installed"}})
    )
    creds = docker_credentials("myacr.azurecr.io")
    assert creds is not None and creds.identity_token == "rt-from-helper" and creds.password is None
    assert docker_credentials("gone.azurecr.io") is None  # helper configured but missing: anonymous, no crash
    assert docker_credentials("other.io") is None
