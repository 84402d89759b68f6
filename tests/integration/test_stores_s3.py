"""S3 against a real moto server: publish, resolve, fetch, and what goes wrong."""

from __future__ import annotations

import pytest

import modelship
from modelship import cli
from modelship.errors import IntegrityError, NotFoundError
from support.models import make_model
from support.trees import tree_sha


@pytest.fixture
def s3_bucket(moto_server, monkeypatch, request):
    import boto3

    host, port = moto_server
    moto_endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"b-{abs(hash(request.node.nodeid)) % 10**10}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket=name)
    yield name
    for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def test_s3_publish_resolve_fetch(tmp_path, s3_bucket):
    src = make_model(tmp_path / "m", {"model.onnx": 3000, "sub/l.json": b"[1]"})
    uri = f"s3://{s3_bucket}/models/iris"
    modelship.publish(src, uri, version="1.9.0")
    modelship.publish(make_model(tmp_path / "m2", {"model.onnx": 10}), uri, version="1.10.0")
    assert modelship.resolve(uri).version == "1.10.0"
    result = modelship.fetch(uri, tmp_path / "o", version="1.9.0")
    assert tree_sha(tmp_path / "o") == tree_sha(src)
    assert all(f.sha256 for f in modelship.resolve(uri, version="1.9.0").files)
    assert result.downloaded_files == 2
    assert modelship.fetch(uri, tmp_path / "o2", version="1.9.0").downloaded_files == 0


def test_s3_missing_bucket_and_bad_credentials(tmp_path, s3_bucket, monkeypatch, capsys):
    assert cli.main(["fetch", "s3://no-such-bucket-zz/x", str(tmp_path / "o")]) == 1
    assert "bucket 'no-such-bucket-zz' not found" in capsys.readouterr().err
    with pytest.raises(NotFoundError):
        modelship.resolve(f"s3://{s3_bucket}/nothing")


def test_s3_corrupted_object_detected(tmp_path, s3_bucket):
    import boto3

    uri = f"s3://{s3_bucket}/m"
    modelship.publish(make_model(tmp_path / "m", {"w": 100}), uri, version="1")
    s3 = boto3.client("s3")
    head = s3.head_object(Bucket=s3_bucket, Key="m/1/w")
    s3.put_object(Bucket=s3_bucket, Key="m/1/w", Body=b"\0" * 100, Metadata=head["Metadata"])
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        modelship.fetch(uri, tmp_path / "o")
    assert not (tmp_path / "o").exists()
