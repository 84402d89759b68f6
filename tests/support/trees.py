"""File trees: their sha256s, a snapshot of what a folder holds, and the debris a modelship command may leave."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# How modelship names what it writes before it is in place (modelship._fs.temp_name, cache.py): a staging or
# old folder ``.DEST.modelship-<pid>-<token>``, a download ``*.part``.
TEMP_MARK = ".modelship-"
PART_SUFFIX = ".part"


def file_sha256(path: Path) -> str:
    """sha256 of one file, read in pieces (models are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            h.update(data)
    return h.hexdigest()


def tree_sha(root: Path, only: set[str] | None = None) -> dict[str, str]:
    """path → sha256 of every file under ``root`` (or of those in ``only``), except its modelship.json."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != "modelship.json" and (only is None or rel in only):
            out[rel] = file_sha256(p)
    return out


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    """What a folder holds (path → size, inode): to prove a failed command left it untouched."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_ino) for p in sorted(path.rglob("*"))}


def leftovers(parent: Path) -> list[str]:
    """Temp files or staging folders next to a destination, or anywhere below it (paths relative to ``parent``)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(parent):
        for name in dirnames + filenames:
            if TEMP_MARK in name or name.endswith(PART_SUFFIX):
                found.append(os.path.relpath(os.path.join(dirpath, name), parent))
    return sorted(found)
