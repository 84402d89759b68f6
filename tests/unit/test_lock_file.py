"""Lock files as a user or an attacker edits them, against a file:// store (issue 19 items 19 and 22): a lock that
no longer matches the store or the command is a mismatch (exit 1), a malformed lock a usage error (exit 2), each
one line saying which."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import modelship
from modelship.errors import ModelshipError, UsageError
from modelship.manifest import Lock, tree_digest
from support.cli import run_cli
from support.models import make_model


@pytest.fixture
def locked(tmp_path, monkeypatch) -> tuple[str, Path]:
    """A file:// store with version 1 and a lock of it: (URI, lock path)."""
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache"))
    uri = (tmp_path / "store").as_uri()
    modelship.publish(make_model(tmp_path / "m", {"w.bin": 100, "sub/cfg.json": b"{}"}), uri, version="1")
    lock = tmp_path / "modelship.lock"
    modelship.lock(uri, output=lock)
    return uri, lock


def _edit(lock: Path, change) -> None:
    """Change the lock's JSON and keep its digest consistent (an edit made to pass the digest check)."""
    doc = json.loads(lock.read_text())
    change(doc)
    doc["digest"] = tree_digest((f["path"], f["sha256"]) for f in doc["files"])
    lock.write_text(json.dumps(doc))


def _fetch(lock: Path, dest: Path, *uri: str):
    return run_cli("fetch", *uri, "--lock", str(lock), str(dest), "--no-progress")


def test_a_duplicate_entry_is_refused(locked, tmp_path):
    _, lock = locked
    _edit(lock, lambda doc: doc["files"].append({**doc["files"][0], "sha256": "1" * 64}))
    proc = _fetch(lock, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        f"modelship: error: {lock}: lists 'sub/cfg.json' twice; re-create it with 'modelship lock'\n"
    )
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match=r"lists 'sub/cfg\.json' twice"):
        Lock.load(lock)


def test_a_path_out_of_the_model_is_invalid_not_removed(locked, tmp_path):
    _, lock = locked
    _edit(lock, lambda doc: doc["files"].append({"path": "../escape", "size": 1, "sha256": "1" * 64}))
    proc = _fetch(lock, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"modelship: error: {lock}: invalid entry: refusing file name '../escape'"), line
    assert "removed" not in line and line.endswith("re-create it with 'modelship lock'")


@pytest.mark.parametrize(("schema", "shown"), [("1", '"1"'), (True, "true"), (1.0, "1.0")])
def test_a_schema_that_is_not_the_integer_1_says_so(locked, tmp_path, schema, shown):
    _, lock = locked
    _edit(lock, lambda doc: doc.__setitem__("schema", schema))
    proc = _fetch(lock, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"modelship: error: {lock}: schema must be the integer 1, not {shown}; re-create it\n"


def test_a_lock_mismatch_exits_1_as_documented(locked, tmp_path):
    """The store changed since the lock, or the lock is for another model: a mismatch (1), not a usage error (2)."""
    uri, lock = locked
    other = (tmp_path / "other-store").as_uri()
    proc = _fetch(lock, tmp_path / "out", other)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (
        f"modelship: error: lock mismatch: the lock file is for {uri}, not {other}; give its URI or none\n"
    )
    with pytest.raises(ModelshipError, match="lock mismatch") as e:
        modelship.fetch(other, tmp_path / "out", lock=lock)
    assert not isinstance(e.value, UsageError)

    plain = str(tmp_path / "store") + "/"  # the same store spelt as a path: no mismatch
    assert _fetch(lock, tmp_path / "out", plain).returncode == 0

    modelship.publish(make_model(tmp_path / "m2", {"w.bin": 100, "sub/cfg.json": b"[]"}), uri, version="1", force=True)
    proc = _fetch(lock, tmp_path / "out2")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("modelship: error: lock mismatch: sub/cfg.json has sha256")
    usage = " ".join((Path(__file__).parents[2] / "docs" / "usage.md").read_text().split())
    assert "1 any other failure (a lock mismatch among them" in usage
