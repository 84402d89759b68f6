"""Secrets in an app folder (issue 19 item 9): `build` leaves the usual secret-bearing files out of the image and
names each on stderr, `[tool.modelship] include` puts one back, and the plugin's `no_secrets` check reads the
app's files in the image for keys, so a key that does go in is caught."""

from __future__ import annotations

import subprocess

import docker
import pytest

from modelship import build
from pytest_modelship.checks import check_secrets
from pytest_modelship.images import ImageInfo
from pytest_modelship.reaper import LABEL_OWNER, LABEL_SESSION, owner_id
from support.builds import make_app
from support.cli import MODELSHIP
from support.engine import labelled_base, remove_labelled

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

ACCOUNT_KEY = "c2VjcmV0LWtleS1tb2RlbHNoaXAtdGVzdC0wMTIzNDU2Nzg5"  # fake, but shaped like one
SECRETS = {
    ".env": f"AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=https;AccountName=a;AccountKey={ACCOUNT_KEY}\n",
    "keys/server.pem": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
}


def _app_paths(client, image: str) -> set[str]:
    """The files under /app in the image, read from a created (never started) container."""
    import io
    import tarfile

    cid = client.api.create_container(image, command=["true"])["Id"]
    try:
        stream, _ = client.api.get_archive(cid, "/app")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            return {m.name for m in tar.getmembers() if m.isfile()}
    finally:
        client.api.remove_container(cid, force=True)


def test_secret_files_are_left_out_and_named_and_the_check_finds_one_put_in(
    tmp_path, docker_client, base_image, monkeypatch
):
    base, label = labelled_base(docker_client, base_image)
    run = label.rsplit("=", 1)[1]
    app = make_app(tmp_path / "app", extra={**SECRETS, "settings.py": "DEBUG = False\n"})
    try:
        tag = f"modelship-test/secrets:{run}-default"
        cmd = [MODELSHIP, "build", str(app), "--tag", tag, "--base-image", base, "--entrypoint", "python app.py"]
        proc = subprocess.run([*cmd, "--no-progress"], capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        said = [ln for ln in proc.stderr.splitlines() if "left out of the image" in ln]
        assert said == [
            "modelship: left out of the image: .env, keys/server.pem (usually holds secrets; "
            "name it in [tool.modelship] include to keep it)"
        ], proc.stderr[-3000:]
        assert ACCOUNT_KEY not in proc.stderr + proc.stdout
        files = _app_paths(docker_client, tag)
        assert "app/settings.py" in files and "app/.env" not in files and "app/keys/server.pem" not in files, files
        assert check_secrets(ImageInfo.from_image(tag, docker_client.images.get(tag)), None) == []

        # the user insists: include puts them in (a library call, which prints nothing), and the check says so
        (app / "pyproject.toml").write_text('[tool.modelship]\ninclude = [".env", "keys/*.pem"]\n')
        included = f"modelship-test/secrets:{run}-included"
        built = build(app, None, included, base_image=base, entrypoint="python app.py")
        assert {"app/.env", "app/keys/server.pem"} <= _app_paths(docker_client, built.id)
        problems = check_secrets(ImageInfo.from_image(included, docker_client.images.get(included)), None)
        assert "file /app/.env: Azure storage account key" in problems, problems
        assert "file /app/keys/server.pem: private key" in problems, problems
        assert not any(ACCOUNT_KEY in p for p in problems)

        # a check cut off before its cleanup (a signal, a session torn down mid-check) leaves a container the
        # next run's reaper recognises: the plugin's labels, naming this process as its owner
        with monkeypatch.context() as m:
            m.setattr(docker.api.client.APIClient, "remove_container", lambda *a, **k: None)
            check_secrets(ImageInfo.from_image(included, docker_client.images.get(included)), None)
        left = docker_client.api.containers(all=True, filters={"ancestor": included})
        for c in left:
            docker_client.api.remove_container(c["Id"], force=True)
        assert [c["Labels"].get(LABEL_OWNER) for c in left] == [owner_id()], left
        assert all(c["Labels"].get(LABEL_SESSION) for c in left)
    finally:
        remove_labelled(docker_client, label)


def test_a_library_build_says_nothing_about_what_it_left_out(tmp_path, docker_client, base_image, capfd):
    base, label = labelled_base(docker_client, base_image)
    app = make_app(tmp_path / "app", extra=SECRETS)
    try:
        build(
            app,
            None,
            f"modelship-test/secrets:{label.rsplit('=', 1)[1]}-quiet",
            base_image=base,
            entrypoint="python app.py",
        )
        out, err = capfd.readouterr()
        assert out == "" and err == "", (out, err)
    finally:
        remove_labelled(docker_client, label)
