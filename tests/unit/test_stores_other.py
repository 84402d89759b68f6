"""S3 (real moto server), local folders and https single files (a real local HTTP server)."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

import modelship
from _store_helpers import leftovers, make_model, tree_sha
from modelship import cli
from modelship.errors import AuthError, IntegrityError, NotFoundError, UsageError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    port = _free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url, timeout=1)
            break
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto_server did not start on {url}", pytrace=False)
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_bucket(moto_endpoint, monkeypatch, request):
    import boto3

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


def test_local_folder_store(tmp_path):
    store = tmp_path / "store"
    modelship.publish(make_model(tmp_path / "m", {"a.bin": 100}), f"file://{store}/iris", version="2")
    modelship.publish(make_model(tmp_path / "m1", {"a.bin": 50}, seed=1), str(store / "iris"), version="10")
    assert modelship.resolve(str(store / "iris")).version == "10"
    modelship.fetch(f"file://{store}/iris", tmp_path / "o", version="2")
    assert tree_sha(tmp_path / "o") == tree_sha(tmp_path / "m")
    assert leftovers(store / "iris" / "2") == []


@pytest.mark.parametrize(("umask", "plain", "script"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_local_publish_keeps_the_sources_modes_under_the_umask(tmp_path, umask, plain, script):
    """As cp does: the source's mode less the umask (not mkstemp's 0600, which hid the model from its readers)."""
    model = make_model(tmp_path / "m", {"weights.bin": 100, "bin/run.sh": b"#!/bin/sh\n"})
    os.chmod(model / "weights.bin", 0o644)
    os.chmod(model / "bin" / "run.sh", 0o755)  # noqa: S103 - an executable in a model, on purpose
    store = tmp_path / "store"
    modelship_cli = str(Path(sys.executable).with_name("modelship"))
    subprocess.run(
        [modelship_cli, "publish", str(model), f"file://{store}/iris", "--version", "1"],
        check=True,
        capture_output=True,
        preexec_fn=lambda: os.umask(umask),  # the umask of the publishing process, not of pytest's
    )
    modes = {p.relative_to(store).as_posix(): p.stat().st_mode & 0o777 for p in store.rglob("*") if p.is_file()}
    assert modes == {"iris/1/weights.bin": plain, "iris/1/bin/run.sh": script, "iris/1/modelship.json": plain}


def test_local_missing_folder(tmp_path, capsys):
    assert cli.main(["resolve", str(tmp_path / "nope" / "deeper")]) == 1
    assert "nothing is stored under that prefix" in capsys.readouterr().err


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file with ETag, Last-Modified and Range, like a CDN or an artifact server."""

    data = b""
    etag = '"v1"'
    fail_first = 0  # answer 503 this many times first: a flaky server

    def log_message(self, *args):
        pass

    def _headers(self, status, length, extra=None):
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", self.etag)
        self.send_header("Last-Modified", "Wed, 25 Nov 2026 10:00:00 GMT")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def do_HEAD(self):
        if self.path.endswith("/missing.bin"):
            self.send_error(404)
            return
        self._headers(200, len(self.data))

    def do_GET(self):
        cls = type(self)
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_error(503)
            return
        if self.headers.get("If-Match") not in (None, self.etag):
            self.send_error(412)
            return
        start, end = 0, len(self.data) - 1
        if rng := self.headers.get("Range"):
            a, b = rng.removeprefix("bytes=").split("-")
            start, end = int(a), int(b)
        body = self.data[start : end + 1]
        self._headers(206 if rng else 200, len(body), {"Content-Range": f"bytes {start}-{end}/{len(self.data)}"})
        self.wfile.write(body)


@pytest.fixture
def http_file():
    _RangeHandler.data = os.urandom(20 * 1024 * 1024 + 7)
    _RangeHandler.fail_first = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/models/iris.onnx", _RangeHandler
    server.shutdown()
    server.server_close()


def test_https_single_file_ranged_and_verified(tmp_path, http_file):
    url, handler = http_file
    handler.fail_first = 3  # transient 503s are retried with backoff
    result = modelship.fetch(url, tmp_path / "o")
    assert result.version is None
    assert (tmp_path / "o" / "iris.onnx").read_bytes() == handler.data
    assert result.manifest.files[0].sha256 == hashlib.sha256(handler.data).hexdigest()
    assert modelship.fetch(url, tmp_path / "o2").downloaded_files == 0  # cached by ETag


def test_https_missing_and_pinning_refused(tmp_path, http_file, capsys):
    url, _ = http_file
    assert cli.main(["fetch", url.replace("iris.onnx", "missing.bin"), str(tmp_path / "o")]) == 1
    assert "not found (404)" in capsys.readouterr().err
    with pytest.raises(UsageError, match="single file"):
        modelship.resolve(url, version="1")


def test_third_party_source_through_the_plugin_hook(tmp_path):
    """A plugin adds a scheme (declared once, in the store table) via the same pluggy hook entry-point plugins use."""
    from modelship.hookspecs import hookimpl
    from modelship.stores import plugin_manager
    from modelship.stores.local import LocalSource

    store = make_model(tmp_path / "x" / "1.0", {"w": 10})

    def mem_source(uri, credential):
        source = LocalSource(uri, credential)
        source.root = tmp_path  # mem://anything/x → tmp_path/x
        return source

    class MemPlugin:
        @hookimpl
        def modelship_stores(self):
            return {"mem": mem_source}

    plugin_manager().register(MemPlugin(), name="mem")
    try:
        with pytest.raises(UsageError, match="mem://"):
            modelship.resolve("gs://bucket/x")  # the error lists the plugin's scheme
        assert modelship.resolve("mem://anything/x").version == "1.0"
    finally:
        plugin_manager().unregister(name="mem")
    assert store.exists()


def test_auth_error_class_exists_for_sources():
    assert issubclass(AuthError, modelship.ModelshipError)
