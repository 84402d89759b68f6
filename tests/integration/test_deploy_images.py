"""deploy render of real images: the port and probe paths come from the image (local engine, then registry)."""

from __future__ import annotations

import io
import subprocess
import time
import uuid

import pytest
import requests

from modelship import cli
from modelship.deploy import render
from modelship.errors import UsageError
from modelship.image import inspect, push
from support.builds import build_cmd, make_app
from support.kube import app_container, validate
from support.models import make_model


def _probe_until(url: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(url, timeout=2).status_code
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.docker
def test_render_takes_port_and_probe_paths_from_the_image(tmp_path, docker_client, base_image, registry, image_tags):
    """Issue #14, 1: an image built with --port 9000 --ready-path /ready rendered as 8000 and /health/*."""
    # it answers its probes on $PORT at the paths it was built with, and not at /health/* (so wrong probes would fail)
    app = make_app(tmp_path / "app", port=9000, ready_path="/ready", live_path="/alive")
    model = make_model(tmp_path / "model", {"m.bin": b"weights"}, uri="az://acct/models/m", version="1.0")
    repo = f"{registry}/modelship-test/deploy-{uuid.uuid4().hex[:10]}"
    tag = f"{repo}:1"
    image_tags.append(tag)
    cmd = build_cmd(app, model, tag, base_image, "--port", "9000", "--ready-path", "/ready", "--live-path", "/alive")
    proc = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ref = push(tag, docker_client=docker_client).ref
    assert ref == f"{repo}@{inspect(ref, docker_client=docker_client).image_digest}"
    assert inspect(ref, docker_client=docker_client).app == {
        "port": 9000,
        "ready_path": "/ready",
        "live_path": "/alive",
    }

    rendered = render(ref, tmp_path / "k8s")
    c = app_container(rendered)
    assert c["image"] == ref
    assert c["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    assert {"name": "PORT", "value": "9000"} in c["env"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/alive", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/alive", "port": "http"}
    proc = validate(rendered)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # the pod's view: the container with the rendered env answers the rendered probes on the rendered port
    env = {e["name"]: e["value"] for e in c["env"]}
    container = docker_client.containers.run(
        ref, detach=True, environment=env, ports={f"{c['ports'][0]['containerPort']}/tcp": ("127.0.0.1", None)}
    )
    try:
        container.reload()
        host_port = container.ports[f"{c['ports'][0]['containerPort']}/tcp"][0]["HostPort"]
        base = f"http://127.0.0.1:{host_port}"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert _probe_until(base + c[probe]["httpGet"]["path"]) == 200, probe
        assert _probe_until(base + "/health/ready") == 404  # the old, hard-coded paths would never be ready
    finally:
        container.remove(force=True)

    # from the registry (no local copy), and an option overrides what the image says
    docker_client.images.remove(tag, force=True)
    assert inspect(ref, docker_client=docker_client).source == "registry"
    out = tmp_path / "k8s-override"
    assert cli.main(["deploy", "render", "--out", str(out), "--live-path", "/healthz", "--image", ref]) == 0
    c = app_container(sorted(out.glob("*.yaml")))
    assert c["ports"][0]["containerPort"] == 9000 and c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == c["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.docker
def test_an_image_without_app_labels_is_refused_naming_the_options(tmp_path, docker_client, registry, image_tags):
    """An image modelship did not build says nothing about its port: no silent 8000, a line naming the options."""
    tag = f"{registry}/modelship-test/nolabels-{uuid.uuid4().hex[:10]}:1"
    image_tags.append(tag)
    docker_client.images.build(fileobj=io.BytesIO(b"FROM scratch\nLABEL org.example.team=ml\n"), tag=tag, rm=True)
    ref = push(tag, docker_client=docker_client).ref
    with pytest.raises(UsageError) as exc:
        render(ref, tmp_path / "k8s", ready_path="/ready")
    assert str(exc.value) == (
        f"image {ref} does not say port, live-path (no io.modelship.app.* labels: not built by 'modelship build', "
        "or by an older one); pass --port, --live-path"
    )
    assert not (tmp_path / "k8s").exists()
    paths = render(ref, tmp_path / "k8s", port=7000, ready_path="/ready", live_path="/alive")
    assert app_container(paths)["ports"][0]["containerPort"] == 7000
