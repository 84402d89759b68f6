"""The promises every fault run is checked against: no debris, no wrong cache entry, one clean error line."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from modelship.cache import Cache


def cache_problems(cache: Cache) -> list[str]:
    """Temp files left in the cache, and entries whose name is not the sha256 of their content."""
    problems = [f"temp file left: {p.name}" for p in cache.tmp.iterdir()]
    for p in (cache.root / "sha256").rglob("*"):
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while data := f.read(1 << 20):
                    h.update(data)
            if h.hexdigest() != p.name:
                problems.append(f"cache entry {p.name[:12]}… holds other bytes ({h.hexdigest()[:12]}…)")
    return problems


def leftovers(parent: Path) -> list[str]:
    """Temp files or staging folders next to (or inside) a destination."""
    found = []
    for dirpath, dirnames, filenames in os.walk(parent):
        for n in dirnames + filenames:
            if ".modelship-" in n or n.endswith(".part"):
                found.append(os.path.relpath(os.path.join(dirpath, n), parent))
    return sorted(found)


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


def sha256_tree(root: Path, only: set[str] | None = None) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != "modelship.json" and (only is None or rel in only):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
