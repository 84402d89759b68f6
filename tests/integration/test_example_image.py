"""The example's story on the real testbed: train -> publish to Azurite -> lock + fetch -> modelship build ->
smoke test through the pytest plugin -> run hardened like the Kubernetes pod -> push -> render by digest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests

import modelship
from modelship.deploy import render
from support import ROOT
from support.example import run_like_the_pod, wait_ready

EXAMPLE = ROOT / "examples" / "flask_app"
CASES = EXAMPLE / "modelship-cases.yaml"


def _train(out: Path) -> Path:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import train
    finally:
        sys.path.remove(str(EXAMPLE))
    return train.export(train.train(), out)


@pytest.fixture(scope="module")
def published(blob_service, azurite_connection_string, tmp_path_factory):
    """v1 of the Iris model published to a fresh Azurite container; yields (uri, what publish returned)."""
    container = blob_service.create_container(f"t-iris-{uuid.uuid4().hex[:12]}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string)
        uri = f"az://devstoreaccount1/{container.container_name}/models/iris"
        manifest = modelship.publish(_train(tmp_path_factory.mktemp("trained")), uri, version="1")
        yield uri, manifest
    container.delete_container()


@pytest.fixture(scope="module")
def iris_image(published, docker_client, base_image, tmp_path_factory, azurite_connection_string):
    """The example image built from the locked, fetched model (wheels resolved on the host)."""
    uri, _ = published
    work = tmp_path_factory.mktemp("image")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string)
        mp.setenv("MODELSHIP_CACHE_DIR", str(work / "cache"))
        lock = modelship.lock(uri, output=work / "modelship.lock")
        fetched = modelship.fetch(uri, work / "model", lock=work / "modelship.lock")
    tag = f"modelship-test/iris-service:{uuid.uuid4().hex[:10]}"
    built = modelship.build(EXAMPLE, fetched.dest, tag, base_image=base_image, quiet=True)
    yield tag, built, lock
    docker_client.images.remove(tag, force=True)


def test_the_image_carries_the_published_model(iris_image, published):
    _, built, lock = iris_image
    _, manifest = published
    labels = built.labels
    assert lock.version == "1"
    assert labels["io.modelship.model.version"] == "1"
    assert labels["io.modelship.model.digest"] == manifest.model_digest == lock.digest
    assert labels["io.modelship.model.uri"].startswith("az://devstoreaccount1/")
    assert "AccountKey" not in json.dumps(labels)
    assert labels["org.opencontainers.image.title"] == "iris-service"


def test_the_image_passes_its_smoke_cases_through_the_plugin(iris_image, tmp_path):
    tag, _, _ = iris_image
    junit = tmp_path / "smoke.xml"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # the command of pipelines/templates/steps/smoke-test.yml
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", "."]
    cmd += ["--modelship-image", tag, "--modelship-cases", str(CASES), "--modelship-timeout", "60"]
    cmd += ["--junitxml", str(junit), "-o", "junit_family=xunit2"]
    proc = subprocess.run(cmd, cwd=run_dir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    testcases = list(ET.parse(junit).iter("testcase"))  # noqa: S314 - the file pytest just wrote
    names = {t.get("name") for t in testcases if "modelship-cases" in t.get("classname", "")}
    assert {"predict_setosa", "reject_wrong_shape", "metadata_is_the_model_manifest", "ready"} <= names
    assert len(testcases) >= 12  # 7 cases + the image checks
    assert all(t.find("failure") is None and t.find("error") is None for t in testcases)


def test_the_image_runs_under_the_pods_security_context(iris_image, docker_client):
    tag, _, _ = iris_image
    # what k8s/deployment.yaml asks for: uid 10001, read-only root, /tmp as the only writable place,
    # all capabilities dropped, no privilege escalation
    with run_like_the_pod(docker_client, tag, "io.modelship.test") as (container, port):
        url = f"http://127.0.0.1:{port}"
        wait_ready(container, port)
        r = requests.post(f"{url}/predict", json={"instances": [[6.3, 3.3, 6.0, 2.5]]}, timeout=5)
        assert r.status_code == 200
        assert r.json()["predictions"][0]["label"] == "virginica"
        assert r.json()["model_version"] == "1"
        logs = container.logs().decode()
        assert "model ready: version=1" in logs
        assert "Traceback" not in logs
        assert "Read-only file system" not in logs


def test_the_pushed_digest_renders_valid_pinned_manifests(iris_image, registry, tmp_path):
    tag, _, _ = iris_image
    remote = f"{registry}/modelship-test/iris-service:{tag.rsplit(':', 1)[1]}"
    import docker

    client = docker.from_env()
    try:
        client.images.get(tag).tag(remote)
        digest = modelship.push(remote, quiet=True)
    finally:
        client.images.remove(remote)
        client.close()
    assert digest.startswith("sha256:")
    ref = f"{registry}/modelship-test/iris-service@{digest}"
    files = render(ref, tmp_path / "k8s", name="iris-service")
    kube_validate = Path(sys.executable).with_name("kubernetes-validate")
    proc = subprocess.run([str(kube_validate), "--strict", *map(str, files)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"image: {ref}" in (tmp_path / "k8s" / "deployment.yaml").read_text()
    # the digest is what the registry serves for the pushed tag
    manifest = requests.get(
        f"http://{registry}/v2/modelship-test/iris-service/manifests/{digest}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    )
    assert manifest.status_code == 200
