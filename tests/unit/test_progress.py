"""Progress as a user sees it: under a real pseudo-terminal, against Azurite and the Docker engine.

A line wider than the terminal wraps (a 45-column terminal turned the old fetch line into a stack), a bar
left without its newline runs into the engine's log, and a bar redrawn after the log is a stale "100%".
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import docker.errors
import pytest

from _build_helpers import build_cmd, make_app
from _build_helpers import make_model as make_fetched_model
from _store_helpers import make_model
from modelship import progress
from modelship.image import build, push

MODELSHIP = str(Path(sys.executable).with_name("modelship"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ETA = re.compile(r"ETA (\S+)")


def run_in_pty(
    cmd: list[str], *, columns: int, env: dict[str, str], stdout_too: bool = True, timeout: float = 300
) -> tuple[int, str]:
    """Run ``cmd`` with stderr (and stdout) on a pty ``columns`` wide, as a terminal would be; (rc, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    full_env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm", **env}
    out = slave if stdout_too else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=slave, env=full_env)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the pty
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def screen_lines(output: str) -> list[str]:
    """Every line as drawn: each redraw after a carriage return is a line of its own, escapes removed."""
    text = ANSI.sub("", output.replace("\r\n", "\n"))
    return [seg.rstrip(" ") for line in text.split("\n") for seg in line.split("\r")]


# ---- when progress is on --------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("env", "shown"),
    [
        ({}, True),
        ({"CI": "false"}, True),
        ({"CI": "0"}, True),
        ({"MODELSHIP_NO_PROGRESS": "0"}, True),
        ({"MODELSHIP_NO_PROGRESS": "no", "CI": ""}, True),
        ({"CI": "true"}, False),
        ({"CI": "1"}, False),
        ({"MODELSHIP_NO_PROGRESS": "1"}, False),
        ({"MODELSHIP_NO_PROGRESS": "true", "CI": "false"}, False),
    ],
)
def test_ci_and_no_progress_are_read_as_booleans(monkeypatch, env, shown):
    for var in ("CI", "MODELSHIP_NO_PROGRESS"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    progress.set_enabled(None)
    terminal = _Terminal()
    assert progress.enabled(terminal) is shown
    with progress.Progress(1000, "fetch 1.0.0", stream=terminal) as bar:
        bar.update(1000)
    assert ("fetch 1.0.0" in terminal.getvalue()) is shown


def test_a_total_that_grows_never_shows_over_100_percent_or_a_negative_eta():
    terminal = _Terminal()
    bar = progress.Progress(100, "push app:1", show=True, stream=terminal)
    bar.update(250)  # a push learns of more layers as it goes
    bar.update(-50)  # a retried upload starts over
    bar.close()
    lines = [line for line in screen_lines(terminal.getvalue()) if line]
    assert lines and all(int(m) <= 100 for line in lines for m in re.findall(r"(\d+)%", line)), lines
    assert not [m for line in lines for m in ETA.findall(line) if m.startswith("-")], lines


# ---- fetch under a 45-column terminal -------------------------------------------------------------------


@pytest.mark.azurite
def test_fetch_line_fits_a_45_column_terminal(tmp_path, azure_env, blob_container):
    uri = f"az://devstoreaccount1/{blob_container.container_name}/models/a-rather-long-model-name"
    src = make_model(tmp_path / "m", {f"part-{i}.bin": 4 * 1024 * 1024 for i in range(8)})
    subprocess.run([MODELSHIP, "publish", str(src), uri, "--version", "1.0.0"], check=True, capture_output=True)
    # CI=false and MODELSHIP_NO_PROGRESS=0 must mean progress ON (they used to turn it off)
    env = {"CI": "false", "MODELSHIP_NO_PROGRESS": "0", "AZURE_STORAGE_CONNECTION_STRING": azure_env}
    cmd = [MODELSHIP, "fetch", uri, str(tmp_path / "out"), "--workers", "2"]
    # stderr only: the progress; the result line on stdout is a path and a digest, wrapped like any output
    rc, out = run_in_pty(cmd, columns=45, env=env, stdout_too=False)
    assert rc == 0, out
    lines = screen_lines(out)
    bars = [line for line in lines if line.startswith("fetch 1.0.0")]
    assert bars, out  # the bar was drawn at all
    assert bars[-1].startswith("fetch 1.0.0: 100% 32.0MB"), bars
    too_wide = [line for line in lines if len(line) > 45]
    assert not too_wide, too_wide
    etas = [m for line in bars for m in ETA.findall(line)]
    assert etas and all(re.fullmatch(r"\?|\d\d:\d\d", m) for m in etas), etas  # never "-0.0s" or "908870868.9s"


# ---- build: its bars and the engine log -----------------------------------------------------------------


@pytest.fixture
def image_tags(docker_client):
    created: list[str] = []
    yield created
    for tag in created:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, force=True)


@pytest.mark.docker
def test_build_bars_end_before_the_engine_log_and_never_follow_it(tmp_path, base_image, image_tags):
    app = make_app(tmp_path / "app")
    model = make_fetched_model(tmp_path / "model", {"w.bin": os.urandom(3 * 1024 * 1024)})  # a new model stage
    tag = f"modelship-test/progress-{uuid.uuid4().hex[:10]}:1"
    image_tags.append(tag)
    env = {"CI": "false", "MODELSHIP_NO_PROGRESS": "0"}
    rc, out = run_in_pty(build_cmd(app, model, tag, base_image), columns=100, env=env)
    assert rc == 0, out
    lines = [line for line in screen_lines(out) if line.strip()]
    bars = [i for i, line in enumerate(lines) if line.startswith("build context")]
    assert len(bars) >= 2, out  # the model stage and the app stage each send a context
    steps = [i for i, line in enumerate(lines) if line.startswith("Step ")]
    assert steps, out
    # a bar line holds the bar only: no engine output runs into it ("ETA 0.0sStep 1/8")
    assert not [lines[i] for i in bars if "Step " in lines[i] or "--->" in lines[i]], out
    # each bar (its redraws: consecutive lines) ends at 100% right before its build's first step; none is
    # drawn again after the log (the stale "100%" after "Successfully built")
    ends = [i for i in bars if i + 1 not in bars]
    assert all(" 100%" in lines[i] for i in ends), [lines[i] for i in ends]
    assert [i + 1 for i in ends] == [i for i in steps if lines[i].startswith("Step 1/")], lines
    assert all(len(line) <= 100 for line in lines if line.startswith("build context")), out


@pytest.mark.docker
def test_build_and_push_from_python_are_quiet_unless_asked(tmp_path, docker_client, base_image, registry, capfd):
    app = make_app(tmp_path / "app")
    model = make_fetched_model(tmp_path / "model", {"w.bin": b"weights"})
    tag = f"{registry}/modelship-test/quiet-{uuid.uuid4().hex[:10]}:1"
    try:
        build(app, model, tag, base_image=base_image, entrypoint="python app.py", docker_client=docker_client)
        assert push(tag, docker_client=docker_client).startswith("sha256:")
        quiet = capfd.readouterr()
        assert (quiet.out, quiet.err) == ("", "")  # no engine log, no bar, no "built"/"pushed" lines
        build(app, model, tag, base_image=base_image, entrypoint="python app.py", quiet=False)
        asked = capfd.readouterr().err
        assert "Step " in asked and "modelship: built " in asked
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, force=True)
