"""The registry builder's pieces that need no registry: which files are the requirements, who takes a login."""

from __future__ import annotations

from modelship.appimage.deps import requirement_files


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
