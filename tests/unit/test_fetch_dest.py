"""fetch replaces DEST whole, so it replaces only what an earlier fetch wrote: a user's project folder, or a file a
user added to a fetched folder, is never deleted (issue 19 item 1). Against a file:// store, through the CLI as a
user types it and through the Python API."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import modelship
from modelship.errors import UsageError
from support.cli import run_cli
from support.models import make_model
from support.trees import leftovers


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    """A file:// store with versions 1 and 2 of a two-file model; the cache in tmp_path."""
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache"))
    uri = (tmp_path / "store").as_uri()
    for version, seed in (("1", 1), ("2", 2)):
        src = make_model(tmp_path / f"src{version}", {"w.bin": 3000, "sub/cfg.json": 40}, seed=seed)
        modelship.publish(src, uri, version=version, progress=False)
    return uri


def _contents(root: Path) -> dict[str, bytes | None]:
    """Every path below root and its bytes (None: a folder), to prove a refused fetch touched nothing."""
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def _fetch_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("fetch", *argv, cwd=cwd)


def test_a_project_folder_with_its_own_modelship_json_is_refused_untouched(store, tmp_path):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "main.py").write_text("print('mine')\n")
    (project / "src" / "lib.py").write_text("X = 1\n")
    (project / "modelship.json").write_text(json.dumps({"my": "config"}))
    before = _contents(project)
    proc = _fetch_cli(store, "--version", "1", ".", cwd=project)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "modelship.json is not a manifest written by modelship" in line, line
    assert "choose a new or empty folder" in line
    assert _contents(project) == before
    assert leftovers(tmp_path) == []
    with pytest.raises(UsageError, match="is not a manifest written by modelship"):
        modelship.fetch(store, project, version="1", progress=False)
    assert _contents(project) == before


def test_a_folder_named_modelship_json_does_not_make_a_folder_replaceable(store, tmp_path):
    dest = tmp_path / "dest"
    (dest / "modelship.json").mkdir(parents=True)
    (dest / "mine.txt").write_text("keep")
    before = _contents(dest)
    with pytest.raises(UsageError, match="is not a manifest written by modelship"):
        modelship.fetch(store, dest, version="1", progress=False)
    assert _contents(dest) == before


def test_files_a_user_adds_to_a_fetched_folder_are_named_and_kept(store, tmp_path):
    dest = tmp_path / "model"
    modelship.fetch(store, dest, version="1", progress=False)
    (dest / "NOTES.md").write_text("my notes")
    (dest / "eval").mkdir()
    (dest / "eval" / "results.csv").write_text("a,b\n1,2\n")
    (dest / "sub" / "mine.txt").write_text("mine")  # beside a listed file, in a listed folder
    before = _contents(dest)

    proc = _fetch_cli(store, "--version", "2", str(dest), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "does not list (NOTES.md, eval/, sub/mine.txt)" in line, line
    assert "move them out, or choose another destination" in line
    assert _contents(dest) == before

    with pytest.raises(UsageError, match=r"does not list \(NOTES\.md, eval/, sub/mine\.txt\)"):
        modelship.fetch(store, dest, version="2", progress=False)
    assert _contents(dest) == before
    assert leftovers(tmp_path) == []

    # moved out: the folder is modelship's again, and the next version replaces it
    for extra in ("NOTES.md", "eval/results.csv", "sub/mine.txt"):
        (dest / extra).unlink()
    (dest / "eval").rmdir()
    assert modelship.fetch(store, dest, version="2", progress=False).version == "2"
    assert sorted(_contents(dest)) == ["modelship.json", "sub", "sub/cfg.json", "w.bin"]


def test_a_file_added_during_the_download_is_not_swapped_away(store, tmp_path, monkeypatch):
    """The check runs again just before the swap: a file written into DEST while the model downloaded stays."""
    from modelship import _install

    dest = tmp_path / "model"
    modelship.fetch(store, dest, version="1", progress=False)
    real_link = _install.Cache.link

    def link_then_user_writes(self, sha256, target):
        real_link(self, sha256, target)
        (dest / "late.txt").write_text("written meanwhile")

    monkeypatch.setattr(_install.Cache, "link", link_then_user_writes)
    with pytest.raises(UsageError, match=r"does not list \(late\.txt\)"):
        modelship.fetch(store, dest, version="2", progress=False)
    assert (dest / "late.txt").read_text() == "written meanwhile"
    assert json.loads((dest / "modelship.json").read_text())["version"] == "1"
    assert leftovers(tmp_path) == []


def test_a_fetched_folder_is_still_replaced_and_an_empty_one_filled(store, tmp_path):
    dest = tmp_path / "model"
    dest.mkdir()
    assert modelship.fetch(store, dest, version="1", progress=False).version == "1"
    proc = _fetch_cli(store, "--version", "2", str(dest), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((dest / "modelship.json").read_text())["version"] == "2"
