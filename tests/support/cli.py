"""`modelship` run as a user runs it: the installed console script, as a process of its own.

One helper for every test that needs the real process (exit codes, stderr lines, signals, terminals); tests
that only need the result call ``modelship.cli.main`` in-process (:func:`run_in_process`) or the Python API.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

MODELSHIP = str(Path(sys.executable).with_name("modelship"))  # the venv's console script, as `pip install` makes it


def command(*args: str) -> list[str]:
    """The argv of ``modelship ARGS...`` (for Popen, pexpect or a command line shown in a message)."""
    return [MODELSHIP, *args]


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 300,
    replace_env: bool = False,
    **kwargs,
) -> subprocess.CompletedProcess[str]:
    """``modelship ARGS...`` to its end; stdout and stderr captured as text, never raising on a non-zero exit.

    ``env`` is added to this process's environment (or, with ``replace_env``, is the whole environment).
    """
    full = dict(env or {}) if replace_env else {**os.environ, **(env or {})}
    return subprocess.run(
        command(*args), env=full, input=stdin, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def run_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """``modelship.cli.main(ARGS)`` in this process: (exit code, stdout, stderr), earlier output discarded."""
    from modelship import cli

    capsys.readouterr()
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err
