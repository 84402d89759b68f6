"""Local folders: file:///path and plain paths. Useful for tests, NFS mounts and air-gapped builds."""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import itertools
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._fs import no_space, pid_alive
from ..errors import AuthError, IntegrityError, ModelshipError, NotFoundError, UsageError
from ..uri import ModelURI
from .base import ProgressFn, RemoteFile

_CHUNK = 1024 * 1024


def _raise(e: OSError) -> None:
    raise e


def _fs_error(e: OSError, what: str) -> ModelshipError:
    """One short line for a local file-system failure (the path may be very long: it is cut)."""
    path = str(e.filename or "")
    shown = path if len(path) <= 200 else f"{path[:120]}…({len(path)} characters)"
    if e.errno in (errno.EACCES, errno.EPERM):
        return AuthError(f"{what}: permission denied on {shown}")
    if e.errno == errno.ENAMETOOLONG:
        return UsageError(f"{what}: path too long for the file system: {shown}")
    if full := no_space(e, f"on the device of {shown} ({what})", "free space on it"):
        return full
    return ModelshipError(f"{what}: {e.strerror or e.__class__.__name__}: {shown}")


# A write's temp file: ``.<name>.modelship-<pid>-<host>-<n>.part``, named after its file, process, machine and
# the process's n-th write, so that debris of a killed write is recognised, and its owner known, when the folder
# is written again.
_PART = re.compile(r"\..+\.modelship-(?P<pid>[0-9]+)-(?P<host>[0-9a-f]{8})-[0-9]+\.part")
_LEGACY_PART = re.compile(r"\..+\.[0-9a-f]{12}\.part")  # earlier modelship's random names: owner unknown
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
# A temp file nobody wrote to for this long is debris whoever made it (a live write touches it every second;
# a shared folder's other machines have pids this one cannot check).
STALE_AFTER = 3600.0


_WRITES = itertools.count()
# The temp files this process is writing now (all its stores and threads): its own pid on a temp file that is
# not among them marks debris of a dead process that had the same pid.
_IN_FLIGHT: set[str] = set()
_IN_FLIGHT_LOCK = threading.Lock()


def part_name(name: str) -> str:
    return f".{name}.modelship-{os.getpid()}-{_HOST}-{next(_WRITES)}.part"


def stale_part(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is the temp file of a write that died: ours by name, and its process gone (or, made
    elsewhere, untouched for STALE_AFTER seconds)."""
    m = _PART.fullmatch(entry.name)
    if m is None and not _LEGACY_PART.fullmatch(entry.name):
        return False
    if m is not None and m["host"] == _HOST:
        pid = int(m["pid"])
        if pid == os.getpid():
            with _IN_FLIGHT_LOCK:
                return entry.path not in _IN_FLIGHT
        return not pid_alive(pid)
    return time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER


def _replace_if(tmp: Path, dest: Path, etag: str) -> bool:
    """Rename ``tmp`` over ``dest`` if ``dest`` still has ``etag``; False if it changed or another writer holds
    the lock (``dest`` is never absent meanwhile: a reader always finds the old file or the new one)."""
    lock = dest.with_name(f".{dest.name}.modelship-lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
            break
        except FileExistsError:
            if not _stale_lock(lock):
                return False
            lock.unlink(missing_ok=True)  # its holder died; once
    else:
        return False
    try:
        os.write(fd, f"{os.getpid()} {_HOST}".encode())
        os.close(fd)
        try:
            if _etag(os.stat(dest)) != etag:
                return False
        except FileNotFoundError:
            return False
        os.replace(tmp, dest)
        return True
    finally:
        lock.unlink(missing_ok=True)


def _stale_lock(lock: Path) -> bool:
    try:
        owner = lock.read_text().split()
        age = time.time() - lock.stat().st_mtime
    except (OSError, UnicodeDecodeError):
        return False
    if len(owner) == 2 and owner[0].isdigit() and owner[1] == _HOST:
        return not pid_alive(int(owner[0]))
    return age > STALE_AFTER


def _etag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


class LocalSource:
    """A folder; a file's ETag is its mtime and size, so a rewrite mid-fetch is noticed."""

    def __init__(self, uri: ModelURI, credential: Any = None):
        self.uri = uri
        self.root = Path("/")  # uri.prefix is an absolute path; keys are relative to "/"
        self._temps: set[str] = set()  # temp files of writes under way
        self._temps_lock = threading.Lock()
        self._swept: set[str] = set()  # folders cleared of killed writes' temp files

    def _path(self, name: str) -> Path:
        return self.root / name

    def list(self, prefix: str) -> Iterator[RemoteFile]:
        base = self._path(prefix)
        try:
            if base.is_file():
                yield self._entry(base)
                return
            if not base.is_dir():
                return
            # onerror: an unreadable sub-folder must fail the listing, not silently drop files from the model
            for dirpath, dirnames, filenames in os.walk(base, onerror=_raise):
                dirnames.sort()
                for fn in sorted(filenames):
                    p = Path(dirpath, fn)
                    if p.is_file() and not p.is_symlink():
                        yield self._entry(p)
        except OSError as e:
            raise _fs_error(e, "listing the model folder") from None

    def _entry(self, p: Path) -> RemoteFile:
        st = p.stat()
        return RemoteFile(
            name=str(p.relative_to(self.root)),
            size=st.st_size,
            etag=_etag(st),
            last_modified=_dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc),
        )

    def read(self, name: str, offset: int, length: int, etag: str | None) -> Iterator[bytes]:
        path = self._path(name)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed in finally; this is a generator
        except FileNotFoundError:
            raise NotFoundError(f"{path}: no such file") from None
        except OSError as e:
            raise _fs_error(e, f"reading {name}") from None
        try:
            if etag and _etag(os.fstat(f.fileno())) != etag:
                raise IntegrityError(f"{path} changed while it was being read; re-run", kind=IntegrityError.CHANGED)
            f.seek(offset)
            left = length
            while left > 0:
                data = f.read(min(_CHUNK, left))
                if not data:
                    raise IntegrityError(f"{path} is shorter than listed (truncated while being read); re-run")
                left -= len(data)
                yield data
        finally:
            f.close()

    def write(self, name: str, path: Path, *, sha256: str, md5: bytes, progress: ProgressFn | None = None) -> None:
        dest = self._destination(name)
        try:
            # created with the source's mode, so the umask applies as it does for cp (mkstemp would give 0600)
            mode = os.stat(path).st_mode & 0o777
        except OSError as e:
            raise _fs_error(e, f"uploading {name}") from None
        with self._writing(dest, name, mode) as (fd, tmp):
            with os.fdopen(fd, "wb", closefd=False) as out, open(path, "rb") as src:
                while data := src.read(_CHUNK):
                    out.write(data)
                    if progress:
                        progress(len(data))
            os.replace(tmp, dest)

    @contextlib.contextmanager
    def _writing(self, dest: Path, name: str, mode: int = 0o666) -> Iterator[tuple[int, Path]]:
        """A temp file for ``dest`` (``part_name``), open for writing; removed on any failure, which becomes one
        line (an interrupt goes through as it is)."""
        tmp = dest.with_name(part_name(dest.name))
        with self._temps_lock:
            self._temps.add(str(tmp))
        with _IN_FLIGHT_LOCK:
            _IN_FLIGHT.add(str(tmp))
        fd = -1
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
            yield fd, tmp
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise _fs_error(e, f"uploading {name}") from None
            raise
        finally:
            if fd >= 0:
                os.close(fd)
            with self._temps_lock:
                self._temps.discard(str(tmp))
            with _IN_FLIGHT_LOCK:
                _IN_FLIGHT.discard(str(tmp))

    def _sweep(self, folder: Path) -> None:
        """Remove the temp files that killed writes left in ``folder`` (once per folder and publish): a publish
        killed with SIGKILL cannot clean up, and running it again (the resume) does it here."""
        key = str(folder)
        with self._temps_lock:
            if key in self._swept:
                return
            self._swept.add(key)
        for entry in os.scandir(folder):
            if entry.is_file(follow_symlinks=False) and stale_part(entry):
                Path(entry.path).unlink(missing_ok=True)

    def abandon(self) -> None:
        """Remove the temp files of writes still under way: an interrupted publish leaves its upload threads
        behind when they do not stop in time (a write held up by a busy disk), and the process exits under them."""
        with self._temps_lock:
            temps, self._temps = self._temps, set()
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)

    def _destination(self, name: str) -> Path:
        """The path of ``name``, its folder made and swept of killed writes' temp files."""
        dest = self._path(name)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._sweep(dest.parent)
        except OSError as e:
            raise _fs_error(e, f"uploading {name}") from None
        return dest

    @contextlib.contextmanager
    def _small_file(self, name: str, data: bytes) -> Iterator[tuple[Path, Path]]:
        """``data`` in a temp file beside ``name``'s path, durable (fsync): markers and manifests say what the
        version is, so they are on disk before they count. Yields (path, temp file) to put it in place."""
        dest = self._destination(name)
        with self._writing(dest, name) as (fd, tmp):
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            yield dest, tmp

    def write_bytes(self, name: str, data: bytes) -> None:
        with self._small_file(name, data) as (dest, tmp):
            os.replace(tmp, dest)

    def create_bytes(self, name: str, data: bytes, *, replacing: str | None = None) -> bool:
        """Write a small file only if it does not exist, or with ``replacing``, only if it is still the file of
        that ETag; False when another writer got there first. The file appears whole: a complete temp file is
        linked in (which fails if the name exists), or renamed over the old one under a lock file that only one
        writer can create."""
        with self._small_file(name, data) as (dest, tmp):
            if replacing is not None:
                return _replace_if(tmp, dest, replacing)
            try:
                os.link(tmp, dest)
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
        return True

    def delete(self, names: list[str]) -> None:
        try:
            for name in names:
                self._path(name).unlink(missing_ok=True)
                if self._path(name).parent.is_dir():
                    self._sweep(self._path(name).parent)  # --force: a killed write's debris goes with the files
            for name in names:  # prune folders left empty
                parent = self._path(name).parent
                while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent
        except OSError as e:
            raise _fs_error(e, "deleting old files") from None

    def close(self) -> None:
        pass
