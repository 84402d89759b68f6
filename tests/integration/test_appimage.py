"""`modelship build --builder registry` against the real registry, with the Docker engine out of reach
(DOCKER_HOST pointing nowhere): the image is judged by clients nobody here wrote -- skopeo reads it, and the
example app built this way, its model assembled onto it, passes its smoke cases through the pytest plugin
(the engine pulls and runs it)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import modelship
from support import ROOT
from support.builds import local_requirements, make_app, make_wheel
from support.cli import command
from support.oci import blob, manifest, run

pytestmark = pytest.mark.docker
NOWHERE = "tcp://127.0.0.1:1"
EXAMPLE = ROOT / "examples" / "flask_app"
CASES = EXAMPLE / "modelship-cases.yaml"


def _build(app: Path, tag: str, base: str, cache: Path, *extra: str, umask: int = 0o022, tz: str = "UTC"):
    """`modelship build --builder registry --json` as its own process: no engine, its own cache, umask and TZ."""
    env = {**os.environ, "DOCKER_HOST": NOWHERE, "MODELSHIP_CACHE_DIR": str(cache), "TZ": tz}
    env.pop("SOURCE_DATE_EPOCH", None)
    cmd = command("build", str(app), "--builder", "registry", "--tag", tag, "--base-image", base, "--json", *extra)
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=600, check=False, preexec_fn=lambda: os.umask(umask)
    )


def _ok(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def small(tmp_path_factory, registry, registry_base_image):
    """A small app (the test app + one local wheel), built once; yields (app dir, repository, result)."""
    root = tmp_path_factory.mktemp("small")
    wheels = root / "wheels"
    make_wheel(wheels, "tinydep", "1.0")
    app = make_app(root / "a" / "app", requirements=local_requirements(wheels, "tinydep==1.0"))
    (app / "run.sh").write_text("#!/bin/sh\nexec python app.py\n")
    (app / "run.sh").chmod(0o755)
    repo = f"{registry}/appimage-test/small-{uuid.uuid4().hex[:8]}"
    result = _ok(_build(app, f"{repo}:first", registry_base_image, root / "cache-a", "--entrypoint", "python app.py"))
    return app, repo, result


def _copy(app: Path, dest: Path) -> Path:
    """The app checked out elsewhere: same name, other mtimes, another file mode without an execute bit."""
    shutil.copytree(app, dest)
    for i, p in enumerate(sorted(dest.rglob("*"))):
        os.utime(p, (1_000_000_000 + i * 7919, 1_600_000_000 + i * 104729))
    (dest / "app.py").chmod(0o600)
    return dest


def test_same_tree_and_base_give_the_same_digest_under_another_umask_tz_mtimes_and_cache(
    small, tmp_path, registry_base_image
):
    app, repo, first = small
    other = _copy(app, tmp_path / "b" / "app")
    again = _ok(
        _build(other, f"{repo}:again", registry_base_image, tmp_path / "cache-b", "--entrypoint", "python app.py",
               umask=0o077, tz="Pacific/Auckland")
    )  # fmt: skip
    assert again["image_digest"] == first["image_digest"]
    assert again["uploaded_bytes"] == 0  # every blob already there: only the new tag was written
    assert first["ref"] == f"{repo}@{first['image_digest']}"


def test_a_code_change_uploads_the_code_layer_and_the_manifest_only(small, tmp_path, registry_base_image):
    app, repo, first = small
    changed = _copy(app, tmp_path / "c" / "app")
    with open(changed / "app.py", "a") as f:
        f.write("\n# a code change\n")
    out = _ok(
        _build(changed, f"{repo}:changed", registry_base_image, tmp_path / "cache-c", "--entrypoint", "python app.py")
    )
    assert out["image_digest"] != first["image_digest"]
    assert out["uploaded_bytes"] < 1_000_000
    sent = {layer["title"].split(":")[0]: layer["uploaded"] for layer in out["layers"]}
    assert sent == {"dependencies": False, "app code": True}


def test_a_requirements_change_uploads_the_dependencies_layer_only(small, tmp_path, registry_base_image):
    app, repo, first = small
    changed = _copy(app, tmp_path / "r" / "app")
    make_wheel(tmp_path / "more", "otherdep", "2.0")
    requirements = (changed / "requirements.txt").read_text() + f"--find-links {tmp_path / 'more'}\notherdep==2.0\n"
    (changed / "requirements.txt").write_text(requirements)
    entry = ("--entrypoint", "python app.py")
    out = _ok(_build(changed, f"{repo}:reqs", registry_base_image, tmp_path / "cache-r", *entry))
    was = {layer["title"].split(":")[0]: layer for layer in first["layers"]}
    now = {layer["title"].split(":")[0]: layer for layer in out["layers"]}
    assert now["app code"]["digest"] == was["app code"]["digest"] and not now["app code"]["uploaded"]
    assert now["dependencies"]["digest"] != was["dependencies"]["digest"] and now["dependencies"]["uploaded"]
    # the dependencies layer, then only the config and the manifest (a few kB)
    assert now["dependencies"]["size"] < out["uploaded_bytes"] < now["dependencies"]["size"] + 32_000
    reg, name = repo.split("/", 1)
    _, m, _ = manifest(reg, name, "reqs")
    deps, code = (_tar(blob(reg, name, d["digest"])) for d in m["layers"][-2:])
    assert deps.extractfile("app/requirements.txt").read().decode() == requirements
    assert "app/requirements.txt" not in code.getnames() and "app/app.py" in code.getnames()
    assert any(n.endswith("site-packages/otherdep/__init__.py") for n in deps.getnames())


def test_the_image_is_what_the_engine_path_describes_and_skopeo_reads_it(small, registry):
    _, repo, first = small
    reg, name = repo.split("/", 1)
    info = json.loads(run("skopeo", "inspect", "--tls-verify=false", f"docker://{repo}:first").stdout)
    assert info["Digest"] == first["image_digest"]
    cfg = json.loads(
        run("skopeo", "inspect", "--config", "--raw", "--tls-verify=false", f"docker://{repo}:first").stdout
    )
    c = cfg["config"]
    assert c["User"] == "10001:10001" and c["WorkingDir"] == "/app" and c["Cmd"] == ["python", "app.py"]
    assert "MODELSHIP_MODEL_DIR=/opt/modelship/model" in c["Env"] and "VIRTUAL_ENV=/opt/venv" in c["Env"]
    assert c["ExposedPorts"] == {"8000/tcp": {}}
    assert c["Healthcheck"]["Test"][:2] == ["CMD", "/opt/venv/bin/python"]
    assert c["Labels"]["io.modelship.model.dir"] == "/opt/modelship/model"
    assert c["Labels"]["io.modelship.app.ready-path"] == "/health/ready"
    assert c["Labels"]["io.modelship.app.dependencies"] == "tinydep==1.0"  # what the ML-BOM lists
    assert cfg["created"] == "1970-01-01T00:00:00Z"  # no SOURCE_DATE_EPOCH, no git: the epoch, never "now"
    assert str(Path.home()) not in json.dumps(cfg) and "/tmp" not in json.dumps(cfg)

    _, m, _ = manifest(reg, name, "first")
    deps, code = (_tar(blob(reg, name, d["digest"])) for d in m["layers"][-2:])
    members = deps.getmembers()
    names = [x.name for x in members]
    assert names == sorted(names, key=lambda n: n.split("/"))
    owners = {x.name: (x.uid, x.gid, x.mode) for x in members if x.uid or x.gid}
    assert owners == {"home/app": (10001, 10001, 0o700)}
    assert {x.mtime for x in members} == {0}
    assert deps.getmember("opt/venv/bin/python").linkname.startswith("/usr/")
    assert any(n.startswith("opt/venv/lib/python3.") and n.endswith("tinydep/__init__.py") for n in names)
    assert not any(n.endswith(".pyc") for n in names)  # no bytecode: see modelship.appimage.deps
    modes = {x.name: x.mode for x in code.getmembers()}
    assert modes["app/app.py"] == 0o644 and modes["app/run.sh"] == 0o755 and modes["app"] == 0o755
    assert "app/requirements.txt" in names and "app/requirements.txt" not in modes  # with the dependencies


def test_podman_pulls_and_mounts_it(small):
    """Another runtime's reading of the layers (podman run cannot set rlimits in this sandbox; the engine runs
    it in test_appimage_parity): the files of both layers under /app, the venv's interpreter a link into the
    base that resolves inside the image, the dependency installed, the app user's home."""
    app, repo, _ = small
    ref = f"{repo}:first"
    run("podman", "pull", "-q", "--tls-verify=false", ref)
    try:
        root = Path(run("podman", "image", "mount", ref).stdout.strip())
        try:
            for rel in ("app.py", "run.sh", "requirements.txt"):
                assert (root / "app" / rel).read_bytes() == (app / rel).read_bytes(), rel
            interpreter = os.readlink(root / "opt/venv/bin/python")
            assert interpreter.startswith("/usr/") and (root / interpreter.lstrip("/")).exists()
            assert len(list(root.glob("opt/venv/lib/python3.*/site-packages/tinydep/__init__.py"))) == 1
            assert (root / "home/app").stat().st_uid == 10001
        finally:
            run("podman", "image", "unmount", ref, check=False)
    finally:
        run("podman", "rmi", "-f", ref, check=False)


def _tar(data: bytes) -> tarfile.TarFile:
    """A layer's tar, read from memory (nothing to close: no file behind it)."""
    return tarfile.TarFile(fileobj=io.BytesIO(data))


@pytest.mark.parametrize("case", ["base-not-in-a-registry", "no-wheel-for-the-platform", "sdist-only"])
def test_a_build_that_cannot_be_done_fails_in_one_line_saying_what_to_do(case, tmp_path, registry, registry_base_image):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    base, req = registry_base_image, None
    if case == "base-not-in-a-registry":
        base = f"{registry}/appimage-test/no-such-base:1"
        expect = ["cannot be read from its registry", "push it to one"]
    elif case == "no-wheel-for-the-platform":
        mac = make_wheel(wheels, "natonly", "1.0")
        mac.rename(wheels / "natonly-1.0-cp311-cp311-macosx_11_0_arm64.whl")
        req, expect = "natonly==1.0", ["no binary wheel of natonly", "build a wheel yourself"]
    else:
        (wheels / "sdonly-1.0.tar.gz").write_bytes(b"not a real sdist")
        req, expect = "sdonly==1.0", ["no binary wheel of sdonly", "build a wheel yourself"]
    app = make_app(tmp_path / "app", requirements=local_requirements(wheels, req) if req else None)
    tag = f"{registry}/appimage-test/fails:{case}"
    proc = _build(app, tag, base, tmp_path / "cache", "--entrypoint", "python app.py")
    assert proc.returncode == 1, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip() and "left out of the image" not in x]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(e in lines[0] for e in expect), lines[0]


# ---- the example: built without an engine, its model assembled onto it, smoke-tested by the plugin --------


@pytest.fixture(scope="module")
def iris(tmp_path_factory, registry, registry_base_image):
    """The example app built by the registry builder (no engine), v1 of its model assembled onto it."""
    work = tmp_path_factory.mktemp("iris")
    sys.path.insert(0, str(EXAMPLE))
    try:
        import train
    finally:
        sys.path.remove(str(EXAMPLE))
    store = f"file://{work}/store/iris"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELSHIP_CACHE_DIR", str(work / "cache"))
        mp.setenv("DOCKER_HOST", NOWHERE)
        modelship.publish(train.export(train.train(), work / "trained"), store, version="1")
        fetched = modelship.fetch(store, work / "model", version="1")
        repo = f"{registry}/appimage-test/iris-{uuid.uuid4().hex[:8]}"
        app = _ok(_build(EXAMPLE, f"{repo}:app", registry_base_image, work / "cache"))
        assembled = modelship.assemble(app["ref"], fetched.dest, f"{repo}:m1", quiet=True)
    return app, assembled


def test_the_example_built_without_an_engine_serves_its_assembled_model_through_the_plugin(iris, tmp_path):
    app, assembled = iris
    assert app["labels"]["org.opencontainers.image.title"] == "iris-service"
    run_dir, junit = tmp_path / "run", tmp_path / "smoke.xml"
    run_dir.mkdir()
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", "."]
    cmd += ["--modelship-image", assembled.ref, "--modelship-cases", str(CASES), "--modelship-timeout", "60"]
    cmd += ["--junitxml", str(junit), "-o", "junit_family=xunit2"]
    proc = subprocess.run(cmd, cwd=run_dir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    testcases = list(ET.parse(junit).iter("testcase"))  # noqa: S314 - the file pytest just wrote
    names = {t.get("name") for t in testcases}
    assert {"predict_setosa", "ready", "metadata_is_the_model_manifest"} <= names
    assert all(t.find("failure") is None and t.find("error") is None for t in testcases)
