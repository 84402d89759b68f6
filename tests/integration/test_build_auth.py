"""push / inspect against a registry that wants credentials (htpasswd, Basic auth), like ACR with admin user."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import uuid

import docker.errors
import pytest

from modelship.cli import main
from modelship.errors import AuthError
from modelship.image import build, inspect, push
from support.builds import make_app
from support.models import make_model
from support.registries import htpasswd_registry

pytestmark = pytest.mark.docker
USER, PASSWORD = "ci-bot", f"pw-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    """A second registry (the testbed's docker-registry binary) on a free port, with htpasswd auth."""
    with htpasswd_registry(tmp_path_factory.mktemp("auth-registry"), USER, PASSWORD) as reg:
        yield reg


def test_push_and_inspect_with_credentials(tmp_path, docker_client, base_image, auth_registry, monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))  # no stored logins
    app = make_app(tmp_path / "app")
    model = make_model(tmp_path / "model", {"m.bin": b"abc"}, uri="az://acct/models/m", version="4")
    ref = f"{auth_registry}/team/app:{uuid.uuid4().hex[:8]}"
    img = build(
        app, model, ref, base_image=base_image, entrypoint="python app.py", quiet=True, docker_client=docker_client
    )
    try:
        with pytest.raises(AuthError, match=f"push of {ref} denied by {auth_registry}: run 'docker login"):
            push(ref, quiet=True, docker_client=docker_client)

        monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
        assert main(["push", ref, "--username", USER, "--password-stdin", "--json"]) == 0
        out = capsys.readouterr()
        digest = json.loads(out.out)["image_digest"]
        assert PASSWORD not in out.out + out.err
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(ref, force=True)

    with pytest.raises(AuthError, match=f"registry {auth_registry} wants credentials for team/app: run 'docker login"):
        inspect(ref, docker_client=docker_client)
    remote = inspect(ref, username=USER, password=PASSWORD, docker_client=docker_client)
    assert remote.source == "registry" and remote.image_digest == digest and remote.labels == img.labels

    # credentials stored by `docker login` (config.json "auths") are used when none are given
    (tmp_path / "docker-config").mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (tmp_path / "docker-config" / "config.json").write_text(json.dumps({"auths": {auth_registry: {"auth": auth}}}))
    assert inspect(ref, docker_client=docker_client).model["version"] == "4"
