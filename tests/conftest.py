"""Fixtures for the real testbed (scripts/testbed.sh up): Docker, Azurite, a registry, the base image, moto.

A test that needs the testbed fails with one line saying how to start it; nothing is skipped. The tests
are grouped by what they need: unit/ (nothing), integration/ (these services), reliability/ (fault runs,
hostile input, cancellations, secrets, restarts); their helpers are in support/.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator

import pytest

from support import testbed as tb
from support.engine import remove_built
from support.ports import free_port
from support.servers import answers, running

TESTBED = tb.read_env()
tb.export_testcontainers_settings(TESTBED)


# A shell starts a background job (`make reliability &`) with SIGINT ignored, and children inherit that: the
# commands the tests interrupt would ignore the Ctrl-C they are sent, as they should when a user asked for that.
# With a handler here, every process the tests start gets SIGINT's default again (a handler does not survive exec).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def testbed() -> dict[str, str]:
    """The endpoints written by scripts/testbed.sh up."""
    tb.need("MODELSHIP_TESTBED_REGISTRY", TESTBED)
    return dict(TESTBED)


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure here means the same thing
        pytest.fail(f"Docker engine not reachable ({e.__class__.__name__}): {tb.SETUP_HINT}", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    name = tb.base_image(TESTBED)
    import docker.errors

    try:
        docker_client.images.get(name)
    except docker.errors.ImageNotFound:
        pytest.fail(f"base image {name} missing: {tb.SETUP_HINT}", pytrace=False)
    return name


@pytest.fixture(scope="session")
def registry() -> str:
    """host:port of the local OCI registry (stands in for ACR)."""
    import requests

    addr = tb.need("MODELSHIP_TESTBED_REGISTRY", TESTBED)
    try:
        requests.get(f"http://{addr}/v2/", timeout=5).raise_for_status()
    except requests.RequestException as e:
        pytest.fail(f"registry at {addr} not answering ({e.__class__.__name__}): {tb.SETUP_HINT}", pytrace=False)
    return addr


@pytest.fixture(scope="session")
def registry_base_image(docker_client, base_image, registry) -> str:
    """The base image in the registry, pinned (``REGISTRY/REPO@sha256:…``): what `build --builder registry` starts
    from. The testbed pushes it (MODELSHIP_TESTBED_BASE_REF); pushed here when an older testbed did not."""
    from support.oci import push_image

    if TESTBED.get("MODELSHIP_TESTBED_BASE_REF") and base_image == TESTBED.get("MODELSHIP_BASE_IMAGE"):
        return TESTBED["MODELSHIP_TESTBED_BASE_REF"]
    repo = f"{registry}/modelship/base"
    tag = base_image.rsplit(":", 1)[-1] if ":" in base_image.rsplit("/", 1)[-1] else "latest"
    docker_client.images.get(base_image).tag(repo, tag)
    return f"{repo}@{push_image(docker_client, f'{repo}:{tag}')}"


@pytest.fixture
def image_tags(docker_client) -> Iterator[list[str]]:
    """Image tags (or references) a test creates; removed, with their now-unused layers, afterwards."""
    created: list[str] = []
    yield created
    for tag in created:
        remove_built(docker_client, tag)


@pytest.fixture(scope="session")
def azurite_connection_string() -> str:
    return tb.need("MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING", TESTBED)


@pytest.fixture(scope="session")
def blob_service(azurite_connection_string):
    from azure.core.exceptions import ServiceRequestError
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(azurite_connection_string)
    try:
        client.get_service_properties()
    except ServiceRequestError:
        pytest.fail(f"Azurite not answering: {tb.SETUP_HINT}", pytrace=False)
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


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory) -> Iterator[tuple[str, int]]:
    """A real S3 API (moto's server) on 127.0.0.1 for the whole session: (host, port)."""
    port = free_port()
    cmd = [tb.moto_binary(), "-H", "127.0.0.1", "-p", str(port)]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    # Its imports (boto, werkzeug, every mocked service) take seconds on a loaded 2-core machine: a generous wait,
    # and the log's tail if it still does not come up.
    ready = answers(f"http://127.0.0.1:{port}")
    with running(cmd, ready=ready, what=f"moto_server on port {port}", log=log, timeout=90):
        yield ("127.0.0.1", port)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch) -> None:
    """Each test gets its own modelship cache, so cache hits are the test's own doing."""
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``slow`` (a minute or two each: the demo, the secrets flow, cancelled builds) first, the
    rest in their order. The Makefile's ``--dist loadscope --no-loadscope-reorder`` then hands whole modules, in
    this order, to whichever worker is free: a module's fixtures are made once, the modules of the slow tests
    start first, and the end is short modules. (``--dist load`` handed each worker a first chunk of a quarter of
    its share -- all the slow tests to one worker, which ran them one after another while the others idled.)"""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
