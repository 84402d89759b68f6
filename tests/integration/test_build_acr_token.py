"""push / inspect with an ACR-style identity token: what `az acr login` leaves in the docker config.

`az acr login` stores no password: ``auths`` gets an ``identitytoken`` (an OAuth2 refresh token), and every
client trades it at the registry's token realm (``grant_type=refresh_token``) for a short-lived access token.
Here the registry is the testbed's docker-registry binary with token auth, checking the tokens against a
throwaway certificate; the token service is the one stand-in (tests/_oci_helpers.TokenService; ACR's
/oauth2/token cannot run here): it issues tokens only for the refresh token it knows. Both the engine (push,
through docker-py's docker.auth header) and modelship's own registry client (the push read-back and inspect)
must get through with it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest

from modelship.errors import AuthError
from modelship.image import inspect, push
from modelship.oci.auth import docker_credentials
from support.oci import TokenService, registry_process

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def acr(tmp_path_factory) -> Iterator[tuple[str, TokenService, str]]:
    """(host:port of a registry with token auth, its token service, the identity token it accepts)."""
    root = tmp_path_factory.mktemp("acr-registry")
    service = TokenService(root, users={}).start()  # no Basic logins: only the refresh-token grant
    identity_token = f"rt-{uuid.uuid4().hex}"
    service.refresh_tokens[identity_token] = "az-acr-login"
    try:
        with registry_process(root / "registry", service.auth_yaml()) as registry:
            yield registry, service, identity_token
    finally:
        service.stop()


def _tiny_image(client, base_image: str, tag: str) -> None:
    """One file of the base image in an image of its own: a push of a few kB."""
    text = f"FROM {base_image} AS src\nFROM scratch\nCOPY --from=src /etc/os-release /etc/os-release\n"
    text += f"LABEL io.modelship.test.acr={tag}\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text.encode()))
    client.images.build(fileobj=io.BytesIO(buf.getvalue()), custom_context=True, tag=tag, rm=True, forcerm=True)


def _login(config_dir: Path, registry: str, identity_token: str) -> None:
    """What `az acr login` writes: no user, no password, an identity token."""
    config_dir.mkdir(exist_ok=True)
    (config_dir / "config.json").write_text(json.dumps({"auths": {registry: {"identitytoken": identity_token}}}))


def test_identity_token_from_az_acr_login_pushes_and_inspects(tmp_path, monkeypatch, docker_client, base_image, acr):
    registry, service, identity_token = acr
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    _login(tmp_path / "docker", registry, identity_token)
    creds = docker_credentials(registry)
    assert creds is not None and creds.identity_token == identity_token and creds.username is None
    service.log.clear()
    service.scopes.clear()

    ref = f"{registry}/team/app:{uuid.uuid4().hex[:8]}"
    _tiny_image(docker_client, base_image, ref)
    try:
        digest = push(ref).image_digest  # its own engine client, which reads the docker config as the docker CLI does
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(ref, force=True)
    assert digest.startswith("sha256:")
    remote = inspect(ref, docker_client=docker_client)  # no local image any more: read from the registry
    assert remote.source == "registry" and remote.image_digest == digest
    assert remote.labels == {"io.modelship.test.acr": ref}

    # every token came from the refresh-token grant (the service knows only the stored identity token);
    # none from a Basic login
    assert service.log and all(
        (m, p) == ("POST", "/oauth2/token") and "refresh_token" in keys for m, p, keys in service.log
    ), service.log
    scopes = service.scopes
    assert "repository:team/app:push,pull" in scopes, scopes  # the engine pushing
    assert scopes.count("repository:team/app:pull") == 2, scopes  # modelship: the push read-back, inspect

    _login(tmp_path / "docker", registry, "rt-revoked")
    with pytest.raises(AuthError, match=f"registry {registry} refused the credentials: run 'docker login"):
        inspect(ref, docker_client=docker_client)


def test_identity_token_from_a_credential_helper(tmp_path, monkeypatch):
    """A credHelpers entry (ACR's docker-credential-acr-env and the like) answering user ``<token>``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-modelship-test"
    helper.write_text(
        "#!/bin/sh\n"
        'read server\n[ "$1" = get ] && [ "$server" = myacr.azurecr.io ] || exit 1\n'
        'echo \'{"ServerURL": "myacr.azurecr.io", "Username": "<token>", "Secret": "rt-from-helper"}\'\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(
        json.dumps({"credHelpers": {"myacr.azurecr.io": "modelship-test", "gone.azurecr.io": "not-installed"}})
    )
    creds = docker_credentials("myacr.azurecr.io")
    assert creds is not None and creds.identity_token == "rt-from-helper" and creds.password is None
    assert docker_credentials("gone.azurecr.io") is None  # helper configured but missing: anonymous, no crash
    assert docker_credentials("other.io") is None
