"""Build pieces that need no Docker engine: settings precedence, the context tar, templates, references."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from modelship import modeldir
from modelship.errors import IntegrityError, UsageError
from modelship.image import config as cfg_mod
from modelship.image import context as ctx
from modelship.image import dockerfile as df
from modelship.image._build import model_version_tag, normalise_tags
from modelship.image.labels import clean_remote
from modelship.image.wheels import Target, pinned_requirements
from modelship.manifest import Manifest
from support.builds import make_app
from support.models import make_model


def test_settings_precedence_explicit_then_pyproject_then_env_then_default(tmp_path, monkeypatch):
    app = make_app(tmp_path / "app")
    monkeypatch.setenv("MODELSHIP_BASE_IMAGE", "env/base:1")
    c = cfg_mod.resolve(app, entrypoint="python app.py")
    assert (c.base_image, c.port, c.ready_path, c.requirements) == ("env/base:1", 8000, "/health/ready", None)
    assert c.live_path == "/health/live"

    (app / "pyproject.toml").write_text(
        '[tool.modelship]\nbase-image = "cfg/base:2"\nport = 9000\nready_path = "/ready"\nlive-path = "/alive"\n'
        'entrypoint = ["python", "app.py"]\nrequirements = "reqs/prod.txt"\n'
    )
    (app / "reqs").mkdir()
    (app / "reqs" / "prod.txt").write_text("flask\n")
    c = cfg_mod.resolve(app)
    assert (c.base_image, c.port, c.ready_path, c.live_path) == ("cfg/base:2", 9000, "/ready", "/alive")
    assert cfg_mod.resolve(app, live_path="/healthz").live_path == "/healthz"
    assert c.entrypoint == ("python", "app.py") and c.requirements == app / "reqs" / "prod.txt"

    c = cfg_mod.resolve(app, base_image="cli/base:3", port=7000, entrypoint="gunicorn -b :7000 app:app")
    assert (c.base_image, c.port, c.entrypoint[0]) == ("cli/base:3", 7000, "gunicorn")

    monkeypatch.delenv("MODELSHIP_BASE_IMAGE")
    (app / "pyproject.toml").write_text("")
    assert cfg_mod.resolve(app, entrypoint="x").base_image == "python:3.11-slim"


def test_entrypoint_defaults_to_gunicorn_only_when_required(tmp_path):
    app = make_app(tmp_path / "app", requirements="flask==3.0\n")
    with pytest.raises(UsageError, match="no entrypoint: pass --entrypoint"):
        cfg_mod.resolve(app)
    (app / "requirements.txt").write_text("flask==3.0\nGunicorn>=22  # server\n")
    assert cfg_mod.resolve(app, port=8080).entrypoint == ("gunicorn", "-b", "0.0.0.0:8080", "app:app")
    assert cfg_mod.resolve(app, dockerfile=None, entrypoint="python app.py").entrypoint == ("python", "app.py")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("port = true", "port must be an integer, got True"),
        ('port = "80"', "port must be an integer, got '80'"),
        ("port = 70000", "between 1 and 65535"),
        ('ready_path = "health"', "ready path must start with '/'"),
        ('live_path = "/a b"', "live path must start with '/'"),
        ("live_path = 1", "live_path must be a string, got 1"),
        ("entrypoint = 5", "entrypoint must be a string or a list of strings, got 5"),
        ("tag_model_version = 1", "tag_model_version must be true or false"),
        (
            'entrypont = "python app.py"',
            r"unknown key 'entrypont' in \[tool.modelship\]; did you mean 'entrypoint'\? known keys: base_image, "
            "requirements, dockerfile, entrypoint, port, ready_path, live_path, healthcheck_interval, "
            "tag_model_version, include, exclude$",
        ),
        ('model = "az://acct/c/m"', "unknown key 'model' in .tool.modelship.; known keys: base_image, "),
        ('healthcheck_interval = "soon"', "healthcheck_interval"),
        ("[tool.modelship", "not valid TOML"),
    ],
)
def test_bad_settings_are_usage_errors(tmp_path, toml, message):
    app = make_app(tmp_path / "app")
    text = toml if toml.startswith("[") else f"[tool.modelship]\n{toml}\n"
    (app / "pyproject.toml").write_text(text)
    with pytest.raises(UsageError, match=message):
        cfg_mod.resolve(app, entrypoint="python app.py")


def _context(app, model, manifest) -> bytes:
    buf = io.BytesIO()
    w = ctx.ContextWriter(buf)
    w.bytes(ctx.DOCKERFILE_PATH, b"FROM x\n")
    ctx.add_model(w, model, manifest, ctx.MODEL_ROOTFS + df.MODEL_DIR)
    ctx.add_app(w, app, ctx.APP_ROOTFS + df.APP_DIR, ctx.app_files(app, skip=[model]))
    w.close()
    return buf.getvalue()


def test_context_tar_is_reproducible_and_normalised(tmp_path):
    app = make_app(
        tmp_path / "app", extra={".dockerignore": "# comment\n*.log\n!keep.log\n", "a.log": "x", "keep.log": "k"}
    )
    (app / "__pycache__").mkdir()
    (app / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"pyc")
    (app / "run.sh").write_text("#!/bin/sh\n")
    (app / "run.sh").chmod(0o700)
    (app / "link").symlink_to("app.py")
    model = make_model(app / "model", {"b.bin": b"b" * 10, "a/x.bin": b"x"}, uri="file:///m", version="1")
    manifest = Manifest.load(model / "modelship.json")
    assert manifest.fetched_at is not None

    first = _context(app, model, manifest)
    for p in [*app.rglob("*"), model]:
        if not p.is_symlink():
            p.touch()  # new mtimes must not change a byte
    assert _context(app, model, manifest) == first

    with tarfile.open(fileobj=io.BytesIO(first)) as t:
        members = t.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert all(m.mtime == ctx.FIXED_MTIME and m.uid == 0 and m.gid == 0 and not m.uname for m in members)
        by_name = {m.name: m for m in members}
        mp = ".modelship/model-rootfs/opt/modelship/model"
        assert {n for n in names if n.startswith(mp + "/")} == {
            f"{mp}/a",
            f"{mp}/a/x.bin",
            f"{mp}/b.bin",
            f"{mp}/modelship.json",
        }
        assert "fetched_at" not in json.loads(t.extractfile(f"{mp}/modelship.json").read())
        assert by_name[f"{mp}/b.bin"].mode == 0o644 and by_name[".modelship/model-rootfs/opt"].mode == 0o755
        ap = ".modelship/app-rootfs/app"
        app_names = {n.removeprefix(ap + "/") for n in names if n.startswith(ap + "/")}
        # .dockerignore honoured (with its ! exception), bytecode and the model folder left out
        assert app_names == {"app.py", "keep.log", "link", "run.sh"}
        assert by_name[f"{ap}/run.sh"].mode == 0o755 and by_name[f"{ap}/app.py"].mode == 0o644
        assert by_name[f"{ap}/link"].issym() and by_name[f"{ap}/link"].linkname == "app.py"


def test_model_files_are_verified_against_the_manifest(tmp_path):
    app = make_app(tmp_path / "app")
    model = make_model(tmp_path / "model", {"w.bin": b"good"}, uri="file:///m")
    manifest = Manifest.load(model / "modelship.json")
    (model / "w.bin").write_bytes(b"evil")
    with pytest.raises(IntegrityError, match="sha256 does not match"):
        _context(app, model, manifest)
    (model / "w.bin").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        _context(app, model, manifest)


def test_plain_folder_gets_a_computed_manifest(tmp_path):
    model = make_model(tmp_path / "model", {"w.bin": b"abc", "sub/c.json": b"{}"})
    m = modeldir.model_manifest(model)
    assert m.uri == f"file://{model}" and m.version is None and m.fetched_at is None
    assert [f.path for f in m.files] == ["sub/c.json", "w.bin"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="is empty"):
        modeldir.model_manifest(tmp_path / "empty")


def test_rendered_dockerfile_keeps_the_layer_order():
    labels = {"a.b": 'x"y\\z $HOME ${PATH}', "c": '{"k": [1]}'}
    text = df.render(
        base_image="b:1", python="/usr/bin/python3", cmd=["python", "app.py"], port=8080, ready_path="/r", labels=labels
    )
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith(("#", " "))]
    order = [ln.split()[0] + " " + ln.split()[1] for ln in lines if ln.startswith(("FROM", "RUN", "COPY"))]
    assert order == [
        "FROM b:1", "COPY .modelship/wheels/", "RUN /usr/bin/python3",  # deps stage
        "FROM b:1", "RUN grep", "COPY --from=deps", "COPY .modelship/model-rootfs/",  # setup, deps, model
        "FROM model", "COPY .modelship/app-rootfs/",  # code
    ]  # fmt: skip
    model_part, app_part = df.split_stages(text, "sha256:abc")
    assert "app-rootfs" not in model_part and "model-rootfs" not in app_part
    assert app_part.startswith("FROM sha256:abc\nCOPY .modelship/app-rootfs/ /\n")
    assert 'CMD ["python", "app.py"]' in text and "EXPOSE 8080" in text and "USER 10001:10001" in text
    assert "http://127.0.0.1:8080/r" in text and "$PATH" in text


def test_base_image_of_a_user_dockerfile():
    assert df.base_from_dockerfile("FROM a:1 AS build\nRUN x\nFROM build AS final\n") == "a:1"
    assert df.base_from_dockerfile("FROM --platform=linux/amd64 reg.io/p:3.11\n") == "reg.io/p:3.11"
    assert df.base_from_dockerfile("ARG B\nFROM $B\n") is None


def test_target_platform_tags():
    t = Target("/usr/bin/python3", "3.11", "cpython", "glibc", "2.36", "x86_64")
    assert t.platforms[0] == "manylinux_2_36_x86_64" and "manylinux2014_x86_64" in t.platforms
    assert "manylinux_2_5_x86_64" in t.platforms and "--abi" in t.pip_args and "cp311" in t.pip_args
    old = Target("/p", "3.9", "cpython", "glibc", "2.12", "aarch64")
    assert "manylinux2014_aarch64" not in old.platforms and "manylinux2010_aarch64" in old.platforms
    assert Target("/p", "3.12", "cpython", "musl", "1.2", "x86_64").platforms == [
        "musllinux_1_2_x86_64", "musllinux_1_1_x86_64", "musllinux_1_0_x86_64"]  # fmt: skip
    with pytest.raises(UsageError, match="no binary wheel platform"):
        _ = Target("/p", "3.11", "cpython", "", "", "x86_64").platforms


def test_pinned_requirements_from_wheel_names(tmp_path):
    (tmp_path / "Flask-3.0.3-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "typing_extensions-4.12.2-py3-none-any.whl").write_bytes(b"")
    assert pinned_requirements(tmp_path) == "Flask==3.0.3\ntyping_extensions==4.12.2\n"
    (tmp_path / "nothing").mkdir()
    assert pinned_requirements(tmp_path / "nothing") == ""


def test_tags_and_model_version_tags():
    assert normalise_tags("app") == ["app:latest"]
    assert normalise_tags(["127.0.0.1:5000/team/app:1", "127.0.0.1:5000/team/app"]) == [
        "127.0.0.1:5000/team/app:1", "127.0.0.1:5000/team/app:latest"]  # fmt: skip
    for bad in ("App:1", "app@sha256:00", "a b"):
        with pytest.raises(UsageError, match="invalid image tag"):
            normalise_tags(bad)
    m = Manifest.create("az://a/c/m", "2024-01-01+rc/1", [], stamp=False)
    assert model_version_tag("reg:5000/app:1.2", m) == "reg:5000/app:1.2-model-2024-01-01-rc-1"
    unversioned = Manifest.create("az://a/c/m", None, [], stamp=False)
    assert model_version_tag("app:1", unversioned) == f"app:1-model-{unversioned.digest[7:19]}"


def test_git_remote_credentials_are_stripped():
    assert clean_remote("https://user:tok@github.com/o/r.git") == "https://github.com/o/r.git"
    assert clean_remote("https://ghp_TOKEN@github.com/o/r") == "https://github.com/o/r"
    assert clean_remote("git@github.com:o/r.git") == "git@github.com:o/r.git"


SECRETS = {
    ".env": "AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=https;AccountKey=c2VjcmV0c2VjcmV0c2VjcmV0\n",
    "conf/.env.production": "TOKEN=abc\n",
    "conf/prod.env": "TOKEN=abc\n",
    "keys/server.pem": "-----BEGIN PRIVATE KEY-----\n",
    "keys/tls.key": "k",
    "id_rsa": "k",
    ".aws/credentials": "[default]\n",
    ".npmrc": "//registry/:_authToken=x\n",
    ".pypirc": "[pypi]\n",
}


def test_secret_files_stay_out_of_the_app_layer_and_each_is_named(tmp_path, caplog):
    """Issue 19 item 9: an app folder's .env (AccountKey=...) went into /app/.env without a word."""
    app = make_app(tmp_path / "app", extra={**SECRETS, "settings.py": "X = 1\n", "environment.py": "e\n"})
    with caplog.at_level("WARNING", logger="modelship"):
        files = ctx.app_files(app)
    assert files == ["app.py", "conf", "environment.py", "keys", "settings.py"]
    [warning] = [r.getMessage() for r in caplog.records if "left out of the image" in r.getMessage()]
    assert warning.startswith("left out of the image: .aws, .env, .npmrc, .pypirc, conf/.env.production and 4 more")
    assert "[tool.modelship] include" in warning and "AccountKey" not in warning
    # the context tar has none of them either
    model = make_model(tmp_path / "model", {"w.bin": b"w"}, uri="file:///m")
    with tarfile.open(fileobj=io.BytesIO(_context(app, model, Manifest.load(model / "modelship.json")))) as t:
        names = t.getnames()
    assert not [n for n in names if any(n.endswith(s) for s in SECRETS)], names


def test_include_and_exclude_in_the_tool_table(tmp_path, caplog):
    table = '[tool.modelship]\nentrypoint = "python app.py"\ninclude = ["conf/prod.env"]\nexclude = ["settings.py"]\n'
    app = make_app(tmp_path / "app", extra={**SECRETS, "settings.py": "X = 1\n", "pyproject.toml": table})
    (app / ".dockerignore").write_text("!id_rsa\n")  # a .dockerignore '!' line puts one back too
    cfg = cfg_mod.resolve(app)
    assert cfg.include == ("conf/prod.env",) and cfg.exclude == ("settings.py",)
    files = ctx.app_files(app, include=cfg.include, exclude=cfg.exclude)
    assert "conf/prod.env" in files and "id_rsa" in files and "settings.py" not in files and ".env" not in files
    for bad, says in (('include = ".env"', "include must be a list of strings"), ('exclude = ["!x"]', "no '!'")):
        (app / "pyproject.toml").write_text(f'[tool.modelship]\nentrypoint = "python app.py"\n{bad}\n')
        with pytest.raises(UsageError, match=says):
            cfg_mod.resolve(app)


def test_a_misspelt_app_setting_is_a_type_error_as_for_any_keyword(tmp_path):
    """build's app settings pass through to config.resolve as keywords: a typo is refused, not ignored."""
    from modelship import build

    with pytest.raises(TypeError, match="'prot'"):
        cfg_mod.resolve(tmp_path, prot=8000)
    with pytest.raises(TypeError, match="'ready_pth'"):
        build(tmp_path, None, "modelship-test/typo:1", ready_pth="/r")
