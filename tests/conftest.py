"""Fixtures for the real testbed (scripts/testbed.sh up): Docker, Azurite, a registry, the base image.

A test that needs the testbed fails with one line saying how to start it; nothing is skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = Path(os.environ.get("MODELSHIP_TESTBED_DIR", ROOT / ".testbed")) / "env"
SETUP_HINT = "run 'scripts/testbed.sh up' (or 'make test', which does it) first"


def _read_env_file() -> dict[str, str]:
    if not ENV_FILE.is_file():
        return {}
    pairs = (
        line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    return {k.strip(): v.strip().strip("'") for k, v in pairs}


TESTBED = _read_env_file()
# The testcontainers settings must be in the environment before testcontainers reads them.
for _key in ("TESTCONTAINERS_RYUK_DISABLED", "TESTCONTAINERS_HOST_OVERRIDE"):
    if _key in TESTBED:
        os.environ.setdefault(_key, TESTBED[_key])


def _need(key: str) -> str:
    if key not in TESTBED:
        pytest.fail(f"testbed not up ({ENV_FILE} has no {key}): {SETUP_HINT}", pytrace=False)
    return TESTBED[key]


@pytest.fixture(scope="session")
def testbed() -> dict[str, str]:
    """The endpoints written by scripts/testbed.sh up."""
    _need("MODELSHIP_TESTBED_REGISTRY")
    return dict(TESTBED)


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure here means the same thing
        pytest.fail(f"Docker engine not reachable ({e.__class__.__name__}): {SETUP_HINT}", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    name = os.environ.get("MODELSHIP_BASE_IMAGE") or _need("MODELSHIP_BASE_IMAGE")
    import docker.errors

    try:
        docker_client.images.get(name)
    except docker.errors.ImageNotFound:
        pytest.fail(f"base image {name} missing: {SETUP_HINT}", pytrace=False)
    return name


@pytest.fixture(scope="session")
def registry() -> str:
    """host:port of the local OCI registry (stands in for ACR)."""
    import requests

    addr = _need("MODELSHIP_TESTBED_REGISTRY")
    try:
        requests.get(f"http://{addr}/v2/", timeout=5).raise_for_status()
    except requests.RequestException as e:
        pytest.fail(f"registry at {addr} not answering ({e.__class__.__name__}): {SETUP_HINT}", pytrace=False)
    return addr


@pytest.fixture(scope="session")
def azurite_connection_string() -> str:
    return _need("MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING")


@pytest.fixture(scope="session")
def blob_service(azurite_connection_string):
    from azure.core.exceptions import ServiceRequestError
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(azurite_connection_string)
    try:
        client.get_service_properties()
    except ServiceRequestError:
        pytest.fail(f"Azurite not answering: {SETUP_HINT}", pytrace=False)
    return client


@pytest.fixture
def blob_container(blob_service) -> Iterator:
    """A fresh, empty blob container for one test; deleted afterwards."""
    container = blob_service.create_container(f"t-{uuid.uuid4().hex[:20]}")
    yield container
    container.delete_container()


@pytest.fixture
def azure_env(monkeypatch, azurite_connection_string) -> str:
    """Point modelship's Azure credentials at Azurite, like a pipeline's secret variable would."""
    for var in ("AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string)
    return azurite_connection_string


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch) -> None:
    """Each test gets its own modelship cache, so cache hits are the test's own doing."""
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
