"""What the fault, hostile-input and hardening tests did, for docs/reliability.md: one results channel.

Every record is one JSON line appended to the file named by ``MODELSHIP_RELIABILITY_LOG`` (nothing is written
when it is unset, e.g. in ``make test``; the line is built all the same, so a record that cannot be written
fails there too). ``scripts/reliability.py`` renders the document from that file alone. Two kinds of line:

- a run or case: ``{"suite": ..., "cell": ..., "outcome": ..., ...}`` (:func:`record`, :func:`record_run`);
- a table's rows, as a hardening test measured them: ``{"table": ..., "rows": [...]}`` (:func:`record_table`).
"""

from __future__ import annotations

import json
import os
import random
import threading
import zlib
from typing import Any

_lock = threading.Lock()
DEFAULT_RUNS = 1  # make test: one seed per cell; make reliability runs 30 (RUNS=N)
LOG_VAR = "MODELSHIP_RELIABILITY_LOG"


def runs() -> int:
    """How many seeded runs each fault cell gets: MODELSHIP_FAULT_RUNS, small by default for CI."""
    return max(1, int(os.environ.get("MODELSHIP_FAULT_RUNS", DEFAULT_RUNS)))


def seeds() -> list[int]:
    return list(range(runs()))


def rng_for(*parts: object) -> random.Random:
    """A generator seeded from the test id parts: the same id replays the same faults."""
    return random.Random(zlib.crc32("/".join(map(str, parts)).encode()))


def _append(entry: dict[str, Any]) -> None:
    line = (json.dumps(entry) + "\n").encode()  # key order kept: a table's columns come in it
    path = os.environ.get(LOG_VAR)
    if not path:
        return
    # one write() on an O_APPEND descriptor: lines of parallel workers (xdist) never interleave
    with _lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def record(suite: str, cell: str, **fields: Any) -> None:
    """One run or case of ``suite`` in table cell ``cell``."""
    _append({"suite": suite, "cell": cell, **fields})


def record_run(suite: str, cell: str, outcome: str, problems: list[str], **fields: Any) -> None:
    """One seeded run: whatever it looked like, a run with problems is a violation and counts as bytes lost."""
    record(suite, cell, outcome="violation" if problems else outcome, bytes_lost=-1 if problems else 0, **fields)


def recovery(*, needed: bool, ok: bool) -> dict[str, bool]:
    """The fields that count a run's recovery: whether it had to recover (a transient fault fired; a re-run was
    due; the model fit on the disk) and whether it did. docs/reliability.md shows "recovered N of M" per cell."""
    return {"must_recover": needed, "recovered": needed and ok}


def record_table(table: str, rows: list[dict[str, Any]]) -> None:
    """Rows for the document's table ``table`` (``{"what": ..., <column>: <value>, ...}`` each)."""
    _append({"table": table, "rows": rows})
