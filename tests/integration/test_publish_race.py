"""Two publishes of the same version at once, on Azurite, moto's S3 and a local folder: the marker is created
conditionally (If-None-Match: * / If-Match, an exclusive link locally), so one goes on and the other stops saying
the version is being published by another process (issue 19 item 5: the loser said "InvalidBlockList … left
incomplete … run the same command again" while the version was complete).

Both publishes are held after their listing until both have listed: each sees the version as it was before
either wrote, the race at its worst, every run.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import modelship
from modelship.errors import ModelshipError
from modelship.repos import folder_publish
from support.models import make_model

FILES: dict[str, bytes | int] = {"w.bin": 3 * 1024 * 1024, "sub/cfg.json": b'{"a": 1}'}


@pytest.fixture(params=["file", "az", "s3"])
def store_uri(request, tmp_path, monkeypatch) -> Iterator[str]:
    """A fresh model URI in each kind of store that can be published to."""
    if request.param == "file":
        yield (tmp_path / "store").as_uri()
        return
    if request.param == "az":
        blob_service = request.getfixturevalue("blob_service")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", request.getfixturevalue("azurite_connection_string"))
        container = blob_service.create_container(f"race-{uuid.uuid4().hex[:16]}")
        yield f"az://devstoreaccount1/{container.container_name}/iris"
        container.delete_container()
        return
    import boto3

    host, port = request.getfixturevalue("moto_server")
    endpoint = f"http://{host}:{port}"
    for key, value in (
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(key, value)
    bucket = f"race-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    yield f"s3://{bucket}/iris"


def _both_listed(monkeypatch) -> None:
    """Each publish waits after its listing until the other has listed too."""
    barrier = threading.Barrier(2, timeout=60)
    listing = folder_publish._listing

    def held(*args, **kwargs):
        found = listing(*args, **kwargs)
        barrier.wait()
        return found

    monkeypatch.setattr(folder_publish, "_listing", held)
    # moto checks If-None-Match and then stores, not at once (S3 itself is atomic): two creates in the same
    # instant can both pass there. One conditional create at a time keeps the race this test is about (both
    # publishes listed an empty version before either wrote) and takes moto's own race out of it.
    from modelship.stores.s3 import S3Source

    one_at_a_time = threading.Lock()
    create = S3Source.create_bytes

    def serialized(self, *args, **kwargs):
        with one_at_a_time:
            return create(self, *args, **kwargs)

    monkeypatch.setattr(S3Source, "create_bytes", serialized)


def _at_once(run: Callable[[], object]) -> list[object]:
    """``run`` in two threads at once: what each returned or raised."""
    results: list[object] = [None, None]

    def one(i: int) -> None:
        try:
            results[i] = run()
        except BaseException as e:  # noqa: BLE001 - the result to check
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def _one_won(results: list[object], uri: str) -> None:
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1, results
    (loser,) = errors
    assert isinstance(loser, ModelshipError), repr(loser)
    assert f"{uri.rstrip('/')}/1 is being published by another process" in str(loser), str(loser)
    assert "run the same command again" not in str(loser) and "incomplete" not in str(loser)
    res = modelship.resolve(uri)
    assert res.version == "1" and sorted(f.path for f in res.files) == ["sub/cfg.json", "w.bin"]


def test_two_publishes_of_a_new_version_one_goes_on(store_uri, tmp_path, monkeypatch):
    model = make_model(tmp_path / "model", FILES)
    _both_listed(monkeypatch)
    _one_won(_at_once(lambda: modelship.publish(model, store_uri, version="1", progress=False)), store_uri)


def test_two_resumes_of_an_interrupted_publish_one_goes_on(store_uri, tmp_path, monkeypatch):
    """Both see the marker of a publish that failed half-way, both resume: only one may replace it."""
    model: Path = make_model(tmp_path / "model", FILES)
    with monkeypatch.context() as m:

        def failed(*args, **kwargs):
            raise ModelshipError("the network went away")

        m.setattr(folder_publish, "_upload", failed)
        with pytest.raises(ModelshipError, match="left incomplete"):
            modelship.publish(model, store_uri, version="1", progress=False)
    _both_listed(monkeypatch)
    _one_won(_at_once(lambda: modelship.publish(model, store_uri, version="1", progress=False)), store_uri)
