"""Fixtures of the hostile-input cases (test_hostile_stores.py, test_hostile_cli.py): the stores they read,
prepared once per module, and the credentials they may use."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

import modelship
from modelship.repos.folder_publish import PENDING_MARKER
from support.hostile import S3_NAMES, Ctx
from support.models import make_model
from support.oms import keypair
from support.pickles import evil_pickle, plain_pickle, torch_zip


@pytest.fixture(scope="module")
def stores(tmp_path_factory, blob_service, azurite_connection_string, moto_server):
    """One Azurite container, one S3 bucket and one local folder holding every odd thing the cases need."""
    import boto3

    tmp = tmp_path_factory.mktemp("hostile")
    container = blob_service.create_container(f"hostile-{uuid.uuid4().hex[:12]}")
    bucket = f"hostile-{uuid.uuid4().hex[:12]}"
    endpoint = f"http://{moto_server[0]}:{moto_server[1]}"
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1"
    )
    s3.create_bucket(Bucket=bucket)
    local = tmp / "store"
    cs = dict(p.split("=", 1) for p in azurite_connection_string.split(";") if "=" in p)
    ctx = Ctx(
        tmp, container.container_name, bucket, local, tmp / "modelship.lock", cs["BlobEndpoint"], cs["AccountKey"]
    )
    good = make_model(tmp / "good", {"w.bin": 3000, "sub/cfg.json": b"{}"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string)
        mp.setenv("MODELSHIP_CACHE_DIR", str(tmp / "setup-cache"))
        modelship.publish(good, ctx.az("iris"), version="1.0.0", progress=False)
        modelship.lock(ctx.az("iris"), output=ctx.lock)
        zero = make_model(tmp / "zero", {"a.txt": b"", "deep/er/b.txt": b"", "c.bin": b""})
        modelship.publish(zero, ctx.az("zero"), version="1", progress=False)
    up = container.upload_blob
    # A publish that died half-way (marker, some files, no manifest), and one that only wrote its marker.
    up(f"iris/2.0.0/{PENDING_MARKER}", b"{}")
    up("iris/2.0.0/w.bin", b"partial")
    up(f"iris/3.0.0/{PENDING_MARKER}", b"{}")
    up(f"stuck/1.0/{PENDING_MARKER}", b"{}")  # every version incomplete
    up("foreign/1.0/w.bin", b"uploaded by azcopy")  # no marker, no manifest: another tool's upload, usable
    up("damaged/1/modelship.json", json.dumps({"files": [{"path": "gone.bin", "size": 1, "sha256": "0" * 64}]}))
    up("badmanifest/1/modelship.json", b"{not json")
    up("badmanifest/1/w.bin", b"x")
    up("emptyver/1/modelship.json", json.dumps({"files": []}).encode())
    up("schema99/1/modelship.json", json.dumps({"schema": 99, "files": []}).encode())  # a newer modelship's
    up("schema99/1/w.bin", b"x")
    up("abs/w.bin", b"ok")
    up("abs//etc/cron.d/evil", b"owned")  # an empty segment: the rest is an absolute path
    up("longname/w.bin", b"ok")
    up("longname/" + "L" * 300, b"x")  # one path segment longer than any file system allows
    for case, name in S3_NAMES.items():
        s3.put_object(Bucket=bucket, Key=f"{case}/good.bin", Body=b"fine")
        s3.put_object(Bucket=bucket, Key=f"{case}/{name}", Body=b"evil")
    _signature_folders(tmp, local)
    make_model(local / "pickled", {"est.pkl": evil_pickle(tmp / "MARKER"), "plain.pkl": plain_pickle()})
    make_model(local / "renamed", {"weights.safetensors": evil_pickle(tmp / "MARKER", protocol=0)})
    make_model(local / "torchzip", {"model.pt": torch_zip(evil_pickle(tmp / "MARKER"))})
    (local / "newline").mkdir(parents=True)
    (local / "newline" / "good.bin").write_bytes(b"fine")
    (local / "newline" / "line\nbreak").write_bytes(b"evil")
    deep = local / "toolong" / "/".join(["d" * 200] * 5)  # 1,000+ bytes of relative name
    deep.mkdir(parents=True)
    (deep / ("f" * 100)).write_bytes(b"x")
    (local / "toolong" / "good.bin").write_bytes(b"fine")
    yield ctx, endpoint
    container.delete_container()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=bucket)


def _signature_folders(tmp: Path, local: Path) -> None:
    """Model folders as fetch writes them (modelship.json), each with a hostile model.sig; keys in tmp/keys."""
    from modelship.trust import oms

    (tmp / "keys").mkdir()
    private, _ = keypair(tmp / "keys", "team")
    key = oms.load_private_key(private)
    files = {"w.bin": b"weights" * 100, "cfg.json": b"{}"}
    shas = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    good = oms.sign(shas, key)
    other = oms.sign({"another-model.onnx": "ab" * 32}, key)  # a real signature, of another model
    for name, sig in (("truncated", good[: len(good) // 2]), ("garbled", bytes(range(256)) * 4), ("other", other)):
        make_model(local / f"sig-{name}", files, uri="file:///models/iris", version="1")
        (local / f"sig-{name}" / "model.sig").write_bytes(sig)
    make_model(local / "sig-good", files, uri="file:///models/iris", version="1")
    (local / "sig-good" / "model.sig").write_bytes(good)
    make_model(local / "sig-symlink", files, uri="file:///models/iris", version="1")
    (local / "sig-symlink" / "model.sig").symlink_to(local / "sig-good" / "model.sig")  # one that would verify


@pytest.fixture
def env(stores, monkeypatch, azurite_connection_string):
    """Credentials for Azurite and moto only: no case can send a request anywhere else."""
    ctx, endpoint = stores
    for var in ("AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return ctx
