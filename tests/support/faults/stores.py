"""Real model stores to put the fault proxy in front of: Azurite, a moto S3 server, a local HTTP file server.

Fixtures; a test module loads them with ``pytest_plugins = ["support.faults.stores"]``.

Each backend publishes two versions once (module scope) and can point modelship either straight at the
store or at a proxy in front of it, the way a user would: through the usual environment variables.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import modelship

from ..models import make_model
from ..servers import file_server

AZURITE_ACCOUNT = "devstoreaccount1"
# Credentials the tests look for in every output: they must never show up.
S3_SECRET = "FAKE-S3-SECRET-modelship-3f9c1e"  # moto does not check it; a leak would still be a leak

V1_FILES: dict[str, bytes | int] = {"w.bin": 2 * 1024 * 1024 + 3, "old.txt": b"old"}
V2_FILES: dict[str, bytes | int] = {
    "w.bin": 9 * 1024 * 1024 + 17,  # three 4 MiB ranges, the last one short
    "b.bin": 1024 * 1024,
    "sub/cfg.json": b'{"labels": ["a", "b"]}',
    "empty.txt": b"",
}


@dataclass
class Backend:
    """A store holding versions 1.0.0 and 2.0.0 of one model; ``env`` points modelship at it or at a proxy."""

    name: str
    upstream: tuple[str, int]
    base_uri: str  # the model URI (for http, of the direct server; see uri())
    v1: Path
    v2: Path
    secrets: list[str]
    env_template: dict[str, str] = field(default_factory=dict)  # {ENDPOINT} is replaced
    direct_endpoint: str = ""

    def env(self, monkeypatch: pytest.MonkeyPatch, endpoint: str | None = None) -> None:
        for key, value in self.env_template.items():
            monkeypatch.setenv(key, value.replace("{ENDPOINT}", endpoint or self.direct_endpoint))

    def uri(self, endpoint: str | None = None) -> str:
        if self.name == "http":
            return self.base_uri.replace(self.direct_endpoint, endpoint or self.direct_endpoint)
        return self.base_uri

    @property
    def versioned(self) -> bool:
        return self.name != "http"


def _models(tmp: Path) -> tuple[Path, Path]:
    return make_model(tmp / "v1", V1_FILES, seed=1), make_model(tmp / "v2", V2_FILES, seed=2)


@pytest.fixture(scope="module")
def azurite_backend(tmp_path_factory, blob_service, azurite_connection_string) -> Iterator[Backend]:
    container = blob_service.create_container(f"faults-{uuid.uuid4().hex[:16]}")
    v1, v2 = _models(tmp_path_factory.mktemp("azmodels"))
    parts = dict(p.split("=", 1) for p in azurite_connection_string.split(";") if "=" in p)
    key = parts["AccountKey"]
    direct = parts["BlobEndpoint"].rsplit("/", 1)[0]  # http://127.0.0.1:PORT
    host, port = direct.removeprefix("http://").split(":")
    cs = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
        f"BlobEndpoint={{ENDPOINT}}/{AZURITE_ACCOUNT};"
    )
    backend = Backend(
        "azure",
        (host, int(port)),
        f"az://{AZURITE_ACCOUNT}/{container.container_name}/iris",
        v1,
        v2,
        [key, key[:24]],
        {"AZURE_STORAGE_CONNECTION_STRING": cs},
        direct,
    )
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_KEY"):
            mp.delenv(var, raising=False)
        backend.env(mp)
        modelship.publish(v1, backend.uri(), version="1.0.0", progress=False)
        modelship.publish(v2, backend.uri(), version="2.0.0", progress=False)
    yield backend
    container.delete_container()


@pytest.fixture(scope="module")
def s3_backend(tmp_path_factory, moto_server) -> Iterator[Backend]:
    import boto3

    bucket = f"faults-{uuid.uuid4().hex[:16]}"
    direct = f"http://{moto_server[0]}:{moto_server[1]}"
    env = {
        "AWS_ENDPOINT_URL": "{ENDPOINT}",
        "AWS_ACCESS_KEY_ID": "AKIAFAKEMODELSHIP",
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    v1, v2 = _models(tmp_path_factory.mktemp("s3models"))
    backend = Backend("s3", moto_server, f"s3://{bucket}/models/iris", v1, v2, [S3_SECRET], env, direct)
    s3 = boto3.client(
        "s3", endpoint_url=direct, aws_access_key_id="x", aws_secret_access_key=S3_SECRET, region_name="us-east-1"
    )
    s3.create_bucket(Bucket=bucket)
    with pytest.MonkeyPatch.context() as mp:
        backend.env(mp)
        modelship.publish(v1, backend.uri(), version="1.0.0", progress=False)
        modelship.publish(v2, backend.uri(), version="2.0.0", progress=False)
    yield backend
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):  # thousands after many runs
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="module")
def http_backend(tmp_path_factory) -> Iterator[Backend]:
    """One file over http (no versions, no checksum from the server: fetched with a lock file)."""
    v1, v2 = _models(tmp_path_factory.mktemp("httpmodels"))
    files = {"/models/w.bin": (v2 / "w.bin").read_bytes(), "/models/old.bin": (v1 / "w.bin").read_bytes()}
    with file_server(files) as (addr, _):
        direct = f"http://{addr[0]}:{addr[1]}"
        yield Backend("http", addr, f"{direct}/models/w.bin", v1, v2, [], {}, direct)
