"""The example's story on the real testbed: train -> publish to Azurite -> lock + fetch -> modelship build ->
smoke test through the pytest plugin -> run hardened like the Kubernetes pod -> push -> render by digest."""

from __future__ import annotations

import contextlib
import json
import os
import re
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
from support.engine import remove_built
from support.example import run_like_the_pod, wait_ready

EXAMPLE = ROOT / "examples" / "flask_app"
CASES = EXAMPLE / "modelship-cases.yaml"


def _train(out: Path, **options: float) -> Path:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import train
    finally:
        sys.path.remove(str(EXAMPLE))
    return train.export(train.train(**options), out)


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
    remove_built(docker_client, tag)


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


def _smoke(image: str, run_dir: Path, junit: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The command of pipelines/templates/steps/smoke-test.yml."""
    run_dir.mkdir()
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", "."]
    cmd += ["--modelship-image", image, "--modelship-cases", str(CASES), "--modelship-timeout", "60"]
    cmd += ["--junitxml", str(junit), "-o", "junit_family=xunit2", *extra]
    return subprocess.run(cmd, cwd=run_dir, capture_output=True, text=True, timeout=300)


def test_the_image_passes_its_smoke_cases_through_the_plugin(iris_image, tmp_path):
    tag, _, _ = iris_image
    junit = tmp_path / "smoke.xml"
    proc = _smoke(tag, tmp_path / "run", junit)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    testcases = list(ET.parse(junit).iter("testcase"))  # noqa: S314 - the file pytest just wrote
    names = {t.get("name") for t in testcases if "modelship-cases" in t.get("classname", "")}
    assert {"predict_setosa", "reject_wrong_shape", "metadata_is_the_model_manifest", "ready"} <= names
    assert len(testcases) >= 12  # 7 cases + the image checks
    assert all(t.find("failure") is None and t.find("error") is None for t in testcases)


def test_the_gate_stops_a_model_retrained_on_ten_percent_flipped_labels(iris_image, base_image, tmp_path):
    """The comparison with what production runs names the inputs whose answers moved (its smoke cases fail
    too here: the noisy labels also lowered setosa's confidence below the case's bound)."""
    baseline, _, _ = iris_image
    store = f"file://{tmp_path}/store/iris"  # the retrain published and fetched as the pipeline would
    modelship.publish(_train(tmp_path / "flipped", flip_labels=0.1), store, version="2")
    fetched = modelship.fetch(store, tmp_path / "model", version="2")
    candidate = f"modelship-test/iris-service:flipped-{uuid.uuid4().hex[:8]}"
    modelship.build(EXAMPLE, fetched.dest, candidate, base_image=base_image, quiet=True)
    try:
        junit = tmp_path / "gate.xml"
        proc = _smoke(candidate, tmp_path / "run", junit, "--modelship-baseline", baseline)
    finally:
        import docker

        with contextlib.closing(docker.from_env()) as client:
            remove_built(client, candidate)
    assert proc.returncode == 1, proc.stdout[-4000:]
    cases = {t.get("name"): t for t in ET.parse(junit).iter("testcase")}  # noqa: S314 - pytest wrote it
    failed = {name for name, t in cases.items() if t.find("failure") is not None}
    assert "compare" in failed and "ready" not in failed, failed
    text = cases["compare"].find("failure").text
    agreement = re.search(r"agreement ([\d.]+)% \((\d+) of (\d+) probes\) is below min_agreement 95.00%", text)
    assert agreement and int(agreement.group(3)) == 201 and float(agreement.group(1)) < 95, text
    # the diverging inputs, each with both answers and the label that moved
    assert re.search(r"probe probes\.jsonl:\d+: POST /predict \{\"instances\": \[\[", text), text
    assert re.search(r'>> predictions\[0\]\.label: candidate "\w+", baseline "\w+"', text), text


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
        digest = modelship.push(remote, quiet=True).image_digest
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
