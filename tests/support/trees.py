"""Helpers for model-store tests: make model folders, publish them by hand like other tools would."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def make_model(root: Path, files: dict[str, bytes | int], seed: int = 0) -> Path:
    """Create a model folder; an int value means that many random bytes (seeded, reproducible)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = __import__("random").Random(seed)
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(content) if isinstance(content, int) else content)
    return root


def tree_sha(root: Path) -> dict[str, str]:
    """path → sha256 of every file under root except modelship.json."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "modelship.json":
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    """What a folder holds (path → size, inode): to prove a failed fetch left it untouched."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_ino) for p in sorted(path.rglob("*"))}


def leftovers(parent: Path) -> list[str]:
    """Temp files or staging folders a fetch may have left next to its destination."""
    return sorted(n for n in os.listdir(parent) if ".modelship" in n or n.endswith(".part"))
