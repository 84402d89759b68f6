"""A folder on this machine as layer entries, the same on any machine: sorted, fixed modes, root-owned.

Modes do not come from the checkout or the umask: directories 0755, files 0755 when any execute bit is set
and 0644 otherwise, symbolic links 0777 (kept as links). Ownership is root's (uid = gid = 0), mtimes are the
layer's. Each file's sha256 is part of its entry, so a layer's digest is a function of the plan (and the
bytes are checked against it as they are uploaded).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from ..oci.layers import Entry

DIR_MODE, FILE_MODE, EXEC_MODE, LINK_MODE = 0o755, 0o644, 0o755, 0o777
_READ = 1024 * 1024


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(_READ):
            h.update(data)
    return h.hexdigest()


def entry_of(full: Path, name: str) -> Entry | None:
    """The entry of one path (``name`` inside the image, no leading '/'); None for sockets, fifos, devices."""
    st = full.lstat()
    if stat.S_ISLNK(st.st_mode):
        return Entry(name, LINK_MODE, link=os.readlink(full))
    if stat.S_ISDIR(st.st_mode):
        return Entry(name, DIR_MODE, directory=True)
    if stat.S_ISREG(st.st_mode):
        mode = EXEC_MODE if st.st_mode & 0o111 else FILE_MODE
        return Entry(name, mode, st.st_size, path=full, sha256=sha256_file(full))
    return None


def parents(name: str) -> list[Entry]:
    """Directory entries (0755, root's) for every parent of ``name``."""
    parts = name.split("/")[:-1]
    return [Entry("/".join(parts[: i + 1]), DIR_MODE, directory=True) for i in range(len(parts))]


def folder_entries(root: Path, prefix: str, rel_paths: Iterable[str] | None = None) -> list[Entry]:
    """Entries for ``root``'s files under ``prefix`` (all of them, or only ``rel_paths``), with their parents."""
    if rel_paths is None:
        rel_paths = sorted(
            os.path.relpath(os.path.join(d, n), root).replace(os.sep, "/")
            for d, dirs, files in os.walk(root)
            for n in dirs + files
        )
    out: dict[str, Entry] = {e.name: e for e in [*parents(prefix + "/x"), Entry(prefix, DIR_MODE, directory=True)]}
    for rel in rel_paths:
        name = f"{prefix}/{rel}"
        e = entry_of(root / rel, name)
        if e is not None:
            for p in parents(name):
                out.setdefault(p.name, p)
            out[name] = e
    return list(out.values())


def ordered(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    """Parents before children, siblings by name: the one order of every layer."""
    unique = {e.name: e for e in entries}
    return tuple(sorted(unique.values(), key=lambda e: e.name.split("/")))


__all__ = ["entry_of", "folder_entries", "ordered", "parents", "sha256_file"]
