"""When progress is shown, and what a bar draws. Under a real pseudo-terminal: integration/test_progress_terminal.py."""

from __future__ import annotations

import io
import re

import pytest

from modelship import progress
from support.terminal import ETA, screen_lines

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
