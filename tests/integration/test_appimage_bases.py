"""`modelship build --builder registry` from bases made by hand in real registries: a multi-platform index
(the testbed base as linux/amd64, a stand-in as linux/arm64) and a registry that wants a login
(``--username``/``--password-stdin``). The engine is out of reach (DOCKER_HOST pointing nowhere)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import uuid

import pytest
import requests

from support.bases import basic, mounted, push_platform_index, stand_in_base
from support.builds import make_app
from support.cli import command
from support.oci import blob, manifest
from support.registries import htpasswd_registry

pytestmark = pytest.mark.docker
NOWHERE = "tcp://127.0.0.1:1"


def _build(app, tag: str, base: str, cache, *extra: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_HOST": NOWHERE, "MODELSHIP_CACHE_DIR": str(cache)}
    cmd = command("build", str(app), "--builder", "registry", "--tag", tag, "--base-image", base, "--json", *extra)
    cmd += ["--entrypoint", "python app.py"]
    return subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, timeout=600, check=False)


def _ok(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def multi(tmp_path_factory, registry, registry_base_image):
    """An index made by hand: the testbed base under linux/amd64, a python3.12 stand-in under linux/arm64."""
    root = tmp_path_factory.mktemp("multibase")
    repo = f"appimage-test/multibase-{uuid.uuid4().hex[:8]}"
    amd = mounted(registry_base_image, repo)
    arm = stand_in_base(registry, repo, "arm64-only", arch="arm64", python="3.12")
    index = push_platform_index(registry, repo, "multi", {"linux/amd64": amd, "linux/arm64": arm})
    app = make_app(root / "app")  # no requirements: nothing to resolve for either platform
    return app, f"{registry}/{repo}@{index}", root / "cache", {"linux/amd64": amd, "linux/arm64": arm}


def _config(ref: str) -> tuple[dict, dict]:
    reg, rest = ref.split("/", 1)
    name, digest = rest.split("@")
    _, m, _ = manifest(reg, name, digest)
    return m, json.loads(blob(reg, name, m["config"]["digest"]))


def _base_config(ref: str, desc: dict) -> dict:
    reg, rest = ref.split("/", 1)
    name = rest.split("@")[0]
    _, m, _ = manifest(reg, name, desc["digest"])
    return json.loads(blob(reg, name, m["config"]["digest"]))


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_platform_picks_the_base_of_that_platform_from_an_index(platform, multi, registry):
    app, base, cache, entries = multi
    repo = f"{registry}/appimage-test/multi-app-{uuid.uuid4().hex[:8]}"
    out = _ok(_build(app, f"{repo}:{platform.split('/')[1]}", base, cache, "--platform", platform))
    assert out["platforms"] == [platform] and out["base_ref"] == base
    m, cfg = _config(out["ref"])
    assert m["mediaType"] == "application/vnd.oci.image.manifest.v1+json"  # one platform: an image, no index
    assert (cfg["os"], cfg["architecture"]) == tuple(platform.split("/"))
    chosen = _base_config(base, entries[platform])
    assert cfg["rootfs"]["diff_ids"][: len(chosen["rootfs"]["diff_ids"])] == chosen["rootfs"]["diff_ids"]
    # the venv is made for the chosen base's interpreter: the stand-in has python3.12, the testbed base 3.11
    assert _venv_version(out["ref"], m) == ("3.12" if platform == "linux/arm64" else "3.11")


def _venv_version(ref: str, m: dict) -> str:
    """The pythonN.M of the venv in the dependencies layer (the last but one: deps, then code)."""
    reg, rest = ref.split("/", 1)
    name = rest.split("@")[0]
    deps = tarfile.TarFile(fileobj=io.BytesIO(blob(reg, name, m["layers"][-2]["digest"])))
    (lib,) = {n.split("/")[3] for n in deps.getnames() if n.startswith("opt/venv/lib/python")}
    return lib.removeprefix("python")


def test_a_platform_the_index_lacks_fails_in_one_line_naming_the_platforms_it_has(multi, registry):
    app, base, cache, _ = multi
    line = _one_line(_build(app, f"{registry}/appimage-test/multi-app:s390x", base, cache, "--platform", "linux/s390x"))
    assert "has no linux/s390x image (it has linux/amd64, linux/arm64)" in line and "--platform" in line, line


# ---- a registry that wants a login ---------------------------------------------------------------------------


def test_username_and_password_stdin_log_in_to_read_the_base_and_write_the_image(tmp_path):
    user, password = "builder", f"pw-{uuid.uuid4().hex[:12]}"
    with htpasswd_registry(tmp_path / "registry", user, password) as reg:
        auth = basic(user, password)
        stand_in_base(reg, "team/base", "1", arch="amd64", python="3.11", auth=auth)
        app = make_app(tmp_path / "app")
        tag = f"{reg}/team/app:1"
        login = ("--username", user, "--password-stdin")
        out = _ok(_build(app, tag, f"{reg}/team/base:1", tmp_path / "cache", *login, stdin=password + "\n"))
        got = requests.get(
            f"http://{reg}/v2/team/app/manifests/1",
            headers={**auth, "Accept": "application/vnd.oci.image.manifest.v1+json"},
            timeout=30,
        )
        assert got.status_code == 200 and got.headers["Docker-Content-Digest"] == out["image_digest"]
        assert out["uploaded_bytes"] > 0
        # the same build without the login is refused by the registry, in one line
        line = _one_line(_build(app, f"{reg}/team/app:2", f"{reg}/team/base:1", tmp_path / "cache"))
        assert reg in line, line
        wrong = _build(app, f"{reg}/team/app:3", f"{reg}/team/base:1", tmp_path / "cache", *login, stdin="nope\n")
        assert reg in _one_line(wrong)
