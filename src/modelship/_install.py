"""The install into DEST: staging next to it, the up-to-date check, the swap into place, stale-stage cleanup.

DEST is only ever replaced whole: the model is assembled in a staging folder beside it (hard links into the
cache) and swapped in at once, so a reader sees the old version or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from ._fs import NO_SPACE, os_error, owner_pid, pid_alive, swap_into_place, temp_name
from .cache import Cache, stamped
from .errors import ModelshipError, UsageError
from .manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest, Resolution


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
    """Refuse a DEST that modelship may not replace (see ``check_replaceable``); sweep stale stages of killed runs."""
    check_replaceable(dest)
    for stale in dest.parent.glob(f".{dest.name}.modelship-*"):  # staging dirs of killed runs
        pid = owner_pid(stale.name)
        if pid is not None and not pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)


def check_replaceable(dest: Path) -> None:
    """DEST is replaced whole, so it must be new, empty, or hold exactly what an earlier fetch wrote: a
    ``modelship.json`` that is a valid modelship manifest and nothing it does not list. Anything else is the
    user's and is never deleted: refuse in one line naming it."""
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a folder; choose another destination")
    if not dest.is_dir() or not any(dest.iterdir()):
        return
    manifest_path = dest / MANIFEST_NAME
    if not manifest_path.exists() and not manifest_path.is_symlink():
        raise UsageError(
            f"{dest} is not empty and holds no {MANIFEST_NAME}; modelship replaces only folders it "
            "fetched: choose a new or empty folder"
        )
    try:
        if manifest_path.is_symlink() or not manifest_path.is_file():
            raise UsageError("not a file")
        manifest = Manifest.load(manifest_path)
    except ModelshipError:
        raise UsageError(
            f"{manifest_path} is not a manifest written by modelship, so {dest} is not a folder modelship fetched "
            "and it replaces nothing else: choose a new or empty folder"
        ) from None
    extra = _not_fetched(dest, manifest)
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise UsageError(
            f"{dest} holds what its {MANIFEST_NAME} does not list ({shown}); fetch replaces the whole folder "
            "and never deletes what it did not write: move them out, or choose another destination"
        )


def _not_fetched(folder: Path, manifest: Manifest) -> list[str]:
    """What ``folder`` holds that fetch did not write: beyond ``manifest``'s files (and the manifest), folders and
    links included (unlike ``modeldir.unlisted``, which names the files a build leaves out); ``/``-separated,
    sorted, a folder nobody listed named once (``eval/``)."""
    files = {f.path for f in manifest.files} | {MANIFEST_NAME, SIGNATURE_NAME}  # model.sig: fetch --verify-key's
    dirs = {str(p) for f in manifest.files for p in Path(f.path).parents if str(p) != "."}
    extra: list[str] = []

    def walk(d: Path, rel: str) -> None:
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            name = f"{rel}{e.name}"
            if e.is_dir(follow_symlinks=False):
                if name in dirs:
                    walk(Path(e.path), name + "/")
                else:
                    extra.append(name + "/")
            elif name not in files:
                extra.append(name)

    walk(folder, "")
    return extra


@contextlib.contextmanager
def staged(dest: Path) -> Iterator[Path]:
    """A staging folder next to DEST, removed afterwards; a file-system failure inside becomes one line."""
    stage = _make_stage(dest)
    try:
        yield stage
    except OSError as e:
        if e.errno in (*NO_SPACE, errno.EROFS):
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
    check_replaceable(dest)  # again: the user may have added a file to DEST during the download
    swap_into_place(stage, dest)
    return manifest
