"""The install into DEST: staging next to it, the up-to-date check, the swap into place, stale-stage cleanup.

DEST is only ever replaced whole: the model is assembled in a staging folder beside it (hard links into the
cache) and swapped in at once, so a reader sees the old version or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from ._fs import os_error, owner_pid, pid_alive, swap_into_place, temp_name
from .cache import Cache, stamped
from .errors import ModelshipError, UsageError
from .manifest import MANIFEST_NAME, Manifest, Resolution


def up_to_date(dest: Path, res: Resolution) -> Manifest | None:
    """The manifest in ``dest`` when it already holds exactly the resolved files (all sha256s known)."""
    if any(f.sha256 is None for f in res.files):
        return None
    try:
        current = Manifest.load(dest / MANIFEST_NAME)
    except ModelshipError:
        return None
    want = Manifest.create(res.uri, res.version, res.files, stamp=False)
    if current.digest != want.digest or current.version != res.version:
        return None
    for f in res.files:
        try:
            st = (dest / f.path).stat()
        except FileNotFoundError:
            return None
        if st.st_size != f.size or not stamped(st):  # written to since it was fetched: fetch it again
            return None
    return current


def _make_stage(dest: Path) -> Path:
    """The staging folder next to DEST, made before any download so that an unwritable DEST fails at once."""
    stage = dest.parent / temp_name(f".{dest.name}.modelship")
    try:
        stage.mkdir()
    except OSError as e:
        raise ModelshipError(
            f"cannot create files next to {dest} ({e.strerror}); choose a writable destination"
        ) from None
    return stage


def check_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a folder; choose another destination")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MANIFEST_NAME).exists():
        raise UsageError(
            f"{dest} is not empty and holds no {MANIFEST_NAME}; modelship replaces only folders it "
            "fetched: choose a new or empty folder"
        )
    for stale in dest.parent.glob(f".{dest.name}.modelship-*"):  # staging dirs of killed runs
        pid = owner_pid(stale.name)
        if pid is not None and not pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def staged(dest: Path) -> Iterator[Path]:
    """A staging folder next to DEST, removed afterwards; a file-system failure inside becomes one line."""
    stage = _make_stage(dest)
    try:
        yield stage
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            e.filename = None  # a copy's error names its source in the cache; it is DEST's disk that is full
        raise os_error(e, dest) from None
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def install(stage: Path, dest: Path, res: Resolution, shas: dict[str, str], cache: Cache) -> Manifest:
    """Link the cached files of ``res`` into ``stage`` with their manifest, then swap ``stage`` into DEST."""
    # DEST's manifest names the files and their sha256s; chunk digests stay in the store's (they serve
    # fetching only, and DEST's manifest goes into image labels, which stay small).
    files = [replace(f, sha256=shas[f.path]).with_chunks(None, None) for f in res.files]
    manifest = Manifest.create(res.uri, res.version, files)
    for f in files:
        target = stage / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        cache.link(shas[f.path], target)
    manifest.write(stage / MANIFEST_NAME)
    swap_into_place(stage, dest)
    return manifest
