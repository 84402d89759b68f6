"""What a first `modelship build` meets (issue #14): a model of thousands of files, a base image the engine does
not have yet, and a generated image's first start. Real Docker engine, registry and the testbed's base image."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import tarfile
import uuid

import docker.errors
import pytest

from modelship.cli import main
from modelship.image import build
from support.builds import make_app
from support.example import run_like_the_pod, wait_ready
from support.models import make_model

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

# A WSGI app for gunicorn: ready and live once it serves; nothing but the standard library.
WSGI_APP = """\
def app(environ, start_response):
    ok = environ["PATH_INFO"] in ("/health/ready", "/health/live")
    start_response("200 OK" if ok else "404 Not Found", [("Content-Type", "text/plain")])
    return [b"ok" if ok else b"no"]
"""


@pytest.fixture
def tags(docker_client):
    """Image tags a test creates; removed afterwards."""
    created: list[str] = []
    yield created
    for tag in created:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, force=True)


def _name() -> str:
    return f"modelship-test/first-use-{uuid.uuid4().hex[:10]}"


def test_a_model_of_3000_files_builds_and_passes_the_label_check(tmp_path, docker_client, base_image, tags):
    """The manifest is too large for a label: the label keeps uri, version and digest, the file has the rest,
    and the plugin's label and file checks pass reading the file."""
    files = {f"shard-{i // 100:02d}/piece-{i:04d}.bin": f"piece {i}\n".encode() for i in range(3000)}
    model = make_model(tmp_path / "model", files, uri="az://acct/models/many-files", version="3.1.0")
    app = make_app(tmp_path / "app")
    tag = f"{_name()}:1"
    tags.append(tag)
    img = build(
        app, model, tag, base_image=base_image, entrypoint="python app.py", quiet=True, docker_client=docker_client
    )

    labels = docker_client.images.get(tag).labels
    assert "io.modelship.model.manifest" not in labels
    assert labels["io.modelship.model.uri"] == "az://acct/models/many-files"
    assert labels["io.modelship.model.version"] == "3.1.0"
    assert sum(len(k) + len(v) for k, v in labels.items()) < 8 * 1024
    container = docker_client.containers.create(tag)
    try:  # docker cp: the whole file, not a log stream
        stream, _ = container.get_archive("/opt/modelship/model/modelship.json")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            inside = json.load(tar.extractfile("modelship.json"))  # type: ignore[arg-type]
    finally:
        container.remove(force=True)
    assert len(inside["files"]) == 3000
    assert inside["digest"] == labels["io.modelship.model.digest"] == img.labels["io.modelship.model.digest"]

    # the plugin, as a pipeline runs it: the two checks that read the manifest
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "--rootdir", str(tmp_path),
         "-c", str(tmp_path / "pytest.ini"), "--modelship-image", tag,
         "-k", "labels_match_model or model_files_sha256"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "labels_match_model PASSED" in out and "model_files_sha256 PASSED" in out, out[-3000:]


def test_a_small_model_keeps_its_manifest_label(tmp_path, docker_client, base_image, tags):
    model = make_model(tmp_path / "model", {"m.bin": b"m"}, uri="az://acct/models/small", version="1")
    tag = f"{_name()}:1"
    tags.append(tag)
    app = make_app(tmp_path / "app")
    img = build(
        app, model, tag, base_image=base_image, entrypoint="python app.py", quiet=True, docker_client=docker_client
    )
    assert [f["path"] for f in json.loads(img.labels["io.modelship.model.manifest"])["files"]] == ["m.bin"]


def test_a_base_image_missing_locally_is_pulled(tmp_path, docker_client, base_image, registry, tags, capsys):
    """The README's `--base-image python:3.11-slim` on a fresh machine: the engine pulls it, and says so."""
    ref = f"{registry}/modelship-test/base-pull:{uuid.uuid4().hex[:10]}"
    docker_client.images.get(base_image).tag(ref)
    for line in docker_client.images.push(ref, stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(ref)  # from here on only the registry has this name
    tags.append(ref)
    app = make_app(tmp_path / "app")
    model = make_model(tmp_path / "model", {"m.bin": b"weights"}, uri="az://acct/models/m", version="1")
    tag = f"{_name()}:1"
    tags.append(tag)
    argv = ["build", str(app), "--model", str(model), "--tag", tag, "--base-image", ref]
    rc = main([*argv, "--entrypoint", "python app.py", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err[-2000:]
    assert f"modelship: pulling base image {ref} (not local)\n" in err
    assert docker_client.images.get(ref).id == docker_client.images.get(base_image).id
    assert docker_client.images.get(tag)


def test_a_base_image_that_cannot_be_pulled_is_one_line(tmp_path, docker_client, registry, capsys):
    ref = f"{registry}/modelship-test/no-such-base:{uuid.uuid4().hex[:10]}"
    app = make_app(tmp_path / "app")
    model = make_model(tmp_path / "model", {"m.bin": b"weights"})
    rc = main(["build", str(app), "--model", str(model), "--tag", f"{_name()}:1", "--base-image", ref,
               "--entrypoint", "python app.py", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-2] == f"modelship: pulling base image {ref} (not local)"
    assert re.fullmatch(
        rf"modelship: error: base image {re.escape(ref)} is not local and pulling it failed \(.*manifest unknown.*\): "
        r"check the name and 'docker login' to its registry, or build or load it locally first",
        err[-1],
    ), err[-1]


def _error_lines(logs: str) -> list[str]:
    return [line for line in logs.splitlines() if "ERROR" in line or "Error" in line]


def test_a_generated_gunicorn_image_starts_without_error_lines(tmp_path, docker_client, base_image, tags):
    """The default command (gunicorn, app:app, port 8000) and a user's own gunicorn command: a healthy start,
    as a pod runs it (read-only root) and as `docker run` does, logs no ERROR line."""
    app = make_app(tmp_path / "app", requirements="gunicorn==27.0.1\n", extra={"app.py": WSGI_APP})
    model = make_model(tmp_path / "model", {"m.bin": b"weights"}, uri="az://acct/models/m", version="1")
    tag = f"{_name()}:1"
    tags.append(tag)
    build(app, model, tag, base_image=base_image, quiet=True, docker_client=docker_client)

    label = f"io.modelship.test.first-use={uuid.uuid4().hex[:8]}"
    with run_like_the_pod(docker_client, tag, label) as (container, port):  # read-only root, /tmp writable
        wait_ready(container, port)
        logs = container.logs().decode(errors="replace")
    assert "Booting worker" in logs, logs
    assert _error_lines(logs) == [], logs

    # a gunicorn command of the user's own (no flag from modelship): the app user's home is writable
    own = ["gunicorn", "-b", "0.0.0.0:8000", "app:app"]
    container = docker_client.containers.run(
        tag, own, detach=True, ports={"8000/tcp": ("127.0.0.1", None)}, labels={label: "own"}
    )
    try:
        container.reload()
        wait_ready(container, int(container.attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"]))
        logs = container.logs().decode(errors="replace")
        home = container.exec_run(["python", "-c", "import os; h = os.environ['HOME']; print(h, os.access(h, 2))"])
    finally:
        container.remove(force=True)
    assert "Booting worker" in logs, logs
    assert _error_lines(logs) == [], logs
    assert home.exit_code == 0 and home.output.decode().split() == ["/home/app", "True"]
    # the pod's read-only root cannot hold the control socket: the default command turns it off
    cmd = docker_client.images.get(tag).attrs["Config"]["Cmd"]
    assert cmd == ["gunicorn", "--no-control-socket", "-b", "0.0.0.0:8000", "app:app"]
