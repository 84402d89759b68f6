"""The CLI's README lines as users type them, run as processes against Azurite."""

from __future__ import annotations

import json

import pytest

from support.azurite import container_sas
from support.cli import run_cli
from support.models import make_model
from support.trees import tree_sha


@pytest.mark.azurite
def test_the_readme_lines_with_options_in_between_against_azurite(tmp_path, azure_env, blob_container):
    """publish / resolve / lock / fetch as users type them, run as processes against Azurite; JSON keys named apart."""
    uri = f"az://devstoreaccount1/{blob_container.container_name}/models/iris"
    src = make_model(tmp_path / "m", {"model.onnx": 3000, "labels.json": b'["a"]'})
    make_model(tmp_path / "m2", {"model.onnx": 10}, seed=2)

    def run(*argv: str) -> dict:
        proc = run_cli(*argv)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    published = run("publish", "--version", "1.0.0", str(src), "--json", uri)
    run("publish", str(tmp_path / "m2"), "--json", uri, "--version", "2.0.0")
    digest = published["model_digest"]
    assert digest.startswith("sha256:") and "digest" not in published

    resolved = run("resolve", "--json", uri, "--version", "1.0.0")
    assert resolved["version"] == "1.0.0"
    assert resolved["model"] == {"uri": uri, "version": "1.0.0", "model_digest": digest}

    locked = run("lock", uri, "-o", str(tmp_path / "pinned.lock"), "--version", "1.0.0", "--json")
    assert locked["model_digest"] == digest and "digest" not in locked
    assert json.loads((tmp_path / "pinned.lock").read_text())["digest"] == digest  # the file format is unchanged

    fetched = run("fetch", uri, "--version", "1.0.0", str(tmp_path / "out"), "--json")  # issue #14's own line
    assert fetched["version"] == "1.0.0" and fetched["model_digest"] == digest and "digest" not in fetched
    assert tree_sha(tmp_path / "out") == tree_sha(src)

    again = run("fetch", "--json", str(tmp_path / "out2"), "--lock", str(tmp_path / "pinned.lock"))
    assert again["model_digest"] == digest and again["dest"] == str(tmp_path / "out2")


@pytest.mark.azurite
def test_fetch_with_a_lock_needs_only_read_permission(tmp_path, azure_env, blob_container, testbed):
    """A read-only container SAS (sp=r) may not list: fetch --lock reads the files the lock names, by name
    (issue 19 item 24); without a lock the listing is needed, and the refusal is one line."""
    uri = f"az://devstoreaccount1/{blob_container.container_name}/models/iris"
    src = make_model(tmp_path / "m", {"model.onnx": 3000, "sub/labels.json": b'["a"]'})
    assert run_cli("publish", str(src), uri, "--version", "1.0.0").returncode == 0
    lock = tmp_path / "modelship.lock"
    assert run_cli("lock", uri, "-o", str(lock)).returncode == 0
    read_only = {"AZURE_STORAGE_CONNECTION_STRING": container_sas(testbed, blob_container.container_name, "r")}
    got = run_cli("fetch", "--lock", str(lock), str(tmp_path / "out"), "--json", env=read_only)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["version"] == "1.0.0" and tree_sha(tmp_path / "out") == tree_sha(src)
    unlocked = run_cli("fetch", uri, str(tmp_path / "out2"), env=read_only)
    assert unlocked.returncode == 1 and unlocked.stderr.count("\n") == 1, unlocked.stderr
    assert not (tmp_path / "out2").exists()
