"""Running pytest with the modelship plugin as a user does, for the plugin's own tests (pytester)."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest


def run_pytest(pytester: pytest.Pytester, *args: str, timeout: float = 180) -> pytest.RunResult:
    """pytest in a subprocess of its own, so the plugin's imports, signal handlers and exit status are real;
    without the cache provider, which would write into the test folder."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)


def popen_pytest(pytester: pytest.Pytester, *args: str) -> subprocess.Popen:
    """pytest started in the background in the test folder (output and errors in ``stdout``), for signals."""
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )


def junit_cases(path: Path) -> dict[str, ET.Element]:
    """The testcases of a JUnit XML file by name."""
    root = ET.parse(path).getroot()  # noqa: S314 - the file pytest just wrote
    return {t.get("name"): t for t in root.iter("testcase")}


def junit_outcome(case: ET.Element) -> str:
    """error, failure, skipped or passed: what a CI system shows for a testcase."""
    for kind in ("error", "failure", "skipped"):
        if case.find(kind) is not None:
            return kind
    return "passed"
