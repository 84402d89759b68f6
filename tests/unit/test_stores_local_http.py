"""Local folders, https single files (a real local HTTP server) and a third-party store (S3: integration/)."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

import modelship
from modelship import cli
from modelship.errors import UsageError
from support.cli import MODELSHIP, run_in_process
from support.models import make_model
from support.servers import QuietHandler, file_server, serving
from support.trees import leftovers, tree_sha


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
    subprocess.run(
        [MODELSHIP, "publish", str(model), f"file://{store}/iris", "--version", "1"],
        check=True,
        capture_output=True,
        preexec_fn=lambda: os.umask(umask),  # the umask of the publishing process, not of pytest's
    )
    modes = {p.relative_to(store).as_posix(): p.stat().st_mode & 0o777 for p in store.rglob("*") if p.is_file()}
    assert modes == {"iris/1/weights.bin": plain, "iris/1/bin/run.sh": script, "iris/1/modelship.json": plain}


def test_local_missing_folder(tmp_path, capsys):
    assert cli.main(["resolve", str(tmp_path / "nope" / "deeper")]) == 1
    assert "nothing is stored under that prefix" in capsys.readouterr().err


@pytest.fixture
def http_file():
    """One file on a real local HTTP server (ETag, Last-Modified, Range), like a CDN or an artifact server."""
    with file_server({"/models/iris.onnx": os.urandom(20 * 1024 * 1024 + 7)}) as ((host, port), handler):
        yield f"http://{host}:{port}/models/iris.onnx", handler


def test_https_single_file_ranged_and_verified(tmp_path, http_file):
    url, handler = http_file
    data = handler.files["/models/iris.onnx"]
    handler.fail_first = 3  # transient 503s are retried with backoff
    result = modelship.fetch(url, tmp_path / "o")
    assert result.version is None
    assert (tmp_path / "o" / "iris.onnx").read_bytes() == data
    assert result.manifest.files[0].sha256 == hashlib.sha256(data).hexdigest()
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


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_credential_is_one_line_exit_1_and_never_retried(capsys, status):
    """A store that refuses the credential: the CLI says so in one line (exit 1, not a usage error and not an
    'unexpected' crash), without the password, after a single request (a refusal is no transient fault)."""
    requests_seen: list[str] = []

    class Refusing(QuietHandler):
        def do_HEAD(self) -> None:
            requests_seen.append(self.command)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

    with serving(Refusing) as server:
        url = f"http://reader:s3cr3t-pw@127.0.0.1:{server.server_address[1]}/models/w.bin"
        rc, out, err = run_in_process(capsys, "resolve", url)
    lines = err.strip().splitlines()
    assert rc == 1 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("modelship: error: ") and f"{status} from http://reader@127.0.0.1:" in lines[0], lines
    assert "check the URL's credentials" in lines[0] and "s3cr3t-pw" not in err, lines
    assert len(requests_seen) == 1, requests_seen


def test_an_abandoned_local_write_leaves_no_temp_file(tmp_path):
    """A publish interrupted while an upload thread is held up (a busy disk) exits under it: the store's
    abandon() removes that write's temp file, and the write, when it goes on, fails instead of installing."""
    import threading

    from modelship.errors import ModelshipError
    from modelship.stores.local import LocalSource
    from modelship.uri import parse

    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    store = LocalSource(parse(str(tmp_path / "store")))
    held, release, errors = threading.Event(), threading.Event(), []

    def progress(n: int) -> None:
        held.set()
        release.wait(10)

    def write() -> None:
        try:
            store.write(f"{tmp_path}/store/w.bin", src, sha256="", md5=b"", progress=progress)
        except ModelshipError as e:
            errors.append(e)

    t = threading.Thread(target=write)
    t.start()
    assert held.wait(10)
    assert [p.name for p in (tmp_path / "store").iterdir() if p.name.endswith(".part")]
    store.abandon()
    assert list((tmp_path / "store").iterdir()) == []
    release.set()
    t.join(10)
    assert errors and list((tmp_path / "store").iterdir()) == []
