"""The ranged parallel download engine: files split into ranges, fetched by worker threads, hashed in order."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ._retry import RETRIES, backoff
from .errors import IntegrityError, ModelshipError, TransientError
from .manifest import FileEntry
from .progress import Progress
from .sources.base import Source

log = logging.getLogger("modelship")

CHUNK = 4 * 1024 * 1024  # one ranged GET each; sources buffer at most this much per worker


class _Abandoned(Exception):
    """The job was closed (the fetch failed or was cancelled) while a worker was still on it."""


class _FileJob:
    """One file being downloaded into a cache temp file; hashes its bytes in order as ranges complete."""

    def __init__(self, entry: FileEntry, name: str, tmp: Path):
        self.entry, self.name, self.tmp = entry, name, tmp
        self.sha = hashlib.sha256()
        self.md5 = hashlib.md5() if entry.md5 and not entry.sha256 else None  # noqa: S324 - a checksum, not security
        self._done: dict[int, int] = {}
        self._next = 0
        self._hashing = False
        self._complete = False
        self._lock = threading.Lock()
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
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise ModelshipError(
                        f"no space left for {entry.path} ({entry.size} bytes) in {tmp.parent}; "
                        "free space or set MODELSHIP_CACHE_DIR"
                    ) from None
                raise
        finally:
            os.close(fd)

    def _use(self) -> int:
        """The file's descriptor, counted as in use; raises _Abandoned once the job is closed."""
        with self._io:
            if self._closed:
                raise _Abandoned
            if self._fd is None:
                self._fd = os.open(self.tmp, os.O_RDWR)
            self._users += 1
            return self._fd

    def _release(self) -> None:
        with self._io:
            self._users -= 1
            self._close_if_unused()

    def _close_if_unused(self) -> None:
        if self._closed and self._users == 0 and self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def write(self, data: bytes, pos: int) -> None:
        fd = self._use()
        try:  # outside the lock: workers write their ranges of one file in parallel
            view = memoryview(data)
            while view:  # a short write must not go unnoticed: the hash may be taken from memory
                n = os.pwrite(fd, view, pos)
                if n <= 0:
                    raise OSError(errno.ENOSPC, "no bytes written")
                view, pos = view[n:], pos + n
        finally:
            self._release()

    def _read(self, n: int, pos: int) -> bytes:
        fd = self._use()
        try:
            return os.pread(fd, n, pos)
        finally:
            self._release()

    def size_on_disk(self) -> int:
        fd = self._use()
        try:
            return os.fstat(fd).st_size
        finally:
            self._release()

    def chunk_done(self, offset: int, length: int, pieces: Sequence[bytes] = ()) -> bool:
        """Record a finished range and hash what is now contiguous; True (once) when the whole file is hashed.

        ``pieces`` are the range's bytes as the caller still holds them: hashed from memory when this range is
        next in line, which saves re-reading it; never kept for later, so memory stays bounded.
        """
        with self._lock:
            self._done[offset] = length
            if self._hashing:
                return False  # the thread that is hashing will pick this range up
            self._hashing = True
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
            if pos == offset and pieces and sum(map(len, pieces)) == length:
                for data in pieces:
                    self.sha.update(data)
                    if self.md5:
                        self.md5.update(data)
                pos = end
            while pos < end:  # re-read from the page cache: no other thread's range is held in memory
                data = self._read(min(1 << 20, end - pos), pos)
                if not data:
                    raise IntegrityError(f"{self.entry.path}: file shorter than written")
                self.sha.update(data)
                if self.md5:
                    self.md5.update(data)
                pos += len(data)
            self._next = end

    def close(self) -> None:
        """No more I/O through this job; the descriptor closes when the last worker using it is done."""
        with self._io:
            self._closed = True
            self._close_if_unused()


class _Downloader:
    """Ranged parallel download on daemon threads.

    Daemon threads, not a ThreadPoolExecutor: on SIGINT/SIGTERM or a failure, a worker stuck in a stalled read
    must not hold up the exit (an executor's threads are joined at interpreter exit, for up to the read timeout).
    Abandoned workers find their job closed and stop.
    """

    GRACE = 0.5  # seconds to let workers notice a cancel before leaving them behind

    def __init__(
        self,
        source: Source,
        workers: int,
        progress: Progress,
        cancel: threading.Event,
        on_complete: Callable[[_FileJob], None],
    ):
        self.source, self.workers, self.progress, self.cancel = source, workers, progress, cancel
        self.on_complete = on_complete

    def run(self, jobs: list[_FileJob]) -> None:
        tasks: queue.SimpleQueue[tuple[_FileJob, int, int]] = queue.SimpleQueue()
        for job in jobs:
            for off in range(0, job.entry.size, CHUNK):
                tasks.put((job, off, min(CHUNK, job.entry.size - off)))
        left, errors = [tasks.qsize()], []
        lock, finished = threading.Lock(), threading.Event()
        if not left[0]:
            return

        def worker() -> None:
            while not self.cancel.is_set():
                try:
                    task = tasks.get_nowait()
                except queue.Empty:
                    return
                try:
                    self._chunk(*task)
                except _Abandoned:
                    return
                except BaseException as e:  # noqa: BLE001 - handed to the main thread
                    errors.append(e)
                    self.cancel.set()
                    finished.set()
                    return
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        finished.set()

        threads = [
            threading.Thread(target=worker, name=f"modelship-fetch-{i}", daemon=True)
            for i in range(min(self.workers, left[0]))
        ]
        for t in threads:
            t.start()
        try:
            while not finished.wait(0.2):  # short waits keep the main thread responsive to SIGINT/SIGTERM
                if not any(t.is_alive() for t in threads):
                    break
        except BaseException:
            self.cancel.set()
            self._join(threads)
            raise
        if errors:
            self._join(threads)
            raise errors[0]
        if left[0]:
            raise ModelshipError("download workers stopped before finishing; re-run")

    def _join(self, threads: list[threading.Thread]) -> None:
        deadline = time.monotonic() + self.GRACE
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _chunk(self, job: _FileJob, offset: int, length: int) -> None:
        pos, end, attempt = offset, offset + length, 0
        pieces: list[bytes] = []  # this range's bytes, for hashing without reading them back
        while pos < end:
            if self.cancel.is_set():
                raise _Abandoned
            try:
                for data in self.source.read(job.name, pos, end - pos, job.entry.etag):
                    if len(data) > end - pos:  # a server that sends more than asked for
                        data = data[: end - pos]
                    job.write(data, pos)
                    pieces.append(data)
                    pos += len(data)
                    self.progress.update(len(data))
                    if self.cancel.is_set():
                        raise _Abandoned
                if pos < end:
                    raise TransientError(f"{job.entry.path}: connection closed after {pos - offset} of {length} bytes")
            except TransientError as e:
                # The whole range again: a store may notice only at the end that the bytes it already handed
                # over were damaged (S3's response checksums), so nothing of a failed attempt is kept.
                self.progress.update(offset - pos)
                pos, pieces = offset, []
                attempt += 1
                if attempt > RETRIES:
                    raise TransientError(f"{job.entry.path}: gave up after {RETRIES} retries: {e}") from None
                delay = backoff(attempt)
                log.info("retrying %s bytes %d-%d in %.1fs: %s", job.entry.path, offset, end - 1, delay, e)
                if self.cancel.wait(delay):
                    raise _Abandoned from None
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise ModelshipError(
                        f"no space left writing {job.entry.path} to {job.tmp.parent}; "
                        "free space or set MODELSHIP_CACHE_DIR"
                    ) from None
                raise
        if job.chunk_done(offset, length, pieces):
            self.on_complete(job)


def _verify(job: _FileJob, where: str) -> str:
    e = job.entry
    actual_size = job.size_on_disk()
    if actual_size != e.size or job._next != e.size:
        raise IntegrityError(f"{where}/{e.path}: got {job._next} bytes, expected {e.size}; the store changed, re-run")
    sha = job.sha.hexdigest()
    if e.sha256 and sha != e.sha256:
        raise IntegrityError(
            f"{where}/{e.path}: sha256 mismatch (expected {e.sha256[:16]}…, got {sha[:16]}…): "
            "the bytes received are not the published ones; re-run, and re-publish the model if it persists"
        )
    if job.md5 and job.md5.hexdigest() != e.md5:
        raise IntegrityError(
            f"{where}/{e.path}: Content-MD5 mismatch (expected {e.md5}, got {job.md5.hexdigest()}): "
            "the bytes received are corrupt; re-run, and re-upload the file if it persists"
        )
    return sha
