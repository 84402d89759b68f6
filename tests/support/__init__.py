"""What the tests and the benchmarks share: models, servers, ports, the testbed's endpoints, file trees, test
images, the fault tools and the reliability record.

Imported as ``support``: pytest's ``pythonpath`` setting (pyproject.toml) and ``benchmarks/_path.py`` put tests/
on ``sys.path``, so the imports do not depend on pytest's import mode. Nothing here is collected as a test.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
