"""The registry builder's pieces that need no registry: which files are the requirements, who takes a login."""

from __future__ import annotations

import pytest

import modelship
from modelship.appimage.deps import requirement_files
from modelship.errors import UsageError
from support.cli import run_in_process


def test_the_requirements_files_are_the_one_given_and_those_it_includes_inside_the_app(tmp_path):
    app = tmp_path / "app"
    (app / "reqs").mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("six\n")
    (app / "requirements.txt").write_text(
        "-r reqs/base.txt\n--constraint=constraints.txt\n--requirement ../outside.txt\n-r https://x.example/r.txt\n"
    )
    (app / "reqs" / "base.txt").write_text("-r ../requirements.txt\nflask\n")  # a cycle is read once
    (app / "constraints.txt").write_text("flask<4\n")
    (app / "other.txt").write_text("not named\n")
    assert requirement_files(app / "requirements.txt", app) == ["constraints.txt", "reqs/base.txt", "requirements.txt"]
    assert requirement_files(tmp_path / "outside.txt", app) == []
    assert requirement_files(None, app) == []


def test_a_login_is_the_registry_builders_the_engine_builder_refuses_it_in_one_line(tmp_path, capsys):
    with pytest.raises(UsageError, match="--username/--password-stdin need --builder registry"):
        modelship.build(tmp_path, None, "reg.example/a:1", username="ci", password="pw")
    rc, _, err = run_in_process(capsys, "build", str(tmp_path), "-t", "reg.example/a:1", "--username", "ci")
    assert rc == 2 and "need --builder registry" in err and len(err.strip().splitlines()) == 1, err
    registry = ("build", str(tmp_path), "-t", "reg.example/a:1", "--builder", "registry", "--entrypoint", "python a.py")
    rc, _, err = run_in_process(capsys, *registry, "--username", "ci")  # checked before any registry is asked
    assert rc == 2 and "give both a username and a password" in err and len(err.strip().splitlines()) == 1, err
