"""modelship build / push / inspect against the real Docker engine, registry and local base image."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from modelship.cli import main
from modelship.errors import BuildError, DockerError, NotFoundError
from modelship.image import build, inspect, push
from support.builds import fs_steps, git, layers, local_requirements, make_app, make_wheel, wait_healthy
from support.models import make_model

pytestmark = pytest.mark.docker


def _name() -> str:
    return f"modelship-test/build-{uuid.uuid4().hex[:10]}"


@pytest.mark.slow
def test_layer_order_contract(tmp_path, docker_client, base_image, image_tags):
    """code-only change: only the code layer is new; model-only: deps reused; requirements: all after setup new."""
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "tinydep", "1.0")
    make_wheel(wheels, "otherdep", "2.0")
    app = make_app(tmp_path / "app", requirements=local_requirements(wheels, "tinydep==1.0"))
    model = make_model(tmp_path / "model", {"weights.bin": b"w" * 5000, "config.json": b"{}"})
    name = _name()
    kw = {"base_image": base_image, "entrypoint": "python app.py", "quiet": True, "docker_client": docker_client}

    def built(tag: str) -> dict:
        image_tags.append(f"{name}:{tag}")
        build(app, model, f"{name}:{tag}", **kw)
        return {"steps": fs_steps(docker_client, f"{name}:{tag}"), "layers": layers(docker_client, f"{name}:{tag}")}

    v1 = built("v1")
    assert v1["steps"]["deps"]["size"] > 0 and v1["steps"]["model"]["size"] >= 5000

    (app / "app.py").write_text((app / "app.py").read_text() + "# one-line code change\n")
    code = built("code")
    for role in ("setup", "deps", "model"):  # same step ids = cache hits
        assert code["steps"][role]["id"] == v1["steps"][role]["id"], role
    assert code["steps"]["code"]["id"] != v1["steps"]["code"]["id"]
    assert code["layers"][:-1] == v1["layers"][:-1] and code["layers"][-1] != v1["layers"][-1]

    (model / "weights.bin").write_bytes(b"x" * 5000)
    mdl = built("model")
    assert mdl["steps"]["deps"]["id"] == code["steps"]["deps"]["id"]  # dependency layer reused
    assert mdl["steps"]["model"]["id"] != code["steps"]["model"]["id"]
    assert mdl["layers"][-2] != code["layers"][-2]
    # the code layer was rebuilt (its parent changed) yet is byte-identical: fixed mtimes, sorted, uid 0
    assert mdl["layers"][-1] == code["layers"][-1]

    (app / "requirements.txt").write_text(local_requirements(wheels, "tinydep==1.0", "otherdep==2.0"))
    req = built("req")
    assert req["steps"]["setup"]["id"] == mdl["steps"]["setup"]["id"]
    for role in ("deps", "model", "code"):
        assert req["steps"][role]["id"] != mdl["steps"][role]["id"], role
    # identical model, rebuilt from scratch on a new dependency layer: byte-identical layer (the code
    # layer differs here only because requirements.txt is part of the app directory)
    assert req["layers"][-2] == mdl["layers"][-2]
    assert req["layers"][-3] != mdl["layers"][-3]


def test_image_hygiene_and_healthcheck(tmp_path, docker_client, base_image, image_tags):
    """non-root, HEALTHCHECK that turns healthy, EXPOSE, ENV, .dockerignore, no build tools, read-only model."""
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "tinydep", "1.0")
    app = make_app(
        tmp_path / "app",
        port=8123,
        requirements=local_requirements(wheels, "tinydep==1.0"),
        extra={
            "pyproject.toml": '[project]\nname = "hygiene-app"\nversion = "1.2.3"\n\n[tool.modelship]\n'
            'entrypoint = "python app.py"\nport = 8123\nhealthcheck-interval = "1s"\n',
            ".dockerignore": "secrets.env\nnotes/\n",
            "secrets.env": "TOKEN=do-not-ship\n",
            "notes/todo.txt": "x\n",
            "pkg/helper.py": "X = 1\n",
        },
    )
    (app / ".git").mkdir()
    (app / ".git" / "config").write_text("[remote]\n")
    # characters a Dockerfile LABEL would expand or eat unless quoted right
    uri = 'file:///models/$HOME/${PATH}/"q"\\b'
    model = make_model(tmp_path / "model", {"m.bin": b"m" * 100}, uri=uri, version="7")
    tag = f"{_name()}:1"
    image_tags.append(tag)
    img = build(app, model, tag, base_image=base_image, quiet=True, docker_client=docker_client)
    assert docker_client.images.get(tag).labels == img.labels
    assert img.labels["io.modelship.model.uri"] == uri
    assert json.loads(img.labels["io.modelship.model.manifest"])["uri"] == uri
    assert img.labels["io.modelship.app.dependencies"] == "tinydep==1.0"  # what the ML-BOM lists

    cfg = docker_client.images.get(tag).attrs["Config"]
    assert cfg["User"] == "10001:10001"
    assert "8123/tcp" in cfg["ExposedPorts"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["MODELSHIP_MODEL_DIR"] == "/opt/modelship/model"
    assert "http://127.0.0.1:8123/health/ready" in " ".join(cfg["Healthcheck"]["Test"])
    assert img.labels["org.opencontainers.image.title"] == "hygiene-app"
    assert img.labels["org.opencontainers.image.version"] == "1.2.3"

    script = (
        "import os, json, sys, tinydep;"
        "m = '/opt/modelship/model';"
        "print(json.dumps({'uid': os.getuid(), 'files': sorted(os.listdir('/app')),"
        "'writable': os.access(m, os.W_OK) or os.access(m + '/m.bin', os.W_OK),"
        "'manifest': json.load(open(m + '/modelship.json')),"
        "'pip': os.path.exists('/opt/venv/bin/pip'), 'wheels': os.path.exists('/tmp/wheels'),"
        "'tinydep': tinydep.VERSION}))"
    )
    out = json.loads(docker_client.containers.run(tag, ["python", "-c", script], remove=True))
    assert out["uid"] == 10001
    assert out["files"] == ["app.py", "pkg", "pyproject.toml", "requirements.txt"]  # no .git, ignored files
    assert out["writable"] is False
    assert "fetched_at" not in out["manifest"] and out["manifest"]["digest"] == img.labels["io.modelship.model.digest"]
    assert out["pip"] is False and out["wheels"] is False  # no build tools, no wheelhouse in the image
    assert out["tinydep"] == "1.0"

    container = docker_client.containers.run(tag, detach=True, ports={"8123/tcp": ("127.0.0.1", None)})
    try:
        assert wait_healthy(container, timeout=60) == "healthy", container.logs()[-2000:]
    finally:
        container.remove(force=True)


def test_secret_in_env_never_enters_image(tmp_path, docker_client, base_image, image_tags, monkeypatch):
    """A credential in the build's environment, the model URI and the git remote is in no layer/config/history."""
    secret = f"s3cr3t{uuid.uuid4().hex}"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", f"AccountName=a;AccountKey={secret}")
    monkeypatch.setenv("MODELSHIP_TEST_TOKEN", secret)
    app = make_app(tmp_path / "app")
    git(app, "init", "-q")
    git(app, "add", ".")
    git(app, "commit", "-qm", "init")
    git(app, "remote", "add", "origin", f"https://user:{secret}@git.example.com/team/app.git")
    model = make_model(
        tmp_path / "model", {"m.bin": b"abc"}, uri=f"https://acct.blob.core.windows.net/c/m?sv=1&sig={secret}"
    )
    tag = f"{_name()}:1"
    image_tags.append(tag)
    img = build(
        app, model, tag, base_image=base_image, entrypoint="python app.py", quiet=True, docker_client=docker_client
    )
    assert img.labels["org.opencontainers.image.source"] == "https://git.example.com/team/app.git"
    assert img.labels["org.opencontainers.image.revision"] == git(app, "rev-parse", "HEAD")

    saved = b"".join(docker_client.images.get(tag).save(named=True))  # every layer, the config, the manifest
    history = json.dumps(docker_client.api.history(tag))
    attrs = json.dumps(docker_client.api.inspect_image(tag))
    assert len(saved) > 1_000_000
    for blob in (saved, history.encode(), attrs.encode()):
        assert secret.encode() not in blob


def test_requirement_without_wheel_fails_naming_it(tmp_path, docker_client, base_image, image_tags):
    dists = tmp_path / "dists"
    dists.mkdir()
    (dists / "sdistonly-1.0.tar.gz").write_bytes(b"not really a tarball")  # an sdist, no wheel
    make_wheel(dists, "tinydep", "1.0")
    app = make_app(tmp_path / "app", requirements=local_requirements(dists, "tinydep==1.0", "sdistonly==1.0"))
    model = make_model(tmp_path / "model", {"m.bin": b"abc"})
    tag = f"{_name()}:1"
    image_tags.append(tag)
    with pytest.raises(BuildError, match=r"no binary wheel of sdistonly==1\.0") as exc:
        build(
            app, model, tag, base_image=base_image, entrypoint="python app.py", quiet=True, docker_client=docker_client
        )
    assert "\n" not in str(exc.value)


def test_bring_your_own_dockerfile(tmp_path, docker_client, base_image, image_tags):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "tinydep", "1.0")
    app = make_app(tmp_path / "app", requirements=local_requirements(wheels, "tinydep==1.0"))
    (app / "Dockerfile").write_text(
        f"FROM {base_image}\n"
        "ARG MODELSHIP_MODEL_DIR\nARG MODELSHIP_WHEELS_DIR\n"
        "COPY ${MODELSHIP_WHEELS_DIR} /wheels\n"
        "RUN python3 -m venv /venv \\\n"
        " && /venv/bin/pip install -q --no-index --find-links /wheels -r /wheels/requirements.txt\n"
        "COPY ${MODELSHIP_MODEL_DIR} /models/current\n"
        "COPY app.py /srv/app.py\n"
        'CMD ["/venv/bin/python", "/srv/app.py"]\n'
    )
    model = make_model(tmp_path / "model", {"a/b.bin": b"bb", "c.txt": b"c"}, uri="az://acct/models/m", version="2")
    tag = f"{_name()}:1"
    image_tags.append(tag)
    img = build(app, model, tag, dockerfile=app / "Dockerfile", quiet=True, docker_client=docker_client)
    assert img.labels["io.modelship.model.version"] == "2"
    assert docker_client.images.get(tag).labels == img.labels
    out = docker_client.containers.run(
        tag,
        ["/venv/bin/python", "-c", "import os, tinydep; print(sorted(os.listdir('/models/current')), tinydep.VERSION)"],
        remove=True,
    ).decode()
    assert out.strip() == "['a', 'c.txt', 'modelship.json'] 1.0"


def test_build_failure_names_failing_step(tmp_path, docker_client, base_image, image_tags):
    app = make_app(tmp_path / "app")
    (app / "Dockerfile").write_text(f"FROM {base_image}\nRUN echo 'boom: missing thing' >&2 && false\n")
    model = make_model(tmp_path / "model", {"m.bin": b"abc"})
    tag = f"{_name()}:1"
    image_tags.append(tag)
    with pytest.raises(BuildError, match=r"at Step 2/\d+ : RUN .*boom: missing thing"):
        build(app, model, tag, dockerfile=app / "Dockerfile", quiet=True, docker_client=docker_client)


def test_push_and_inspect_roundtrip_through_registry(tmp_path, docker_client, base_image, registry, image_tags, capsys):
    app = make_app(tmp_path / "app")
    git(app, "init", "-q")
    git(app, "add", ".")
    git(app, "commit", "-qm", "init")
    git(app, "tag", "v0.4.0")
    model = make_model(tmp_path / "model", {"m.bin": b"model bytes"}, uri="az://acct/models/sentiment", version="1.5")
    repo = f"{registry}/{_name()}"
    rc = main([
        "build", str(app), "--model", str(model), "--tag", f"{repo}:app1", "--base-image", base_image,
        "--entrypoint", "python app.py", "--tag-model-version", "--json",
    ])  # fmt: skip
    assert rc == 0
    built = json.loads(capsys.readouterr().out)
    image_tags.extend(built["tags"])
    assert built["tags"] == [f"{repo}:app1", f"{repo}:app1-model-1.5"]
    labels = built["labels"]
    model_block = {
        "uri": "az://acct/models/sentiment",
        "version": "1.5",
        "model_digest": labels["io.modelship.model.digest"],
        "signer": None,  # built without --verify-key: nothing was checked
    }
    # the model and app blocks, as inspect prints them; no image_digest yet: only a push makes one
    assert built["model"] == model_block and "image_digest" not in built
    assert built["app"] == {"port": 8000, "ready_path": "/health/ready", "live_path": "/health/live"}
    assert labels["io.modelship.app.live-path"] == "/health/live"
    assert labels["org.opencontainers.image.version"] == "v0.4.0"
    assert labels["org.opencontainers.image.revision"] == git(app, "rev-parse", "HEAD")

    local = inspect(f"{repo}:app1", docker_client=docker_client)
    assert local.source == "local" and local.labels == labels and local.ref is None

    assert main(["push", f"{repo}:app1", "--json"]) == 0
    pushed = json.loads(capsys.readouterr().out)
    digest = pushed["image_digest"]
    assert "digest" not in pushed
    assert pushed["ref"] == f"{repo}@{digest}" and pushed["image"] == f"{repo}:app1"  # pinned: nothing to glue
    assert digest.startswith("sha256:")
    second = push(f"{repo}:app1-model-1.5", quiet=True, docker_client=docker_client)
    assert second.image == f"{repo}:app1-model-1.5" and second.ref == f"{repo}@{second.image_digest}"
    assert second.image_digest.startswith("sha256:")
    for t in built["tags"]:
        docker_client.images.remove(t)  # from here on, only the registry has it

    remote = inspect(f"{repo}:app1")
    assert remote.source == "registry" and remote.ref == f"{repo}@{digest}"
    assert remote.image_digest == digest and remote.id == built["id"] and "digest" not in remote.to_dict()
    assert remote.labels == labels
    assert remote.model == model_block
    assert remote.manifest is not None and "fetched_at" not in remote.manifest
    assert [f["path"] for f in remote.manifest["files"]] == ["m.bin"]
    assert main(["inspect", f"{repo}:app1-model-1.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["labels"] == labels


def test_docker_not_reachable_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")
    app = make_app(tmp_path / "app")
    model = make_model(tmp_path / "model", {"m.bin": b"abc"})
    with pytest.raises(DockerError) as exc:
        build(app, model, "x/y:1", base_image="b", entrypoint="python app.py")
    assert str(exc.value) == (
        "Docker engine not reachable at unix:///nonexistent ([Errno 2] No such file or directory): start the Docker "
        "daemon (e.g. 'sudo systemctl start docker') or point DOCKER_HOST at a running engine"
    )
    with pytest.raises(DockerError, match="not reachable"):
        push("127.0.0.1:5000/x/y:1")
    assert main(["build", str(app), "--model", str(model), "-t", "x/y:1", "--entrypoint", "python app.py"]) == 1
    assert capsys.readouterr().err == f"modelship: error: {exc.value}\n"


def test_docker_save_scan_helper_sees_layers(tmp_path, docker_client, base_image, image_tags):
    """Guards the secret scan above: a marker that *is* in the model shows up in `docker save` output."""
    marker = f"marker{uuid.uuid4().hex}".encode()
    app = make_app(tmp_path / "app")
    model = make_model(tmp_path / "model", {"m.bin": marker})
    tag = f"{_name()}:1"
    image_tags.append(tag)
    build(app, model, tag, base_image=base_image, entrypoint="python app.py", quiet=True, docker_client=docker_client)
    assert marker in b"".join(docker_client.images.get(tag).save(named=True))
    # and `docker history` shows no build args or env values at all
    out = subprocess.run(["docker", "history", "--no-trunc", tag], capture_output=True, text=True, check=True).stdout
    assert "MODELSHIP_MODEL_DIR=/opt/modelship/model" in out and "AccountKey" not in out


def test_unknown_base_image_is_clear(tmp_path, docker_client):
    """A base image the engine lacks is pulled; when that fails, the one line names the engine's reason."""
    app = make_app(tmp_path / "app")
    model = make_model(tmp_path / "model", {"m.bin": b"abc"})
    base = "127.0.0.1:1/no-such/base:1"  # a registry name on loopback: the pull fails without leaving the machine
    with pytest.raises(DockerError, match=r"base image 127\.0\.0\.1:1/no-such/base:1 is not local and pulling it "
                       r"failed \(.*connection refused\)") as exc:  # fmt: skip
        build(app, model, "x/y:1", base_image=base, entrypoint="python app.py", docker_client=docker_client)
    assert exc.value.exit_code == 1
    assert Path(app).exists()


def test_inspect_of_unknown_local_name_does_not_guess_a_registry(docker_client):
    with pytest.raises(NotFoundError, match=r"image nosuch-\w+:1 not found locally; to read it from a registry"):
        inspect(f"nosuch-{uuid.uuid4().hex[:8]}:1", docker_client=docker_client)
