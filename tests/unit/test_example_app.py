"""The example app's own unit tests (examples/flask_app/tests), run the way its README says: from its folder."""

from __future__ import annotations

import re
import subprocess
import sys

from support import ROOT

EXAMPLE = ROOT / "examples" / "flask_app"


def test_example_unit_tests_pass():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed, tail
    # a floor, so a broken collection (0 tests "passing") cannot pass this test
    assert int(passed.group(1)) >= 45, tail
    assert "failed" not in proc.stdout.splitlines()[-1]
