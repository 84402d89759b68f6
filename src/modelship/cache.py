"""Content-addressed file cache: files are stored by sha256, so the same bytes are downloaded once.

``prune`` (``modelship cache prune``) removes the entries not used for a while, or the least recently used ones
beyond a size, while no fetch is using the cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import settings
from ._fs import owner_pid, pid_alive, temp_file
from .errors import ModelshipError, UsageError

# Every verified entry (and every copy of one) gets this mtime. A write through any hard link (DEST files are
# links to entries, and root ignores their 0444 mode) changes it, so a damaged entry is never served again.
STAMP_NS = 946_684_800 * 10**9  # 2000-01-01T00:00:00Z


def stamped(st: os.stat_result) -> bool:
    """True when a file still carries the mtime set when its content was verified."""
    return st.st_mtime_ns == STAMP_NS


def default_root() -> Path:
    """MODELSHIP_CACHE_DIR, else ``$XDG_CACHE_HOME/modelship`` (``~/.cache/modelship``): see modelship.settings."""
    return settings.current().cache_dir


class Cache:
    """``ROOT/sha256/ab/<hex>`` holds verified files (read-only); ``ROOT/etags`` maps store ETags to sha256."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_root()
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        (self.root / "sha256").mkdir(exist_ok=True)
        (self.root / "etags").mkdir(exist_ok=True)
        self._sweep()

    def _sweep(self) -> None:
        """Remove temp files left by killed processes (their pid is in the name and no longer alive)."""
        for p in self.tmp.iterdir():
            pid = owner_pid(p.name.removesuffix(".part"))
            if pid is not None and pid != os.getpid() and not pid_alive(pid):
                p.unlink(missing_ok=True)

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Held while a fetch reads or fills the cache: ``prune`` does not run meanwhile (a shared lock)."""
        with _locked(self.root, fcntl.LOCK_SH):
            yield

    def path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def get(self, sha256: str, size: int) -> Path | None:
        """The cached file with this content, or None (a wrong size or a written-to entry is damaged: dropped)."""
        p = self.path(sha256)
        try:
            st = p.stat()
        except FileNotFoundError:
            return None
        if st.st_size == size and stamped(st):
            return p
        p.unlink(missing_ok=True)  # links to it elsewhere keep their (damaged) bytes; the cache forgets them
        return None

    def new_temp(self) -> Path:
        """A new, empty temp file of this process, created exclusively (never shared with another download)."""
        fd, path = temp_file(self.tmp, "dl", ".part")
        os.close(fd)
        return path

    def put(self, tmp: Path, sha256: str) -> Path:
        """Move a verified temp file into place; callers guarantee ``sha256`` is its content's hash."""
        final = self.path(sha256)
        final.parent.mkdir(exist_ok=True)
        os.chmod(tmp, 0o444)  # cache entries are hard-linked into model folders: nobody should write them
        os.utime(tmp, ns=(STAMP_NS, STAMP_NS))
        os.replace(tmp, final)
        return final

    def _etag_key(self, location: str, etag: str, size: int) -> Path:
        key = hashlib.sha256(f"{location}\0{etag}\0{size}".encode()).hexdigest()
        return self.root / "etags" / key

    def sha_for_etag(self, location: str, etag: str | None, size: int) -> str | None:
        if not etag:
            return None
        try:
            sha = self._etag_key(location, etag, size).read_text().strip()
        except FileNotFoundError:
            return None
        return sha if len(sha) == 64 and self.get(sha, size) else None

    def remember_etag(self, location: str, etag: str | None, size: int, sha256: str) -> None:
        if not etag:
            return
        target = self._etag_key(location, etag, size)
        tmp: Path | None = None
        try:  # only a shortcut for later fetches: failing to write it (disk full) must not fail this one
            fd, tmp = temp_file(self.tmp, "etag")  # workers race here
            with os.fdopen(fd, "w") as f:
                f.write(sha256)
            os.replace(tmp, target)
        except OSError:
            pass
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    def link(self, sha256: str, dest: Path) -> None:
        """Hard-link (or, across file systems, copy) a cached file to ``dest``."""
        src = self.path(sha256)
        try:
            os.link(src, dest)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            tmp = dest.with_name(f".{dest.name}.part")
            try:
                shutil.copyfile(src, tmp)
                os.chmod(tmp, 0o444)
                os.utime(tmp, ns=(STAMP_NS, STAMP_NS))
                os.replace(tmp, dest)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()


# ---- pruning ------------------------------------------------------------------------------------------------

_HEX64 = re.compile(r"[0-9a-f]{64}")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@dataclass(frozen=True)
class PruneResult:
    """What ``prune`` removed (or, with ``dry_run``, would remove) and what the cache keeps."""

    root: Path
    removed: int
    freed: int  # bytes
    kept: int
    kept_bytes: int
    dry_run: bool = False


@contextlib.contextmanager
def _locked(root: Path, how: int) -> Iterator[None]:
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, how)
        yield
    finally:
        os.close(fd)  # releases the lock


def parse_size(text: str) -> int:
    """``10G``, ``500MB``, ``1.5 GiB``, ``0`` → bytes (binary units, as the progress bars print them)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if m is None:
        raise UsageError(f"{text!r} is not a size; give bytes or a number with K, M, G or T (e.g. 20G)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def prune(
    *,
    keep_days: float | None = None,
    max_size: int | None = None,
    cache_dir: str | Path | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Remove cache entries not used for ``keep_days`` days, then the least recently used ones until the rest
    fit in ``max_size`` bytes; ``dry_run``: only say what would go. Model folders keep their files (they are
    hard links or copies, not the entries themselves); a later fetch downloads a removed file again.

    "Used" is the latest of: put into the cache or linked into a model folder (the inode's change time) and
    read by anything (its access time, where the file system records it). Only verified entries in the cache's
    own layout (``sha256/ab/<sha256>``, read-only, stamped) are removed, with the ETag notes that point to them;
    temp files and anything else in the folder stay. A fetch that is using the cache makes prune stop at once
    with one line (fetches hold a shared lock on ``ROOT/lock``; prune takes it exclusively)."""
    if keep_days is None and max_size is None:
        raise UsageError("say what to prune: --keep-days DAYS, --max-size SIZE, or both")
    if keep_days is not None and (keep_days != keep_days or keep_days < 0):
        raise UsageError(f"--keep-days must be 0 or more, not {keep_days}")
    if max_size is not None and max_size < 0:
        raise UsageError(f"--max-size must be 0 or more, not {max_size}")
    root = Path(cache_dir) if cache_dir else default_root()
    if not (root / "sha256").is_dir():
        return PruneResult(root, 0, 0, 0, 0, dry_run)
    try:
        with _locked(root, fcntl.LOCK_EX | fcntl.LOCK_NB):
            return _prune(root, keep_days, max_size, dry_run)
    except BlockingIOError:
        raise ModelshipError(
            f"the cache {root} is in use by a modelship fetch right now; prune again once it is done"
        ) from None


def _entries(root: Path) -> list[tuple[int, int, Path]]:
    """(last used ns, size, path) of every verified entry, least recently used first."""
    found = []
    for sub in (root / "sha256").iterdir():
        if not (len(sub.name) == 2 and sub.is_dir() and not sub.is_symlink()):
            continue
        for p in sub.iterdir():
            if not (_HEX64.fullmatch(p.name) and p.name[:2] == sub.name):
                continue
            st = p.lstat()
            if not (stat.S_ISREG(st.st_mode) and stamped(st)):
                continue  # not an entry as modelship leaves it: not ours to remove
            found.append((max(st.st_ctime_ns, st.st_atime_ns), st.st_size, p))
    return sorted(found)


def _prune(root: Path, keep_days: float | None, max_size: int | None, dry_run: bool) -> PruneResult:
    entries = _entries(root)
    total = sum(size for _, size, _ in entries)
    cutoff = time.time_ns() - int(keep_days * 86_400 * 10**9) if keep_days is not None else None
    gone: list[Path] = []
    freed = 0
    for used, size, p in entries:  # least recently used first
        old = cutoff is not None and used < cutoff
        over = max_size is not None and total - freed > max_size
        if not (old or over):
            continue
        gone.append(p)
        freed += size
    if not dry_run:
        for p in gone:
            p.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                p.parent.rmdir()  # only when empty
        _forget_etags(root, {p.name for p in gone})
    return PruneResult(root, len(gone), freed, len(entries) - len(gone), total - freed, dry_run)


def _forget_etags(root: Path, removed: set[str]) -> None:
    """Remove the ETag notes that point to removed entries (they would only miss)."""
    if not removed:
        return
    with contextlib.suppress(FileNotFoundError):
        for note in (root / "etags").iterdir():
            if not _HEX64.fullmatch(note.name):
                continue
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if note.read_text().strip() in removed:
                    note.unlink()
