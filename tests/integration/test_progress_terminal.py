"""Progress as a user sees it: under a real pseudo-terminal, against Azurite and the Docker engine.

A line wider than the terminal wraps (a 45-column terminal turned the old fetch line into a stack), a bar
left without its newline runs into the engine's log, and a bar redrawn after the log is a stale "100%".
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import uuid

import docker.errors
import pytest

from modelship.image import build, push
from support.builds import build_cmd, make_app
from support.cli import MODELSHIP
from support.models import make_model
from support.terminal import ETA, run_in_pty, screen_lines

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


@pytest.mark.docker
def test_build_bars_end_before_the_engine_log_and_never_follow_it(tmp_path, base_image, image_tags):
    app = make_app(tmp_path / "app")
    model = make_model(tmp_path / "model", {"w.bin": os.urandom(3 * 1024 * 1024)})  # a new model stage
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
    model = make_model(tmp_path / "model", {"w.bin": b"weights"})
    tag = f"{registry}/modelship-test/quiet-{uuid.uuid4().hex[:10]}:1"
    try:
        build(app, model, tag, base_image=base_image, entrypoint="python app.py", docker_client=docker_client)
        assert push(tag, docker_client=docker_client).image_digest.startswith("sha256:")
        quiet = capfd.readouterr()
        assert (quiet.out, quiet.err) == ("", "")  # no engine log, no bar, no "built"/"pushed" lines
        build(app, model, tag, base_image=base_image, entrypoint="python app.py", quiet=False)
        asked = capfd.readouterr().err
        # the engine's log when asked; the result itself is the caller's to say (the CLI says it once, on stdout)
        assert "Step " in asked and "Successfully built" in asked and "modelship: built" not in asked
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, force=True)
