"""Content-addressed file cache: files are stored by sha256, so the same bytes are downloaded once."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from pathlib import Path

from . import settings
from ._fs import owner_pid, pid_alive, temp_file

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
