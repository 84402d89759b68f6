"""The store contract (tests/support/contract.py) on the real stores: ``az://`` on Azurite, ``s3://`` on a moto
server, ``oci://`` on the testbed registry. (``file://``: tests/unit/test_store_contract.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from support.contract import FolderStoreContract, StoreContract, StoreUnderTest


@pytest.fixture
def store(request, monkeypatch) -> Iterator[StoreUnderTest]:
    """A fresh, empty place in the store named by the test's parameter; emptied afterwards where it can be."""
    kind = request.param
    if kind == "az":
        request.getfixturevalue("azure_env")
        container = request.getfixturevalue("blob_container")  # deleted with all it holds afterwards
        yield StoreUnderTest(
            "az",
            f"az://devstoreaccount1/{container.container_name}",
            lambda key, data: container.upload_blob(key, data, overwrite=True),
        )
    elif kind == "s3":
        import boto3

        host, port = request.getfixturevalue("moto_server")
        endpoint = f"http://{host}:{port}"
        for var, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(var, value)
        bucket = f"contract-{uuid.uuid4().hex[:12]}"
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket=bucket)
        yield StoreUnderTest("s3", f"s3://{bucket}", lambda key, data: s3.put_object(Bucket=bucket, Key=key, Body=data))
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)
    else:
        registry = request.getfixturevalue("registry")
        yield StoreUnderTest("oci", f"oci://{registry}/contract-{uuid.uuid4().hex[:10]}")


@pytest.mark.parametrize("store", [pytest.param("az", marks=pytest.mark.azurite), "s3"], indirect=True)
class TestFolderStores(StoreContract, FolderStoreContract):
    pass


@pytest.mark.parametrize("store", ["oci"], indirect=True)
class TestOciStore(StoreContract):
    pass
