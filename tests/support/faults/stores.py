"""Real model stores to put the fault proxy in front of: Azurite, a moto S3 server, a local HTTP file server.

Fixtures; a test module loads them with ``pytest_plugins = ["support.faults.stores"]``.

Each backend publishes two versions once (module scope) and can point modelship either straight at the
store or at a proxy in front of it, the way a user would: through the usual environment variables. More
models (``Backend.model``) are stored on first use: the same files uploaded by another tool (no modelship
manifest, so no chunk digests), and a 24 MiB model with and without chunk digests.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
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
    "w.bin": 9 * 1024 * 1024 + 17,  # two 8 MiB chunks (three 4 MiB ranges without chunk digests), one short
    "b.bin": 1024 * 1024,
    "sub/cfg.json": b'{"labels": ["a", "b"]}',
    "empty.txt": b"",
}
BIG_FILES: dict[str, bytes | int] = {"w.bin": 24 * 1024 * 1024 + 5}  # three 8 MiB chunks and a short one


@dataclass(frozen=True)
class Model:
    """One model in a backend's store, as a fetch sees it."""

    name: str
    files: Path  # what the fetch must install
    version: str | None
    chunks: bool  # the store's manifest (for http: the lock) carries chunk digests
    path: str  # the prefix (http: the file's URL path) below the backend's root


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
    # (name, files folder, path) → store the files there the way another tool would: no modelship manifest
    store_plain: Callable[[Path, str], None] | None = None
    workdir: Path | None = None
    _models: dict[str, Model] = field(default_factory=dict)

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

    def model_uri(self, model: Model, endpoint: str | None = None) -> str:
        return self._uri_of(model.path, endpoint)

    def _uri_of(self, path: str, endpoint: str | None = None) -> str:
        if self.name == "http":
            return f"{endpoint or self.direct_endpoint}{path}"
        return self.base_uri.rsplit("/", 1)[0] + "/" + path

    def model(self, name: str) -> Model:
        """``v2`` (published), ``plain`` (v2's files stored by another tool), ``big`` (24 MiB, published),
        ``big-plain``; stored on first use. For http, ``plain`` means a lock without chunk digests."""
        if name in self._models:
            return self._models[name]
        assert self.workdir is not None and self.store_plain is not None
        big = name.startswith("big")
        files = make_model(self.workdir / "big", BIG_FILES, seed=3) if big else self.v2
        chunks = not name.endswith("plain")
        if self.name == "http":
            path = "/models/big/w.bin" if big else "/models/w.bin"
            self.store_plain(files, path)
            model = Model(name, files, None, chunks, path)
        elif chunks:
            path = "iris-big" if big else "iris"
            if big:
                with pytest.MonkeyPatch.context() as mp:
                    self.env(mp)
                    modelship.publish(files, self._uri_of(path), version="1.0.0", progress=False)
            model = Model(name, files, "1.0.0" if big else "2.0.0", True, path)
        else:
            path = "iris-big-plain" if big else "iris-plain"
            self.store_plain(files, path)
            model = Model(name, files, None, False, path)
        self._models[name] = model
        return model


def _upload_each(folder: Path, put: Callable[[str, bytes], object]) -> None:
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            put(p.relative_to(folder).as_posix(), p.read_bytes())


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
        lambda files, path: _upload_each(files, lambda rel, data: container.upload_blob(f"{path}/{rel}", data)),
        tmp_path_factory.mktemp("azextra"),
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
    s3 = boto3.client(
        "s3", endpoint_url=direct, aws_access_key_id="x", aws_secret_access_key=S3_SECRET, region_name="us-east-1"
    )
    backend = Backend(
        "s3",
        moto_server,
        f"s3://{bucket}/models/iris",
        v1,
        v2,
        [S3_SECRET],
        env,
        direct,
        lambda files, path: _upload_each(
            files, lambda rel, data: s3.put_object(Bucket=bucket, Key=f"models/{path}/{rel}", Body=data)
        ),
        tmp_path_factory.mktemp("s3extra"),
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
    with file_server(files) as (addr, handler):
        direct = f"http://{addr[0]}:{addr[1]}"

        def serve(folder: Path, path: str) -> None:
            handler.files[path] = (folder / "w.bin").read_bytes()

        yield Backend(
            "http", addr, f"{direct}/models/w.bin", v1, v2, [], {}, direct, serve, tmp_path_factory.mktemp("httpextra")
        )
