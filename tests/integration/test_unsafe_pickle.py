"""No pickle that runs code: publish (file://, Azurite, oci://), build --model and assemble --model refuse a model
file whose pickle imports os.system, in one line, before anything is written, built or contacted; the command
never runs; ``--allow-unsafe-pickle FILE`` lets a reviewed file through with one line on stderr."""

from __future__ import annotations

import pytest

import modelship
from modelship.errors import UnsafePickleError
from support.builds import make_app
from support.cli import run_cli
from support.models import make_model
from support.pickles import evil_pickle, plain_pickle, proves_it_runs, torch_zip

LINE = (
    "modelship: error: refusing model file {name}: its pickle imports posix.system, which runs code when it is "
    "loaded (once reviewed, pass --allow-unsafe-pickle {name})"
)
LET_THROUGH = (
    "modelship: {name} imports posix.system, which runs code when it is loaded: let through by --allow-unsafe-pickle"
)


@pytest.fixture
def hostile(tmp_path):
    """(model folder, marker): est.pkl runs ``touch MARKER`` when loaded; the folder's other files are fine."""
    marker = tmp_path / "MARKER"
    proves_it_runs(evil_pickle(marker), marker)
    model = make_model(tmp_path / "model", {"est.pkl": evil_pickle(marker), "plain.pkl": plain_pickle()})
    (model / "config.json").write_text('{"classes": 3}')
    return model, marker


def test_publish_to_a_file_store_refuses_it_and_writes_nothing(tmp_path, hostile):
    model, marker = hostile
    store = tmp_path / "store"
    r = run_cli("publish", str(model), store.as_uri(), "--version", "1")
    assert (r.returncode, r.stderr.splitlines(), r.stdout) == (1, [LINE.format(name="est.pkl")], "")
    assert not store.exists() and not marker.exists()


def test_allow_unsafe_pickle_publishes_the_reviewed_file_with_one_line(tmp_path, hostile):
    model, marker = hostile
    store = tmp_path / "store"
    r = run_cli("publish", str(model), store.as_uri(), "--version", "1", "--allow-unsafe-pickle", "est.pkl")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [LET_THROUGH.format(name="est.pkl")]
    assert (store / "1" / "est.pkl").read_bytes() == (model / "est.pkl").read_bytes()
    assert not marker.exists()
    # another file is not let through by it
    (model / "more.pt").write_bytes(torch_zip(evil_pickle(marker)))
    r = run_cli("publish", str(model), store.as_uri(), "--version", "2", "--allow-unsafe-pickle", "est.pkl")
    assert r.returncode == 1 and r.stderr.splitlines()[-1] == (
        "modelship: error: refusing model file more.pt:archive/data.pkl: its pickle imports posix.system, which "
        "runs code when it is loaded (once reviewed, pass --allow-unsafe-pickle more.pt)"
    )
    assert not (store / "2").exists() and not marker.exists()


def test_a_renamed_pickle_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    model = make_model(tmp_path / "model", {"weights.safetensors": evil_pickle(marker, protocol=0)})
    r = run_cli("publish", str(model), (tmp_path / "store").as_uri(), "--version", "1")
    assert (r.returncode, r.stderr.splitlines()) == (1, [LINE.format(name="weights.safetensors")])


def test_a_plain_pickle_publishes(tmp_path):
    model = make_model(tmp_path / "model", {"est.pkl": plain_pickle(), "m.pt": torch_zip(plain_pickle())})
    r = run_cli("publish", str(model), (tmp_path / "store").as_uri(), "--version", "1")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


def test_publish_to_azurite_refuses_it_and_uploads_nothing(tmp_path, hostile, blob_container, azure_env):
    model, marker = hostile
    uri = f"az://devstoreaccount1/{blob_container.container_name}/models/iris"
    with pytest.raises(UnsafePickleError) as e:
        modelship.publish(model, uri, version="1.0.0", progress=False)
    assert (e.value.path, e.value.global_name) == ("est.pkl", "posix.system")
    assert list(blob_container.list_blobs()) == [] and not marker.exists()
    modelship.publish(model, uri, version="1.0.0", progress=False, allow_unsafe_pickle=["est.pkl"])
    assert "models/iris/1.0.0/est.pkl" in {b.name for b in blob_container.list_blobs()}
    assert not marker.exists()


def test_publish_to_a_registry_refuses_it_before_any_request(hostile):
    model, _ = hostile
    r = run_cli("publish", str(model), "oci://127.0.0.1:1/models/iris", "--version", "1")
    assert (r.returncode, r.stderr.splitlines()) == (1, [LINE.format(name="est.pkl")])


def test_build_refuses_it_before_the_engine_is_used(tmp_path, hostile):
    model, marker = hostile
    app = make_app(tmp_path / "app", requirements="")
    env = {"DOCKER_HOST": "unix:///nonexistent"}  # past the check, the build would stop here instead
    argv = ["build", str(app), "--model", str(model), "--tag", "x/y:1", "--entrypoint", "python app.py"]
    r = run_cli(*argv, env=env)
    assert (r.returncode, r.stderr.splitlines()) == (1, [LINE.format(name="est.pkl")])
    r = run_cli(*argv, "--allow-unsafe-pickle", str(model / "est.pkl"), env=env)
    lines = r.stderr.splitlines()
    assert r.returncode == 1 and lines[0] == LET_THROUGH.format(name="est.pkl") and "not reachable" in lines[-1]
    assert not marker.exists()


def test_assemble_refuses_it_before_any_registry_is_contacted(hostile):
    model, marker = hostile
    argv = ["assemble", "127.0.0.1:1/app:1", "--model", str(model), "--tag", "127.0.0.1:1/app:m"]
    r = run_cli(*argv)
    assert (r.returncode, r.stderr.splitlines()) == (1, [LINE.format(name="est.pkl")])
    r = run_cli(*argv, "--allow-unsafe-pickle", "est.pkl")
    lines = r.stderr.splitlines()
    assert r.returncode != 0 and lines[0] == LET_THROUGH.format(name="est.pkl") and "est.pkl" not in lines[-1]
    assert not marker.exists()
