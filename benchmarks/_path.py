"""Puts tests/ on sys.path, so that a benchmark imports the tests' helpers the way the tests do
(``from support.testbed import ...``; pytest's ``pythonpath`` setting in pyproject.toml does it for the tests).

A benchmark imports it before anything from ``support``: ``import _path  # noqa: F401``.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
