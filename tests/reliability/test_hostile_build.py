"""Hostile input to `modelship build` and `pytest --modelship-image`: each case ends with its one-line error and
exit code, run as a user runs it (a real process), and leaves no image, container or <none> layer behind.

Rows go to the reliability log next to the store cases of test_hostile_inputs.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelship.manifest import tree_digest
from support.builds import build_cmd, local_requirements, make_app, make_wheel
from support.engine import engine_state, labelled_base, remove_labelled
from support.models import make_model
from support.record import record
from support.trees import file_sha256

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    setup: Callable[[Path, str], list[str]]  # (work dir, base image) -> command line
    rc: int
    needle: str  # in the one error line


def _build(tmp: Path, base: str, *extra: str, app: Path | None = None) -> list[str]:
    app = app or make_app(tmp / "app")
    model = make_model(tmp / "model", {"m.bin": b"weights"})
    return build_cmd(app, model, "modelship-test/hostile:1", base, "--no-progress", *extra)


def _failing_dockerfile(tmp: Path, base: str) -> list[str]:
    app = make_app(tmp / "app")
    (app / "Dockerfile").write_text(f"FROM {base}\nRUN echo 'boom: libfoo.so missing' >&2 && false\n")
    return _build(tmp, base, "--dockerfile", str(app / "Dockerfile"), app=app)


def _requirement_without_wheel(tmp: Path, base: str) -> list[str]:
    dists = tmp / "dists"
    make_wheel(dists, "tinydep", "1.0")
    (dists / "sdistonly-1.0.tar.gz").write_bytes(b"an sdist: nothing to install without building")
    app = make_app(tmp / "app", requirements=local_requirements(dists, "tinydep==1.0", "sdistonly==1.0"))
    return _build(tmp, base, app=app)


def _model_folder(kind: str) -> Callable[[Path, str], list[str]]:
    """A build whose --model folder holds something no image may get (issue 19 items 6 and 7)."""

    def setup(tmp: Path, base: str) -> list[str]:
        (tmp / "secret.txt").write_bytes(b"AccountKey=abc")
        model = make_model(tmp / "model", {"m.bin": b"weights"}, uri="file:///m" if kind == "escape" else None)
        if kind == "escape":  # a manifest entry outside the folder, with the right sha256
            data = json.loads((model / "modelship.json").read_text())
            data["files"].append({"path": "../secret.txt", "size": 14, "sha256": file_sha256(tmp / "secret.txt")})
            data["digest"] = tree_digest((f["path"], f["sha256"]) for f in data["files"])
            (model / "modelship.json").write_text(json.dumps(data))
        elif kind == "fifo":
            os.mkfifo(model / "pipe")
        elif kind == "loop":
            os.symlink("loop", model / "loop")
        else:  # a link out of the folder
            os.symlink(tmp / "secret.txt", model / "creds.txt")
        return build_cmd(make_app(tmp / "app"), model, "modelship-test/hostile:1", base, "--no-progress")

    return setup


def _tool_table(text: str) -> Callable[[Path, str], list[str]]:
    """A build of an app whose pyproject.toml has ``text`` in [tool.modelship]."""

    def setup(tmp: Path, base: str) -> list[str]:
        app = make_app(tmp / "app", extra={"pyproject.toml": f"[tool.modelship]\n{text}\n"})
        return _build(tmp, base, app=app)

    return setup


def _pytest(tmp: Path, image: str, cases: str | None, *extra: str) -> list[str]:
    (tmp / "pytest.ini").write_text("[pytest]\n")
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp)]
    args += ["-c", str(tmp / "pytest.ini"), "--modelship-image", image, "--modelship-port", "8000", *extra]
    if cases is not None:
        (tmp / "cases.yaml").write_text(cases)
        args += ["--modelship-cases", str(tmp / "cases.yaml")]
    return args


def _cases(text: str) -> Callable[[Path, str], list[str]]:
    return lambda tmp, base: _pytest(tmp, base, text)


CASES = [
    Case("dockerfile-that-fails", "build", _failing_dockerfile, 1, "boom: libfoo.so missing"),
    Case(
        "requirement-without-a-wheel",
        "build",
        _requirement_without_wheel,
        1,
        # build has no --find-links option: the way to add a wheel is a line in the requirements file
        "build a wheel yourself and name its folder in the requirements file (a line '--find-links ./wheels')",
    ),
    Case(
        "app-folder-missing",
        "build",
        lambda tmp, base: _build(tmp, base, app=tmp / "nope"),
        2,
        "nope",
    ),
    Case(
        "base-image-missing",
        "build",
        # a registry on loopback that does not answer: the pull is tried and fails without leaving the machine
        lambda tmp, base: _build(tmp, "127.0.0.1:1/modelship-test/no-such-base:0"),
        1,
        "is not local and pulling it failed",
    ),
    Case(
        "model-manifest-path-escapes",
        "build",
        _model_folder("escape"),
        2,
        "file path '../secret.txt' is not a plain relative path",
    ),
    Case("model-folder-fifo", "build", _model_folder("fifo"), 2, "pipe is a FIFO; a model folder holds regular files"),
    Case("model-folder-symlink-loop", "build", _model_folder("loop"), 2, "loop is a symlink loop"),
    Case("model-folder-link-outside", "build", _model_folder("outside"), 2, "outside the model folder"),
    Case(
        "tool-modelship-unknown-key",
        "build",
        _tool_table('entrypont = "python app.py"'),
        2,
        "unknown key 'entrypont' in [tool.modelship]; did you mean 'entrypoint'? known keys: base_image,",
    ),
    Case(
        "tool-modelship-port-a-string", "build", _tool_table('port = "8000"'), 2, "port must be an integer, got '8000'"
    ),
    Case(
        "cases-status-not-a-number",
        "plugin",
        _cases("cases:\n  - {name: a, path: /predict, expect: {status: ok}}\n"),
        2,
        "'expect.status' must be an HTTP status code",
    ),
    Case(
        "cases-path-not-a-string",
        "plugin",
        _cases("cases:\n  - {name: a, path: 5}\n"),
        2,
        "'path' must be a string starting with '/'",
    ),
    Case(
        "cases-negative-tolerance",
        "plugin",
        _cases("cases:\n  - {name: a, path: /p, expect: {approx: -1, json: [1]}}\n"),
        2,
        "'expect.approx' must be a tolerance",
    ),
    Case("cases-not-a-list", "plugin", _cases("cases: 5\n"), 2, "cases.yaml"),
    Case("cases-not-yaml", "plugin", _cases("cases: [\n"), 2, "cases.yaml"),
    Case(
        "image-missing",
        "plugin",
        lambda tmp, base: _pytest(tmp, "modelship-test/no-such-image:0", None),
        4,
        "not found locally: build it first, or pass --modelship-pull",
    ),
]


def _error_line(case: Case, out: str, err: str) -> str | None:
    """The one line a user reads: stderr for the CLI; pytest's collection error or usage error for the plugin."""
    if case.group == "build":  # the build log may come first (it is progress); the error is the last line
        lines = err.strip().splitlines()
        errors = [ln for ln in lines if ln.startswith("modelship: error: ")]
        one = len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err
        return errors[0].removeprefix("modelship: error: ") if one else None
    text = out + err
    if case.rc == 4:  # a usage error: pytest prints "ERROR: <line>" and nothing else
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        return lines[0].removeprefix("ERROR: ") if len(lines) == 1 and lines[0].startswith("ERROR: ") else None
    # a collection error: the cases file's one line right under pytest's "ERROR collecting" header
    lines = text.splitlines()
    heads = [i for i, ln in enumerate(lines) if "ERROR collecting" in ln]
    return lines[heads[0] + 1] if len(heads) == 1 and "Traceback" not in text else None


def _report(
    case_id: str,
    group: str,
    needle: str,
    expected_rc: int,
    proc: subprocess.CompletedProcess[str],
    line: str | None,
    problems: list[str],
) -> None:
    """Record the case for the reliability report, then fail on its problems with the process's output."""
    record(
        "hostile",
        case_id,
        group=group,
        expected_rc=expected_rc,
        rc=proc.returncode,
        needle=needle,
        error=line or "",
        outcome="pass" if not problems else "violation",
        secrets=0,
        injected=1,
        bytes_lost=0,
    )
    assert not problems, f"{problems}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile_build_and_plugin_input(case, tmp_path, docker_client, base_image):
    base, label = labelled_base(docker_client, base_image)
    try:
        argv = case.setup(tmp_path, base)
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        line = _error_line(case, proc.stdout, proc.stderr)
        state = engine_state(docker_client, label)
    finally:
        remove_labelled(docker_client, label)
    problems = []
    if proc.returncode != case.rc:
        problems.append(f"exit {proc.returncode}, expected {case.rc}")
    if line is None:
        problems.append("not one error line")
    elif case.needle not in line:
        problems.append(f"{case.needle!r} not in {line!r}")
    if state.tags - {base} or state.dangling or state.containers:
        problems.append(f"left behind: {state.tags - {base}} {state.dangling} {state.containers}")
    _report(case.id, case.group, case.needle, case.rc, proc, line, problems)


@dataclass(frozen=True)
class Assumption:
    id: str
    setup: Callable[[Path, str, str], list[str]]  # (work dir, base image, tag) -> command line
    needle: str  # in the one warning line


def _plain_folder(tmp: Path, base: str, tag: str) -> list[str]:
    model = make_model(tmp / "model", {"m.bin": b"weights", "vocab.txt": b"a\nb\n"})  # no modelship.json
    return build_cmd(make_app(tmp / "app"), model, tag, base, "--no-progress")


def _no_requirements(tmp: Path, base: str, tag: str) -> list[str]:
    model = make_model(tmp / "model", {"m.bin": b"weights"}, uri="az://acct/models/m", version="1")
    return build_cmd(make_app(tmp / "app"), model, tag, base, "--no-progress")  # --entrypoint, no requirements


ASSUMPTIONS = [
    Assumption(
        "model-folder-not-from-fetch",
        _plain_folder,
        "(not written by modelship fetch): hashing 2 file(s) as an unversioned model",
    ),
    Assumption("entrypoint-without-requirements", _no_requirements, "the image has no dependencies installed"),
]


@pytest.mark.parametrize("case", ASSUMPTIONS, ids=lambda c: c.id)
def test_build_says_what_it_assumed(case, tmp_path, docker_client, base_image):
    """Builds that succeed on an assumption say it in one line; the result line never shows a '?'."""
    base, label = labelled_base(docker_client, base_image)
    tag = f"modelship-test/hostile-assumed:{label.rsplit('=', 1)[1]}"
    try:
        proc = subprocess.run(
            case.setup(tmp_path, base, tag), cwd=tmp_path, capture_output=True, text=True, timeout=240
        )
    finally:
        remove_labelled(docker_client, label)
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("modelship: ") and case.needle in ln]
    line = warnings[0].removeprefix("modelship: ") if len(warnings) == 1 else None
    problems = []
    if proc.returncode != 0:
        problems.append(f"exit {proc.returncode}, expected 0")
    if line is None:
        problems.append(f"not one line with {case.needle!r}")
    built = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if not built.startswith(f"built {tag} ") or "?" in built:
        problems.append(f"result line {built!r}")
    _report(case.id, "build", case.needle, 0, proc, line, problems)
