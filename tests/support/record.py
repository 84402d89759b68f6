"""Counting what the fault and hostile-input tests did, for docs/reliability.md.

Each run appends one JSON line to the file named by ``MODELSHIP_RELIABILITY_LOG`` (nothing is written when
it is unset, e.g. in ``make test``); ``scripts/reliability.py`` renders the tables from it.
"""

from __future__ import annotations

import json
import os
import random
import threading
import zlib
from typing import Any

_lock = threading.Lock()
DEFAULT_RUNS = 5


def runs() -> int:
    """How many seeded runs each fault cell gets: MODELSHIP_FAULT_RUNS, small by default for CI."""
    return max(1, int(os.environ.get("MODELSHIP_FAULT_RUNS", DEFAULT_RUNS)))


def seeds() -> list[int]:
    return list(range(runs()))


def rng_for(*parts: object) -> random.Random:
    """A generator seeded from the test id parts: the same id replays the same faults."""
    return random.Random(zlib.crc32("/".join(map(str, parts)).encode()))


def record(suite: str, cell: str, **fields: Any) -> None:
    path = os.environ.get("MODELSHIP_RELIABILITY_LOG")
    if not path:
        return
    line = json.dumps({"suite": suite, "cell": cell, **fields}, sort_keys=True)
    with _lock, open(path, "a") as f:
        f.write(line + "\n")


def record_run(suite: str, cell: str, outcome: str, problems: list[str], **fields: Any) -> None:
    """One seeded run: whatever it looked like, a run with problems is a violation and counts as bytes lost."""
    record(suite, cell, outcome="violation" if problems else outcome, bytes_lost=-1 if problems else 0, **fields)
