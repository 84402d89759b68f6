"""assemble against registries that want credentials: htpasswd (Basic), token auth (a Bearer token from the
realm, with docker-login credentials), and Azure Container Registry's token exchange.

The registries are the real CNCF registry (Debian's docker-registry). Its token service, and ACR's
``/oauth2/exchange``, are stand-ins written for these tests (tests/_oci_helpers.TokenService): ACR's own
token service cannot run on this machine. The Entra ID token comes from an unmodified DefaultAzureCredential
through the App Service managed-identity protocol (tests/_identity_helpers.IdentityEndpoint). Credentials
and tokens are looked for in every output, at every verbosity.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

import pytest
import requests

from modelship.errors import AuthError
from modelship.oci._assemble import assemble
from support.cli import run_cli
from support.identity import IdentityEndpoint
from support.models import make_model
from support.oci import TokenService, build_app_image, push_image, registry_process
from support.registries import htpasswd_registry
from support.scanner import Scanner

pytestmark = pytest.mark.docker
USER, PASSWORD = "ci-bot", f"pw-{uuid.uuid4().hex}"
NOWHERE = "tcp://127.0.0.1:1"


@pytest.fixture(scope="module")
def app_image(docker_client, base_image, registry) -> str:
    """The app image in the testbed's open registry; assembled images go to the registries that want auth."""
    tag = build_app_image(docker_client, base_image, f"{registry}/oci-auth/app-{uuid.uuid4().hex[:8]}:app")
    push_image(docker_client, tag)
    return tag


@pytest.fixture
def model(tmp_path) -> Path:
    return make_model(tmp_path / "model", {"w.bin": os.urandom(1 << 20)}, uri="az://acct/models/m", version="7")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No stored logins, no engine, no Azure settings: only what a test gives."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("DOCKER_HOST", NOWHERE)
    for var in list(os.environ):
        if var.startswith(("AZURE_", "IDENTITY_", "MSI_")) or var in ("IMDS_ENDPOINT", "MODELSHIP_ACR_REGISTRIES"):
            monkeypatch.delenv(var)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # no Azure CLI login for DefaultAzureCredential to find


def _login(tmp_path: Path, registry: str, user: str = USER, password: str = PASSWORD) -> None:
    cfg = tmp_path / "docker-config"
    cfg.mkdir(exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))


def _held(registry: str, repo: str, tag: str, auth: dict) -> str | None:
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
    resp = requests.head(f"http://{registry}/v2/{repo}/manifests/{tag}", headers={"Accept": accept, **auth}, timeout=30)
    return resp.headers.get("Docker-Content-Digest") if resp.status_code == 200 else None


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory):
    with htpasswd_registry(tmp_path_factory.mktemp("oci-htpasswd"), USER, PASSWORD) as reg:
        yield reg


def test_basic_auth_registry_from_docker_config_and_password_stdin(
    tmp_path, clean_env, app_image, model, basic_registry
):
    target = f"{basic_registry}/team/svc:1"
    with pytest.raises(AuthError, match=f"registry {basic_registry} wants credentials for team/svc: run 'docker login"):
        assemble(app_image, model, target, quiet=True)
    basic = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
    assert _held(basic_registry, "team/svc", "1", basic) is None

    _login(tmp_path, basic_registry)
    r = assemble(app_image, model, target, quiet=True)  # app blobs copied over from the other registry
    assert _held(basic_registry, "team/svc", "1", basic) == r.image_digest and r.uploaded_bytes > 70_000_000

    _login(tmp_path, basic_registry, password="wrong")
    out = run_cli("-vv", "assemble", app_image, "--model", str(model), "--tag", f"{basic_registry}/team/svc:2")
    refused = f"modelship: error: registry {basic_registry} refused the credentials for team/svc"
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith(refused)
    out = run_cli(
        "assemble", app_image, "--model", str(model), "--tag", f"{basic_registry}/team/svc:2",
        "--username", USER, "--password-stdin", stdin="wrong\n",
    )  # fmt: skip
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith(refused)  # issue 19 item 12
    out = run_cli(
        "-vv", "assemble", app_image, "--model", str(model), "--tag", f"{basic_registry}/team/svc:2",
        "--username", USER, "--password-stdin", "--json", stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    scanner = Scanner({"password": PASSWORD})
    scanner.text("stdout", out.stdout)
    scanner.text("stderr -vv", out.stderr)
    assert scanner.hits == [] and json.loads(out.stdout)["image_digest"] == r.image_digest


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    """The CNCF registry with `auth: token`, and the test token service (the ACR exchange included)."""
    root = tmp_path_factory.mktemp("oci-token")
    service = TokenService(root, {USER: PASSWORD}).start()
    try:
        with registry_process(root / "registry", service.auth_yaml()) as reg:
            yield reg, service
    finally:
        service.stop()


def _bearer(service: TokenService, repo: str) -> dict:
    return {"Authorization": "Bearer " + service.jwt("test", [f"repository:{repo}:pull"])}


def test_token_auth_registry_with_docker_login_credentials(tmp_path, clean_env, app_image, model, token_registry):
    reg, service = token_registry
    target = f"{reg}/team/tok:1"
    with pytest.raises(AuthError, match=f"registry {reg} wants credentials"):
        assemble(app_image, model, target, quiet=True)
    _login(tmp_path, reg)
    service.log.clear()
    r = assemble(app_image, model, target, quiet=True)
    assert _held(reg, "team/tok", "1", _bearer(service, "team/tok")) == r.image_digest
    gets = [entry for entry in service.log if entry[0] == "GET" and entry[1] == "/oauth2/token"]
    assert gets and len(gets) <= 3, service.log  # a token per set of scopes, reused for every blob


@pytest.fixture
def managed_identity(monkeypatch, clean_env):
    endpoint = IdentityEndpoint().start()
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint.url)
    monkeypatch.setenv("IDENTITY_HEADER", endpoint.secret)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield endpoint
    endpoint.stop()


def test_acr_entra_id_token_exchanged_for_registry_tokens(
    tmp_path, monkeypatch, managed_identity, app_image, model, token_registry
):
    """No docker login on the agent: DefaultAzureCredential's token → /oauth2/exchange → /oauth2/token."""
    reg, service = token_registry
    service.accept_aad = managed_identity.issued  # the stand-in exchange accepts what the identity issued
    target = f"{reg}/team/acr:1"
    # a 127.0.0.1 registry is no *.azurecr.io: without this an Entra token is never sent to it
    with pytest.raises(AuthError, match="wants credentials"):
        assemble(app_image, model, target, quiet=True)
    assert managed_identity.issued == []

    monkeypatch.setenv("MODELSHIP_ACR_REGISTRIES", reg)
    service.log.clear()
    r = assemble(app_image, model, target, quiet=True)
    assert _held(reg, "team/acr", "1", _bearer(service, "team/acr")) == r.image_digest
    steps = [(m, p, sorted(keys)) for m, p, keys in service.log]
    assert steps[0] == ("POST", "/oauth2/exchange", ["access_token", "grant_type", "service"])
    assert all(s[:2] == ("POST", "/oauth2/token") for s in steps[1:]) and len(steps) >= 2
    assert managed_identity.requests[0].query["resource"] == ["https://management.azure.com"]

    # the same through the CLI at -vv: no Entra token, refresh token or registry token in any output
    out = run_cli("-vv", "assemble", app_image, "--model", str(model), "--tag", f"{reg}/team/acr:2", "--json")
    assert out.returncode == 0, out.stderr
    secrets_seen = {f"entra{i}": t for i, t in enumerate(managed_identity.issued)}
    secrets_seen.update({f"refresh{i}": t for i, t in enumerate(service.refresh_tokens)})
    scanner = Scanner(secrets_seen)
    scanner.text("stdout", out.stdout)
    scanner.text("stderr -vv", out.stderr)
    assert scanner.hits == []

    managed_identity.mode = "error"  # no identity assigned: one line saying what to do
    out = run_cli("assemble", app_image, "--model", str(model), "--tag", f"{reg}/team/acr:3")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and "'az login'" in lines[0] and "docker login" in lines[0]


def test_exchange_refusing_the_entra_token_is_one_line(monkeypatch, managed_identity, app_image, model, token_registry):
    reg, service = token_registry
    service.accept_aad = set()  # e.g. the identity has no AcrPush role
    monkeypatch.setenv("MODELSHIP_ACR_REGISTRIES", reg)
    with pytest.raises(
        AuthError, match=f"registry {reg} refused the Entra ID token: give the identity the AcrPush"
    ) as e:
        assemble(app_image, model, f"{reg}/team/acr:denied", quiet=True)
    assert "\n" not in str(e.value) and not any(t in str(e.value) for t in managed_identity.issued)
