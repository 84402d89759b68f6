"""One file on its way into the cache: its ranges, the pieces connections read, and the state they share.

A ``FileJob`` owns the file's cache temp file (space reserved up front, its descriptor opened only while a
worker uses it, so a model of many small files never runs out of descriptors), the attempt it is on (a
whole-file retry starts a new one; late ranges of the old are ignored) and its contiguous verified prefix,
which the hashers follow to compute the whole-file sha256 (and MD5 where that is the only known digest)
without a second download pass. ``verified_sha`` checks a complete file against its entry. The engine that
schedules the ranges over connections and hashers is ``_download``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ._fs import CACHE_ADVICE, no_space
from ._hash import Hasher
from ._workers import Cancelled
from .errors import IntegrityError
from .manifest import FileEntry

CHUNK = 8 * 1024 * 1024  # range size for files without chunk digests (with them: their chunk size)
READ = 1024 * 1024  # how much the hashers read back from the page cache at once


@dataclass(eq=False)
class Range:
    """The unit of verification: a chunk (its digest checked once all of it is on disk), or a piece of a file
    without chunk digests. Connections read it whole or in pieces (``Piece``)."""

    job: FileJob
    gen: int  # the job's attempt this range belongs to (a whole-file retry starts a new one)
    offset: int
    length: int
    digest: str | None  # the chunk's sha256, when the file has chunk digests
    validate: bool  # ask the store to check each read itself
    attempts: int = 1  # reads of the whole range (a damaged one is read again)
    missing: int = -1  # bytes not yet on disk in this attempt
    wrong: set[str] = field(default_factory=set)  # sha256s of attempts that failed the digest
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.missing = self.length

    @property
    def label(self) -> str:
        return _label(self.job, self.offset, self.length)

    def landed(self, nbytes: int) -> bool:
        """Record a piece on disk; True, once, when the whole range is."""
        with self.lock:
            self.missing -= nbytes
            return self.missing == 0


@dataclass(frozen=True)
class Piece:
    """What one connection reads in one request: a range, or a part of it."""

    range: Range
    offset: int
    length: int

    @property
    def label(self) -> str:
        return _label(self.range.job, self.offset, self.length)


def _label(job: FileJob, offset: int, length: int) -> str:
    return f"{job.entry.path} bytes {offset}-{offset + length - 1}"


class FileJob:
    """One file being downloaded into a cache temp file; hashed in order as verified ranges land on disk."""

    def __init__(self, entry: FileEntry, name: str, tmp: Path):
        self.entry, self.name, self.tmp = entry, name, tmp
        self.gen = 0
        self.attempts = 1  # whole-file downloads so far
        self.wrong: set[str] = set()  # sha256s of whole-file downloads that failed their digest
        self._lock = threading.Lock()
        self._reset()
        # Guards the fd: once closed, no late worker may write through it (the number could be reused), and it
        # is closed only when no worker is in the middle of a read or write.
        self._io = threading.Lock()
        self._closed = False
        self._users = 0
        # Opened on first use and closed when the file is done: a model of 10,000 small files must not hold
        # 10,000 descriptors (the usual limit is 1024). The space is reserved now, for every file.
        self._fd: int | None = None
        fd = os.open(tmp, os.O_RDWR | os.O_TRUNC)  # created exclusively by Cache.new_temp
        try:
            if entry.size:
                os.posix_fallocate(fd, 0, entry.size)  # ENOSPC now, not half-way through the download
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # file system without fallocate
                os.ftruncate(fd, entry.size)
            else:
                tmp.unlink(missing_ok=True)
                if full := no_space(e, f"for {entry.path} ({entry.size} bytes) in {tmp.parent}", CACHE_ADVICE):
                    raise full from None
                raise
        finally:
            os.close(fd)

    def _reset(self) -> None:
        self.fresh_hashes()
        self._done: dict[int, int] = {}
        self._next = 0
        self._hashing = False
        self._complete = False

    def fresh_hashes(self) -> None:
        self.hash = Hasher(md5=bool(self.entry.md5 and not self.entry.sha256))  # Content-MD5 only without a sha256

    def hashed(self, gen: int) -> bool:
        """The whole file was hashed as its one range arrived; True when the caller is to complete it."""
        with self._lock:
            if gen != self.gen or self._complete:
                return False
            self._next, self._complete = self.entry.size, True
            return True

    def ranges(self, store_checked: int | None) -> list[Range]:
        """This attempt's ranges: the file's chunks, or pieces the store can check (``store_checked`` bytes)."""
        e = self.entry
        if e.chunks is not None and e.chunk_size:
            offsets = range(0, e.size, e.chunk_size)
            return [
                Range(self, self.gen, off, min(e.chunk_size, e.size - off), e.chunks[i], False)
                for i, off in enumerate(offsets)
            ]
        step = store_checked or CHUNK
        return [
            Range(self, self.gen, off, min(step, e.size - off), None, store_checked is not None)
            for off in range(0, e.size, step)
        ]

    def restart(self) -> None:
        """Start the whole file again (after a whole-file digest mismatch); late ranges of the old attempt are
        ignored."""
        with self._lock:
            self.gen += 1
            self.attempts += 1
            self._reset()

    def _use(self) -> int:
        """The file's descriptor, counted as in use; raises Cancelled once the job is closed (the fetch failed
        or was cancelled while a worker was still on it)."""
        with self._io:
            if self._closed:
                raise Cancelled
            if self._fd is None:
                self._fd = os.open(self.tmp, os.O_RDWR)
            self._users += 1
            return self._fd

    def _release(self) -> None:
        with self._io:
            self._users -= 1
            self._close_if_unused()

    def rest(self) -> None:
        """Close the descriptor while nobody uses it (it is opened again on the next use): files waiting for
        their next range or for a hasher hold none, so a model of many small files never runs out of them."""
        with self._io:
            if self._users == 0 and self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None

    def _close_if_unused(self) -> None:
        if self._closed and self._users == 0 and self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def write(self, data: bytes, pos: int) -> None:
        fd = self._use()
        try:  # outside the lock: workers write their ranges of one file in parallel
            view = memoryview(data)
            while view:  # a short write must not go unnoticed
                n = os.pwrite(fd, view, pos)
                if n <= 0:
                    raise OSError(errno.ENOSPC, "no bytes written")
                view, pos = view[n:], pos + n
        finally:
            self._release()

    def _read_into(self, buf: memoryview, pos: int) -> int:
        fd = self._use()
        try:
            return os.preadv(fd, [buf], pos)
        finally:
            self._release()

    def size_on_disk(self) -> int:
        fd = self._use()
        try:
            return os.fstat(fd).st_size
        finally:
            self._release()

    def range_done(self, gen: int, offset: int, length: int) -> bool:
        """Record a verified range; True when the caller must hand the job to a hasher (it is next in line and
        no hasher is on this job)."""
        with self._lock:
            if gen != self.gen:
                return False  # a range of an attempt that was given up
            self._done[offset] = length
            if self._hashing or offset != self._next:
                return False  # the hasher on this job picks it up, or it waits for the ranges before it
            self._hashing = True
            return True

    def advance(self, buf: memoryview) -> bool:
        """Hash the contiguous verified bytes from the file (the page cache) through ``buf``, the hasher's own
        buffer (a fresh one per read would cost a page fault per 4 KiB); True, once, when all are hashed."""
        while True:
            with self._lock:
                length = self._done.pop(self._next, -1)
                if length < 0:
                    self._hashing = False
                    if self._next == self.entry.size and not self._complete:
                        self._complete = True
                        return True
                    return False
                pos, end = self._next, self._next + length
            self.hash_back(self.hash, pos, length, buf)
            with self._lock:
                self._next = end

    def hash_back(self, hasher: Hasher, pos: int, length: int, buf: memoryview) -> None:
        """Feed ``length`` bytes from ``pos`` of the file (the page cache) to ``hasher`` through ``buf``."""
        end = pos + length
        while pos < end:  # hashlib releases the GIL for big buffers: this runs beside the downloads
            n = self._read_into(buf[: min(len(buf), end - pos)], pos)
            if n <= 0:
                raise IntegrityError(f"{self.entry.path}: file shorter than written")
            hasher.update(buf[:n])
            pos += n

    def close(self) -> None:
        """No more I/O through this job; the descriptor closes when the last worker using it is done."""
        with self._io:
            self._closed = True
            self._close_if_unused()


class Mismatch(Exception):
    """A whole file whose digest is wrong; ``got`` is the sha256 of what arrived."""

    def __init__(self, kind: str, expected: str, got: str, sha: str):
        self.kind, self.expected, self.got, self.sha = kind, expected, got, sha


def verified_sha(job: FileJob, where: str) -> str:
    """The sha256 of a complete job, checked against the entry's sha256 or MD5; Mismatch when wrong."""
    e = job.entry
    actual_size = job.size_on_disk()
    if actual_size != e.size or job._next != e.size:
        raise IntegrityError(f"{where}/{e.path}: got {job._next} bytes, expected {e.size}; the store changed, re-run")
    sha = job.hash.sha256.hexdigest()
    if e.sha256 and sha != e.sha256:
        raise Mismatch("sha256", e.sha256, sha, sha)
    md5 = job.hash.md5
    if md5 and e.md5 and md5.hexdigest() != e.md5:
        raise Mismatch("Content-MD5", e.md5, md5.hexdigest(), sha)
    return sha
