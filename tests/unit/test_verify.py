"""`modelship verify DIR` / ``modelship.verify``: a fetched folder checked against its modelship.json (issue 19
item 24): exit 0 and one line when it matches, exit 1 and one line saying what differs when not."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import modelship
from modelship.errors import ModelshipError, UsageError
from modelship.progress import human_bytes
from support.cli import run_cli
from support.models import make_model


@pytest.fixture
def fetched(tmp_path, monkeypatch) -> Path:
    """A folder written by `modelship fetch` (three files, one in a sub-folder)."""
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache"))
    uri = (tmp_path / "store").as_uri()
    src = make_model(tmp_path / "src", {"w.bin": 5000, "sub/cfg.json": b'{"a": 1}', "labels.txt": b"a\nb\n"})
    modelship.publish(src, uri, version="1")
    dest = tmp_path / "model"
    modelship.fetch(uri, dest, progress=False)
    return dest


def _writable(path: Path) -> Path:
    """A fetched file is a read-only hard link into the cache: replace it by a copy before editing it."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    return path


def test_a_fetched_folder_verifies(fetched):
    proc = run_cli("verify", str(fetched))
    assert proc.returncode == 0, proc.stderr
    digest = json.loads((fetched / "modelship.json").read_text())["digest"]
    assert proc.stdout == f"verified {fetched}: 3 files, {human_bytes(5012)}, model_digest {digest}\n"
    assert proc.stderr == ""
    result = modelship.verify(fetched)
    assert result.ok and result.problem() is None and (result.files, result.size) == (3, 5000 + 8 + 4)
    as_json = json.loads(run_cli("verify", str(fetched), "--json").stdout)
    assert as_json == {
        "target": str(fetched),
        "kind": "folder",
        "ok": True,
        "model_digest": digest,
        "files": 3,
        "size": 5012,
        "missing": [],
        "changed": [],
        "unlisted": [],
    }


def test_every_kind_of_difference_is_named_in_one_line(fetched):
    w = _writable(fetched / "w.bin")
    with open(w, "r+b") as f:  # same size, other bytes
        f.write(b"\0" * 16)
    _writable(fetched / "labels.txt").write_bytes(b"a\n")  # other size
    (fetched / "sub" / "cfg.json").unlink()
    (fetched / "NOTES.md").write_text("mine")
    proc = run_cli("verify", str(fetched))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == (
        f"modelship: error: {fetched} does not match its modelship.json: 2 changed (labels.txt: 2 bytes, recorded "
        "4, w.bin: sha256 differs); 1 missing (sub/cfg.json); 1 unlisted (NOTES.md); re-fetch the model, or pass "
        "--allow-extra to accept files it does not list\n"
    )
    out = json.loads(run_cli("verify", str(fetched), "--json").stdout)
    assert out["ok"] is False and out["missing"] == ["sub/cfg.json"] and out["unlisted"] == ["NOTES.md"]
    assert out["changed"] == [
        {"path": "labels.txt", "what": "2 bytes, recorded 4"},
        {"path": "w.bin", "what": "sha256 differs"},
    ]


def test_unlisted_files_fail_unless_allowed(fetched):
    (fetched / "eval").mkdir()
    (fetched / "eval" / "results.csv").write_text("a,b\n")
    proc = run_cli("verify", str(fetched))
    assert proc.returncode == 1
    assert "1 unlisted (eval/results.csv); move them out, or pass --allow-extra" in proc.stderr
    assert run_cli("verify", str(fetched), "--allow-extra").returncode == 0
    r = modelship.verify(fetched, allow_extra=True)
    assert r.ok and r.unlisted == ("eval/results.csv",)


def test_a_link_out_of_the_folder_is_not_the_recorded_file(fetched, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes((fetched / "labels.txt").read_bytes())  # the right bytes, but not in the model folder
    (fetched / "labels.txt").unlink()
    os.symlink(outside, fetched / "labels.txt")
    r = modelship.verify(fetched)
    assert not r.ok and [p for p, _ in r.changed] == ["labels.txt"]


def test_nothing_to_verify_against_is_one_line(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "w.bin").write_bytes(b"x")
    proc = run_cli("verify", str(plain))
    assert proc.returncode == 1
    assert proc.stderr == (
        f"modelship: error: {plain} holds no modelship.json, so there is nothing to verify it against; "
        "verify checks folders that 'modelship fetch' wrote\n"
    )
    (plain / "modelship.json").write_text('{"my": "config"}')
    with pytest.raises(ModelshipError, match="not a modelship manifest") as e:
        modelship.verify(plain)
    assert not isinstance(e.value, UsageError)
    proc = run_cli("verify", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert "does not exist; verify checks a model folder against its modelship.json" in proc.stderr
