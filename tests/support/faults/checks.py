"""The promises every fault run is checked against: no wrong cache entry, one clean error line, no secret, and
recovery from every transient fault (a clean failure is not enough: it is what no retry at all would give).

(No debris and the right bytes: support.trees ``leftovers`` and ``tree_sha``.)
"""

from __future__ import annotations

from modelship.cache import Cache

from ..trees import file_sha256


def cache_problems(cache: Cache) -> list[str]:
    """Temp files left in the cache, and entries whose name is not the sha256 of their content."""
    problems = [f"temp file left: {p.name}" for p in cache.tmp.iterdir()]
    for p in (cache.root / "sha256").rglob("*"):
        if p.is_file() and (digest := file_sha256(p)) != p.name:
            problems.append(f"cache entry {p.name[:12]}… holds other bytes ({digest[:12]}…)")
    return problems


def error_line_problems(rc: int, err: str, expected_rc: int = 1) -> list[str]:
    """A failed command must say what happened in exactly one line, as a modelship error, no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("modelship: error:")]
    problems = []
    if rc != expected_rc:
        problems.append(f"exit code {rc}, expected {expected_rc}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} error lines")
    if "Traceback" in err:
        problems.append("traceback printed")
    if lines and "unexpected" in lines[0]:
        problems.append(f"unmapped exception: {lines[0]}")
    return problems


def secrets_in(text: str, secrets: list[str]) -> int:
    return sum(text.count(s) for s in secrets if s)


def recovery_problems(rc: int, injected: int, err: str) -> list[str]:
    """A run in which transient faults fired must end in success: modelship's retries are what the cell tests.

    Every run of a transient-fault cell asserts this, so a cell's recovery count must equal its number of runs
    in which a fault fired; with ``MODELSHIP_MAX_ATTEMPTS=1`` (no retry at all) those runs fail here.
    """
    if rc == 0 or not injected:
        return []
    last = err.strip().splitlines()[-1] if err.strip() else ""
    return [f"did not recover from {injected} transient fault(s): {last[-300:]}"]
