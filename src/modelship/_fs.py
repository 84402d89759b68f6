"""File-system helpers: temp names that carry their owner's pid, owner liveness, atomic writes and swaps, OSError →
one line."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

from .errors import ModelshipError


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_pid(name: str) -> int | None:
    """The pid embedded in a temp name ``<anything>-<pid>-<token>``, if any."""
    parts = name.rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return int(parts[1])
    return None


def temp_name(stem: str) -> str:
    # 64 random bits: with 32, two of the 10,000 temp files of one large fetch share a name about once in 100 runs.
    return f"{stem}-{os.getpid()}-{uuid.uuid4().hex[:16]}"


def temp_file(folder: Path, stem: str, suffix: str = "") -> tuple[int, Path]:
    """A new empty file, created exclusively (parallel workers never share one) and named like ``temp_name``,
    so ``owner_pid`` finds the process that made it; returns its open descriptor and path."""
    fd, path = tempfile.mkstemp(dir=folder, prefix=f"{stem}-{os.getpid()}-", suffix=suffix)
    return fd, Path(path)


def write_atomic(path: str | Path, data: str | bytes, *, durable: bool = True) -> None:
    """Write a file whole or not at all (its folder made first): a temp file beside it, created exclusively,
    then one rename. On any failure (a full disk, an interrupt) the temp file goes and a previous file stays as
    it was. ``durable``: fsync the file before the rename and the folder after it, so that a crash or power loss
    leaves the old file or the new one, never an empty one (locks, manifests); memos of a cache need not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(f".{path.name}.modelship"))
    raw = data.encode() if isinstance(data, str) else data
    try:
        # 0o666 and the umask, like any file a tool writes (mkstemp's 0600 would hide a lock from the team)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(path.parent)


def write_files_atomic(folder: Path, files: Mapping[str, str | bytes]) -> list[Path]:
    """Write several files into ``folder`` all or nothing: each is written (and fsynced) in a temp folder beside
    ``folder`` first, so a full disk fails before anything moves; then they are renamed in, and should a rename
    fail, the files already moved are put back as they were. A name that is a folder in ``folder`` is refused
    (IsADirectoryError) before anything is written. Returns the paths, in the order given."""
    for name in files:
        if (folder / name).is_dir() and not (folder / name).is_symlink():
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(folder / name))
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = folder.parent / temp_name(f".{folder.name}.modelship")
    stage.mkdir()
    try:
        for name, data in files.items():
            write_atomic(stage / name, data)
        if not folder.exists():
            os.rename(stage, folder)  # a new folder arrives whole
            fsync_folder(folder.parent)
            return [folder / name for name in files]
        _move_in(stage, folder, list(files))
        fsync_folder(folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [folder / name for name in files]


def _move_in(stage: Path, folder: Path, names: list[str]) -> None:
    """Rename ``stage/<name>`` over ``folder/<name>`` for each name; on failure undo the renames already done."""
    done: list[tuple[Path, Path | None]] = []  # (target, its previous version kept in stage, or None: was new)
    try:
        for i, name in enumerate(names):
            target = folder / name
            backup: Path | None = stage / f".old-{i}"
            try:
                os.link(target, backup, follow_symlinks=False)  # the previous file stays reachable for an undo
            except FileNotFoundError:
                backup = None
            os.replace(stage / name, target)
            done.append((target, backup))
    except BaseException:
        for target, backup in reversed(done):
            if backup is None:
                target.unlink(missing_ok=True)
            else:
                os.replace(backup, target)
        raise


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the file system lets a folder be opened and synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is done
    finally:
        os.close(fd)


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False when unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_into_place(stage: Path, dest: Path) -> None:
    """Replace the folder ``dest`` by ``stage`` (atomically where the kernel can swap two paths)."""
    if not dest.exists():
        os.rename(stage, dest)
        return
    if _renameat2_exchange(stage, dest):
        shutil.rmtree(stage)  # now the old DEST
        return
    old = dest.with_name(temp_name(f".{dest.name}.modelship-old"))
    os.rename(dest, old)
    try:
        os.rename(stage, dest)
    except BaseException:
        os.rename(old, dest)  # put the old DEST back (also on SIGINT/SIGTERM between the two renames)
        raise
    shutil.rmtree(old)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
CACHE_ADVICE = "free space or set MODELSHIP_CACHE_DIR"


def no_space(e: OSError, where: str, advice: str) -> ModelshipError | None:
    """The one line for a full disk (or quota), ``no space left <where>; <advice>``; None for any other error.
    ``where`` says what was being written where (``on the device of PATH``, ``for w.bin (N bytes) in PATH``)."""
    if e.errno not in NO_SPACE:
        return None
    return ModelshipError(f"no space left {where}; {advice}")


def os_error(e: OSError, where: Path) -> ModelshipError:
    """One line for a local file-system failure (disk full, read-only, permissions), naming the path."""
    path = e.filename or where
    full = no_space(e, f"on the device of {path}", "free space, or use another DEST or cache folder")
    if full is not None:
        return full
    if e.errno == errno.EROFS:
        return ModelshipError(f"{path} is on a read-only file system; choose a writable DEST (or MODELSHIP_CACHE_DIR)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return ModelshipError(f"permission denied on {path}; check its owner and mode")
    return ModelshipError(f"{path}: {e.strerror or e.__class__.__name__}")
