"""Helpers of the oci tests: an app-only image in a registry, registry inspection, a token service.

The app image is the stdlib app of ``_build_helpers`` (it serves its model's ``modelship.json`` at /model),
built by the Docker engine without a model and pushed, as a team's CI would push its app image.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from .apps import APP
from .engine import build_from_files
from .servers import answers, running

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
APP_DOCKERFILE = """\
FROM {base}
COPY app.py /app/app.py
WORKDIR /app
ENV MODELSHIP_MODEL_DIR=/opt/modelship/model
EXPOSE 8000
LABEL org.opencontainers.image.title=oci-test-app
CMD ["python3", "app.py"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_app_image(client, base_image: str, tag: str) -> str:
    """Build the app-only image (no model) with the engine; returns the tag."""
    return build_from_files(client, tag, {"Dockerfile": APP_DOCKERFILE.format(base=base_image), "app.py": APP})


def push_image(client, tag: str) -> str:
    """docker push; returns the manifest digest."""
    repo, _, t = tag.rpartition(":")
    digest = None
    for ev in client.api.push(repo, tag=t, stream=True, decode=True):
        if "error" in ev:
            raise RuntimeError(ev["error"])
        if isinstance(ev.get("aux"), dict) and ev["aux"].get("Digest"):
            digest = ev["aux"]["Digest"]
    assert digest, f"push of {tag} gave no digest"
    return digest


def manifest(registry: str, repo: str, ref: str, auth: dict | None = None) -> tuple[str, dict, str]:
    """(digest, manifest, media type) straight from the registry (plain http, no modelship code)."""
    resp = requests.get(
        f"http://{registry}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT, **(auth or {})}, timeout=30
    )
    resp.raise_for_status()
    return "sha256:" + hashlib.sha256(resp.content).hexdigest(), resp.json(), resp.headers["Content-Type"]


def tag_digest(registry: str, repo: str, tag: str) -> str | None:
    resp = requests.head(f"http://{registry}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=30)
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return resp.headers["Docker-Content-Digest"]


def blob(registry: str, repo: str, digest: str) -> bytes:
    resp = requests.get(f"http://{registry}/v2/{repo}/blobs/{digest}", timeout=60)
    resp.raise_for_status()
    return resp.content


def image_problems(registry: str, repo: str, ref: str) -> list[str]:
    """What is wrong with the image ``repo:ref`` as the registry holds it: every blob present with its digest."""
    problems = []
    _digest, m, _ = manifest(registry, repo, ref)
    manifests = [m] if "layers" in m else [manifest(registry, repo, e["digest"])[1] for e in m["manifests"]]
    for mm in manifests:
        for d in [mm["config"], *mm["layers"]]:
            resp = requests.get(f"http://{registry}/v2/{repo}/blobs/{d['digest']}", timeout=120)
            if resp.status_code != 200:
                problems.append(f"blob {d['digest'][:19]} answers {resp.status_code}")
            elif "sha256:" + hashlib.sha256(resp.content).hexdigest() != d["digest"] or len(resp.content) != d["size"]:
                problems.append(f"blob {d['digest'][:19]} does not match its descriptor")
    return problems


def run(*cmd: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


# ---------------------------------------------------------------------------------------- token service
#
# A stand-in for a registry's token service (the distribution token spec), and for ACR's /oauth2/token and
# /oauth2/exchange: ACR's own token service cannot run on this machine. It signs ES256 JWTs that the real
# docker-registry (auth: token) verifies against the certificate in its rootcertbundle. The one token
# service of the tests: assemble's auth (test_oci_auth), the engine's push and modelship's read-back with
# an `az acr login` identity token (test_build_acr_token).


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenService:
    """GET /oauth2/token with Basic (docker login), POST /oauth2/token (refresh_token grant),
    POST /oauth2/exchange (ACR: an Entra ID access token for a refresh token)."""

    directory: Path
    users: dict[str, str]
    service: str = "modelship-test-registry"
    issuer: str = "modelship-test-token-service"
    accept_aad: set[str] = field(default_factory=set)  # Entra tokens the exchange accepts
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # refresh token -> subject
    log: list[tuple[str, str, dict]] = field(default_factory=list)  # (method, path, form/query keys only)
    scopes: list[str] = field(default_factory=list)  # every scope a token was issued for
    token_life: int = 300
    server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelship test token signer")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder(subject_name=name, issuer_name=name, public_key=self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cert_path = self.directory / "token-cert.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    @property
    def realm(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}/oauth2/token"

    def auth_yaml(self) -> str:
        """The ``auth:`` section of a registry config that trusts this service's tokens."""
        return (
            f"auth: {{token: {{realm: '{self.realm}', service: {self.service}, issuer: {self.issuer}, "
            f"rootcertbundle: {self.cert_path}}}}}\n"
        )

    def jwt(self, subject: str, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) == 3 and parts[0] == "repository":
                access.append({"type": "repository", "name": parts[1], "actions": parts[2].split(",")})
        now = int(time.time())
        claims = {
            "iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + self.token_life,
            "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access,
        }  # fmt: skip
        head = {"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]}
        signing = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _answer(self, method: str, path: str, headers, query: dict, form: dict) -> tuple[int, dict]:
        self.log.append((method, path, {k: "" for k in {**query, **form}}))
        if path == "/oauth2/exchange" and method == "POST":
            if form.get("grant_type") != "access_token" or form.get("service") != self.service:
                return 400, {"error": "invalid_request"}
            if form.get("access_token") not in self.accept_aad:
                return 401, {"error": "invalid_token"}
            refresh = secrets.token_urlsafe(24)
            self.refresh_tokens[refresh] = "entra-identity"
            return 200, {"refresh_token": refresh}
        if path != "/oauth2/token":
            return 404, {}
        if method == "POST":
            if form.get("grant_type") != "refresh_token" or form.get("refresh_token") not in self.refresh_tokens:
                return 401, {"error": "invalid_grant"}
            subject = self.refresh_tokens[form["refresh_token"]]
            scopes = form.get("scope", "").split()
        else:
            auth = headers.get("Authorization", "")
            if not auth.startswith("Basic "):
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if self.users.get(user) != password:
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "wrong credentials"}]}
            subject, scopes = user, query.get("scope", [])
        self.scopes.extend(scopes)
        token = self.jwt(subject, scopes)
        return 200, {"token": token, "access_token": token, "expires_in": self.token_life}

    def start(self) -> TokenService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def _do(self, method: str) -> None:
                parts = urlsplit(self.path)
                form = {}
                if method == "POST":
                    length = int(self.headers.get("Content-Length") or 0)
                    form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                status, payload = service._answer(method, parts.path, self.headers, parse_qs(parts.query), form)
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._do("GET")

            def do_POST(self) -> None:
                self._do("POST")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@contextlib.contextmanager
def registry_process(root: Path, auth_yaml: str = "") -> Iterator[str]:
    """The testbed's docker-registry binary on a free port with the given ``auth:`` section; yields host:port."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry not installed: run 'scripts/testbed.sh up' first", pytrace=False)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (root / "config.yml").write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}, secret: {uuid.uuid4().hex}}}\n" + auth_yaml
    )
    url = f"http://127.0.0.1:{port}/v2/"
    ready = lambda: answers(url, 200)() or answers(url, 401)()  # noqa: E731 - 401: a registry with auth is up
    with running([binary, "serve", str(root / "config.yml")], ready=ready, what="registry", log=root / "registry.log"):
        yield f"127.0.0.1:{port}"
