"""The DefaultAzureCredential path, end to end: managed identity → bearer token → Azurite over HTTPS.

Nothing but a managed identity is configured (every AZURE_STORAGE_*, service-principal, workload-identity
and token-credential variable is removed), exactly as on an App Service / Container Apps host:
``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``. modelship builds an unmodified ``DefaultAzureCredential``, whose
ManagedIdentityCredential asks that endpoint for a token for https://storage.azure.com; the storage SDK sends
it as a bearer token to a second Azurite started here with ``--oauth basic`` (HTTPS only; it checks issuer,
audience and lifetime, not the signature). The SDK trusts Azurite's throwaway CA through
``REQUESTS_CA_BUNDLE``, the variable a user behind a private CA sets.

The one stand-in: the managed-identity endpoint itself (support.identity.IdentityEndpoint), a small
HTTP server on 127.0.0.1 speaking App Service's protocol, because the real token service (Entra ID behind
the App Service / IMDS endpoints) cannot run on this machine. Everything else is the real SDK and CLI.
No test may open a connection to anything but loopback; a guard records and refuses any other address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from azure.storage.blob import BlobServiceClient

from modelship import cli
from modelship.errors import AuthError
from modelship.stores.base import SHA256_KEY
from support.cli import run_cli
from support.identity import ACCOUNT, ACCOUNT_KEY, STORAGE_AUDIENCE, IdentityEndpoint, OAuthAzurite, start_oauth_azurite
from support.models import make_model
from support.trees import tree_sha

# Credential settings that would let DefaultAzureCredential (or modelship) pick something other than the
# managed identity, or make ManagedIdentityCredential use another flavour than App Service's.
_CREDENTIAL_PREFIXES = ("AZURE_", "IDENTITY_", "MSI_")
_CREDENTIAL_VARS = ("IMDS_ENDPOINT",)


@pytest.fixture(scope="module")
def oauth_azurite(tmp_path_factory) -> Iterator[OAuthAzurite]:
    directory = tmp_path_factory.mktemp("oauth-azurite")
    with start_oauth_azurite(directory) as server:
        yield server
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def identity_endpoint() -> IdentityEndpoint:
    endpoint = IdentityEndpoint().start()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="module")
def key_service(oauth_azurite) -> BlobServiceClient:
    """Shared-key access to the same Azurite: to seed blobs and to look at what the identity wrote."""
    client = BlobServiceClient(
        oauth_azurite.endpoint,
        credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
        connection_verify=str(oauth_azurite.ca_file),
    )
    yield client
    client.close()


@pytest.fixture
def container(key_service) -> str:
    name = f"mi-{uuid.uuid4().hex[:16]}"
    key_service.create_container(name)
    yield name
    key_service.delete_container(name)


@pytest.fixture
def loopback_only(monkeypatch) -> list:
    """Refuse (and record) any connection from this process to an address that is not loopback."""
    outside: list = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def allowed(sock: socket.socket, address) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True
        host = address[0]
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"

    def connect(self, address):
        if not allowed(self, address):
            outside.append(address)
            raise ConnectionRefusedError(f"test guard: no connections outside loopback ({address!r})")
        return real_connect(self, address)

    def connect_ex(self, address):
        if not allowed(self, address):
            outside.append(address)
            return 111  # ECONNREFUSED
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield outside
    assert outside == [], f"something tried to reach {outside}"


@pytest.fixture
def managed_identity_env(monkeypatch, tmp_path, oauth_azurite, identity_endpoint, loopback_only) -> IdentityEndpoint:
    """The environment of a host with a managed identity, and nothing else that could authenticate."""
    for var in list(os.environ):
        if var.startswith(_CREDENTIAL_PREFIXES) or var in _CREDENTIAL_VARS:
            monkeypatch.delenv(var)
    # An empty home: no Azure CLI login, shared MSAL token cache or VS Code sign-in for the chain to find.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("IDENTITY_ENDPOINT", identity_endpoint.url)
    monkeypatch.setenv("IDENTITY_HEADER", identity_endpoint.secret)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(oauth_azurite.ca_file))
    monkeypatch.setenv("MODELSHIP_AZURE_ENDPOINT", oauth_azurite.endpoint)
    identity_endpoint.mode = "ok"
    identity_endpoint.requests.clear()
    identity_endpoint.issued.clear()
    # modelship quiets the azure.identity logger for the CLI's default verbosity; don't let that leak out.
    identity_logger = logging.getLogger("azure.identity")
    level = identity_logger.level
    yield identity_endpoint
    identity_logger.setLevel(level)


def _seed(key_service: BlobServiceClient, container: str, name: str, data: bytes) -> None:
    """A version uploaded by another tool (shared key), so the failure tests have a real model to read."""
    key_service.get_blob_client(container, name).upload_blob(data, overwrite=True)


def _assert_tokens_went_through(endpoint: IdentityEndpoint) -> None:
    assert endpoint.requests, "the managed-identity endpoint was never asked for a token"
    for req in endpoint.requests:
        assert req.path == "/msi/token"
        assert req.identity_header == endpoint.secret
        assert req.query.get("resource") == [STORAGE_AUDIENCE]
        assert req.query.get("api-version") == ["2019-08-01"]


def _assert_no_secrets(text: str, endpoint: IdentityEndpoint) -> None:
    assert endpoint.secret not in text
    for token in endpoint.issued:
        # Any of the token's three parts would be a leak (the claims part is what an attacker replays).
        for part in token.split("."):
            assert part not in text


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("modelship: error: ")
    return lines[0]


def _warnings(caplog) -> list[str]:
    # In the CLI these records would print on stderr next to the error line.
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_publish_resolve_fetch_with_only_a_managed_identity(
    tmp_path, container, key_service, oauth_azurite, managed_identity_env, capsys
):
    endpoint = managed_identity_env
    src = make_model(tmp_path / "m", {"model.onnx": 300_000, "cfg/labels.json": b'["setosa","virginica"]'})
    uri = f"az://{ACCOUNT}/{container}/iris"

    before = oauth_azurite.tokens_accepted()
    assert cli.main(["publish", str(src), uri, "--version", "1.0.0", "--no-progress"]) == 0
    assert oauth_azurite.tokens_accepted() > before, "Azurite saw no bearer token during publish"
    # What the identity wrote, seen with the account key: the blobs and their sha256 metadata.
    props = key_service.get_blob_client(container, "iris/1.0.0/model.onnx").get_blob_properties()
    assert props.metadata[SHA256_KEY] == hashlib.sha256((src / "model.onnx").read_bytes()).hexdigest()
    capsys.readouterr()

    assert cli.main(["resolve", uri, "--json"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["version"] == "1.0.0"
    assert {f["path"]: f["size"] for f in resolved["files"]} == {"model.onnx": 300_000, "cfg/labels.json": 22}

    before = oauth_azurite.tokens_accepted()
    dest = tmp_path / "out"
    assert cli.main(["fetch", uri, str(dest), "--no-progress"]) == 0
    assert oauth_azurite.tokens_accepted() > before, "Azurite saw no bearer token during fetch"
    assert tree_sha(dest) == tree_sha(src)
    assert json.loads((dest / "modelship.json").read_text())["version"] == "1.0.0"

    _assert_tokens_went_through(endpoint)
    assert endpoint.issued
    out = capsys.readouterr()
    _assert_no_secrets(out.out + out.err, endpoint)


def test_identity_endpoint_error_is_one_line_saying_no_credential_worked(
    tmp_path, container, key_service, managed_identity_env, capsys, caplog
):
    endpoint = managed_identity_env
    _seed(key_service, container, "iris/1.0/w.bin", b"w" * 100)
    endpoint.mode = "error"
    dest = tmp_path / "out"

    rc = cli.main(["fetch", f"az://{ACCOUNT}/{container}/iris", str(dest), "--no-progress"])

    out = capsys.readouterr()
    assert rc == AuthError.exit_code == 1
    line = _one_error_line(out.err)
    assert "DefaultAzureCredential could not get a token" in line
    assert repr(ACCOUNT) in line
    assert "az login" in line and "AZURE_STORAGE_CONNECTION_STRING" in line  # what to do
    assert "Traceback" not in out.err and out.out == ""
    assert _warnings(caplog) == []
    assert not dest.exists()
    _assert_tokens_went_through(endpoint)  # the chain did reach the managed identity, which said no
    _assert_no_secrets(out.out + out.err, endpoint)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("wrong-audience", "Invalid token audience"), ("expired", "The token is expired")],
)
def test_token_rejected_by_storage_is_one_line_auth_error(
    tmp_path, container, key_service, managed_identity_env, capsys, caplog, mode, reason
):
    endpoint = managed_identity_env
    _seed(key_service, container, "iris/1.0/w.bin", b"w" * 100)
    endpoint.mode = mode
    dest = tmp_path / "out"

    rc = cli.main(["fetch", f"az://{ACCOUNT}/{container}/iris", str(dest), "--no-progress"])

    out = capsys.readouterr()
    assert rc == AuthError.exit_code
    line = _one_error_line(out.err)
    assert f"container {container!r} of account {ACCOUNT!r}" in line
    assert "denied using DefaultAzureCredential" in line and reason in line
    assert "https://storage.azure.com" in line and "Storage Blob Data" in line  # what to do
    assert _warnings(caplog) == []
    assert not dest.exists()
    _assert_tokens_went_through(endpoint)
    assert endpoint.issued, "the endpoint issued no token, so storage never judged one"
    _assert_no_secrets(out.out + out.err, endpoint)


def test_real_cli_process_prints_one_line_when_no_credential_works(
    tmp_path, container, key_service, managed_identity_env
):
    """The console script, not cli.main in pytest: its stderr is what a pipeline log shows."""
    endpoint = managed_identity_env
    _seed(key_service, container, "iris/1.0/w.bin", b"w" * 100)
    endpoint.mode = "error"

    def run(*flags: str) -> subprocess.CompletedProcess:
        return run_cli(*flags, "resolve", f"az://{ACCOUNT}/{container}/iris", timeout=60)

    proc = run()
    assert proc.returncode == AuthError.exit_code
    line = _one_error_line(proc.stderr)
    assert "DefaultAzureCredential could not get a token" in line and "-v" in line
    _assert_tokens_went_through(endpoint)
    _assert_no_secrets(proc.stdout + proc.stderr, endpoint)

    # The line promises that -v tells why each credential failed: the managed identity's own answer.
    verbose = run("-v")
    assert verbose.returncode == AuthError.exit_code
    assert "ManagedIdentityCredential" in verbose.stderr and "No managed identity is assigned" in verbose.stderr
    assert verbose.stderr.rstrip().splitlines()[-1] == line
    _assert_no_secrets(verbose.stdout + verbose.stderr, endpoint)
