"""The ranged parallel download engine.

Files are split into ranges (a file's chunks when it has chunk digests), read by worker threads into cache
temp files, whole or, when little is left, in pieces that spread the last ranges over every connection
(``_Queue``). A range is checked against its chunk digest as it arrives (once its last piece lands, when read
in pieces), and each read by the store itself where it can check one (Azure's transactional MD5). A damaged
range is read again, alone: MODELSHIP_MAX_ATTEMPTS reads at most (``modelship.settings``). Hasher threads
follow each file's contiguous verified prefix on disk and compute the whole-file sha256 (and MD5 where that is
the only known digest) once, off the download path. A file without chunk digests whose whole-file digest is
wrong is downloaded again: the same wrong digest twice means the store holds damaged bytes. Each range's
retries also obey the retry budget (``_retry.Budget``): a store that stalls for good ends the fetch with one line.

The number of connections comes from ``_connections``: fixed (``--workers``, ``MODELSHIP_CONCURRENCY``) or
grown by its ``Tuner`` from the throughput samples the workers report, within a ceiling from the cores and a
memory budget (for the reads Azure checks itself, which its SDK holds whole in memory, the budget is the
ceiling: 12).

This module schedules: the queue of pieces, the connections and hashers that work it, and what happens to a
range or file that fails its digest. Each file's own state (its ranges, descriptor, verified prefix and hashes)
is ``_filejob``.
"""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from . import _retry, settings
from ._connections import Tuner, ceiling
from ._filejob import READ, FileJob, Mismatch, Piece, Range, verified_sha
from ._fs import CACHE_ADVICE, no_space
from ._hash import Hasher
from ._workers import Cancelled, Pool
from .cache import Cache
from .errors import ChecksumError, IntegrityError, ModelshipError, TransientError
from .manifest import FileEntry, Resolution
from .progress import Progress
from .stores.base import Source
from .uri import ModelURI

log = logging.getLogger("modelship")

MIN_PIECE = 256 * 1024  # the smallest part of a range one connection is given (see _Queue)
SAMPLE = 1024 * 1024  # a connection reports its throughput to the tuner every this many bytes


_ALLOCATOR_BOUND = False


def _bound_allocator() -> None:
    """Have glibc give large freed buffers back to the system at once (once per process).

    The SDKs read answers in pieces of 256 KiB and up. glibc serves such a block by mmap, but once one is freed
    it raises its mmap threshold above that size, and later blocks come from per-thread arenas that keep what
    is freed: with a dozen connections that is some 4 MiB per connection held for nothing (measured: peak RSS
    146 → 95 MB for 12 connections). Fixing the threshold at its default stops the raise. Elsewhere: no-op.
    """
    global _ALLOCATOR_BOUND
    if _ALLOCATOR_BOUND:
        return
    _ALLOCATOR_BOUND = True
    with contextlib.suppress(OSError, AttributeError, TypeError):
        m_mmap_threshold = -3
        ctypes.CDLL(None).mallopt(m_mmap_threshold, 128 * 1024)


class _Queue:
    """The pieces still to read, in file order (the hashers follow each file's verified prefix).

    A connection takes the next range whole while much is left, and only its share of what is left when little
    is (guided self-scheduling): the rest of the range goes back to the front, for the next free connection.
    That keeps every connection busy to the end instead of leaving the last round of whole ranges to a few, and
    lets a file of one or two chunks use every connection.
    """

    def __init__(self) -> None:
        self._items: deque[Piece] = deque()
        self._bytes = 0
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, piece: Piece, *, front: bool = False) -> None:
        with self._cond:
            (self._items.appendleft if front else self._items.append)(piece)
            self._bytes += piece.length
            self._cond.notify()

    def take(self, connections: int, timeout: float) -> Piece | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
                if not self._items:
                    return None
            p = self._items.popleft()
            share = -(-self._bytes // max(1, connections) // (64 * 1024)) * 64 * 1024  # rounded up to 64 KiB
            share = max(share, MIN_PIECE)
            if p.length - share >= MIN_PIECE:
                self._items.appendleft(Piece(p.range, p.offset + share, p.length - share))
                p = Piece(p.range, p.offset, share)
            self._bytes -= p.length
            return p


OnComplete = Callable[[FileJob, str], None]


def _tries(attempts: int, what: str = "attempts") -> str:
    """How often a damaged read was tried, for the give-up line."""
    if attempts == 1:
        return "(not read again: MODELSHIP_MAX_ATTEMPTS=1)"
    return f"in {attempts} {what}, different bytes each time"


class _Downloader:
    """Ranged parallel download on the worker pool (``_workers.Pool``): connections and hashers.

    On SIGINT/SIGTERM or a failure, a worker stuck in a stalled read is left behind (it must not hold up the
    exit); abandoned workers find their job closed and stop.
    """

    def __init__(
        self,
        source: Source,
        workers: int | None,
        progress: Progress,
        cancel: threading.Event,
        on_complete: OnComplete,
        where: str = "",
    ):
        self.source, self.progress, self.cancel = source, progress, cancel
        self._pool = Pool(cancel)
        self._finished = self._pool.done  # every file verified (or a worker failed): the workers stop
        self.on_complete, self.where = on_complete, where
        # Reads of a range, and downloads of a whole file when only its whole-file digest can tell damage.
        self.attempts = settings.current().max_attempts
        self.tuner = Tuner(workers, ceiling(source))
        # Ranges of at most this many bytes are checked by the store itself when asked (files without chunk
        # digests only: for the others the chunk digest is the stronger check, and costs no extra pass). The
        # signature is asked too: a plugin wrapping a store may pass its attributes on but not the keyword.
        self.store_checked: int | None = getattr(source, "verified_read_size", None)
        if self.store_checked and "validate" not in inspect.signature(source.read).parameters:
            self.store_checked = None
        self._tasks = _Queue()
        self._hash_q: queue.SimpleQueue[FileJob] = queue.SimpleQueue()
        self._gate = threading.Condition()
        self._active = 0
        self._pending = 0  # files not yet verified and handed over
        self._count = threading.Lock()

    @property
    def connections(self) -> int:
        """Connections the download settled at (or was given)."""
        return self.tuner.limit

    def run(self, jobs: list[FileJob]) -> None:
        if not jobs:
            return
        _bound_allocator()
        self._pending = len(jobs)
        t0, total = time.monotonic(), sum(j.entry.size for j in jobs)
        if self.store_checked and any(j.entry.chunks is None for j in jobs):  # some reads will be checked ones
            self.tuner = Tuner(self.tuner.fixed, ceiling(self.source, checked=True))
        ranges = 0
        for job in jobs:
            if job.entry.size == 0:
                job.range_done(job.gen, 0, 0)
                self._hash_q.put(job)
            for r in job.ranges(self.store_checked):
                self._tasks.put(Piece(r, r.offset, r.length))
                ranges += 1
        n_workers = min(self.tuner.most, max(1, ranges, total // MIN_PIECE))
        # Whole-file hashing is sequential per file; more hashers help when many files complete at once.
        n_hashers = max(1, min(4, (os.cpu_count() or 1) // 2, len(jobs)))
        workers = [(f"modelship-fetch-{i}", self._worker) for i in range(n_workers)]
        workers += [(f"modelship-hash-{i}", self._hasher) for i in range(n_hashers)]
        self._pool.run(workers, tick=self.tuner.tick)  # raises a worker's failure, or the interrupt
        if self._pending:
            raise ModelshipError("download workers stopped before finishing; re-run")
        elapsed = max(time.monotonic() - t0, 1e-6)
        how = "fixed" if self.tuner.fixed else f"tuned, at most {self.tuner.peak}"
        log.info(
            "downloaded %d bytes in %.2f s (%.0f MB/s) over %d connections (%s)",
            *(total, elapsed, total / elapsed / 1e6, self.tuner.limit, how),
        )

    def _running(self) -> bool:
        return self._pool.running()

    # -- workers

    def _worker(self) -> None:
        while self._running():
            with self._gate:
                while self._active >= self.tuner.limit and self._running():
                    self._gate.wait(0.2)
                self._active += 1
            try:
                p = self._tasks.take(self.tuner.limit, timeout=0.1)
                if p is None:  # empty for now: a whole-file retry or a damaged range may queue more
                    continue
                self._fetch(p)
            finally:
                with self._gate:
                    self._active -= 1
                    self._gate.notify_all()  # the tuner may have raised the limit: wake every waiting worker

    def _read(self, p: Piece, pos: int, validate: bool) -> Iterator[bytes]:
        job, end = p.range.job, p.offset + p.length
        if validate:
            return self.source.read(job.name, pos, end - pos, job.entry.etag, validate=True)  # type: ignore[call-arg]
        return self.source.read(job.name, pos, end - pos, job.entry.etag)

    def _step(self) -> int:
        """The tuner's step, for a sample starting now; -1 when not every connection has work (an unfair one)."""
        return self.tuner.step if len(self._tasks) >= self.tuner.limit - 1 else -1

    def _fetch(self, p: Piece) -> None:
        r = p.range
        job, end = r.job, p.offset + p.length
        if r.gen != job.gen:
            return  # a range of an attempt that was given up (the whole file is being read again)
        validate, store_failed = r.validate, 0
        # A file read in one piece (most files of a many-file model): one pass over the bytes as they arrive
        # serves the chunk check and the whole-file digests, and no hasher reads them back. A chunk read whole
        # is checked as it arrives too; a chunk read in pieces, once its last piece is on disk.
        whole = p.length == job.entry.size
        # self.attempts in all, and none once the retry budget has passed without bytes arriving (a stalled store).
        budget = _retry.Budget(p.label, retries=self.attempts - 1)
        attempt = 0
        while True:
            attempt += 1
            if self.cancel.is_set():
                raise Cancelled
            pos = p.offset
            # Samples every SAMPLE bytes, not per range: the tuner decides within a second even when a range takes
            # several (4 MiB at 2 MB/s). The first one of a read includes the wait for its answer, as it should.
            mark, since, step = pos, time.monotonic(), self._step()
            if whole:
                job.fresh_hashes()
            chunk = job.hash if whole else Hasher() if r.digest and p.length == r.length else None
            try:
                pieces = iter(self._read(p, pos, validate))
                # Not a for loop: it would hold the last piece while the store reads the next one (the Azure SDK
                # reads a whole 4 MiB answer into memory), doubling what each connection holds.
                while (data := next(pieces, None)) is not None:
                    if len(data) > end - pos:  # a server that sends more than asked for
                        data = data[: end - pos]
                    job.write(data, pos)
                    if chunk is not None:
                        chunk.update(data)  # as it arrives, on this worker: the bytes are hot and the GIL free
                    pos += len(data)
                    self.progress.update(len(data))
                    del data
                    if pos - mark >= SAMPLE and attempt == 1:
                        now = time.monotonic()
                        if step >= 0:
                            self.tuner.sample(step, pos - mark, now - since)
                        mark, since, step = pos, now, self._step()
                    if self.cancel.is_set():
                        raise Cancelled
                if pos < end:
                    raise TransientError(
                        f"{p.label}: connection closed after {pos - p.offset} of {p.length} bytes",
                        reason="connection closed early",
                    )
                break
            except TransientError as e:
                # The whole piece again: a store may notice only at the end that the bytes it already handed
                # over were damaged (S3's response checksums), so nothing of a failed attempt is kept.
                self.progress.update(p.offset - pos)
                if isinstance(e, ChecksumError) and validate:
                    store_failed += 1
                    # Twice: perhaps not the way but the store's own checksum is wrong (a Content-MD5 set by hand).
                    # Read it plainly; the whole-file digest then tells transit damage from damage at rest.
                    validate = store_failed < 2
                delay = budget.retry(e, progressed=pos > p.offset)  # raises when the retries or the budget are spent
                log.info("retrying %s (%s), attempt %d/%d", p.label, _retry.reason(e), attempt + 1, self.attempts)
                if self.cancel.wait(delay):
                    raise Cancelled from None
            except OSError as e:
                if full := no_space(e, f"writing {job.entry.path} to {job.tmp.parent}", CACHE_ADVICE):
                    raise full from None
                raise
        if attempt == 1 and step >= 0 and pos > mark:
            self.tuner.sample(step, pos - mark, time.monotonic() - since)
        if r.landed(p.length):
            self._verified(r, chunk)
        job.rest()

    def _verified(self, r: Range, chunk: Hasher | None) -> None:
        """All of ``r`` is on disk (``chunk``: hashed as it arrived, if it came whole): check its digest and
        hand it on, or read it again."""
        job = r.job
        whole = r.length == job.entry.size  # one range for the file: its chunk digest is the file's sha256
        if r.digest:
            if chunk is None:  # it came in pieces: hash it from the page cache
                if whole:
                    job.fresh_hashes()
                chunk = job.hash if whole else Hasher()
                job.hash_back(chunk, r.offset, r.length, memoryview(bytearray(min(READ, r.length))))
            if (got := chunk.sha256.hexdigest()) != r.digest:
                self._damaged(r, got)
                return
        if whole and chunk is not None:  # the file's digests are complete; else a hasher reads the range back
            if job.hashed(r.gen):
                self._complete(job)
        elif job.range_done(r.gen, r.offset, r.length):
            self._hash_q.put(job)

    def _damaged(self, r: Range, got: str) -> None:
        """A range whose bytes do not have its chunk digest: read it again (bounded), or name the damage."""
        with r.lock:
            if got in r.wrong:
                raise IntegrityError(
                    f"{self.where}/{r.label} are damaged in the store: sha256 mismatch twice with the same "
                    f"wrong bytes (expected {r.digest[:16]}…, got {got[:16]}…); re-publish the version"
                )
            if r.attempts >= self.attempts:
                raise IntegrityError(
                    f"{self.where}/{r.label}: sha256 mismatch {_tries(self.attempts)}: something on the way "
                    "corrupts data (a proxy, a NIC); re-run, or fetch over https"
                )
            r.wrong.add(got)
            r.attempts += 1
            r.missing = r.length
        log.info(
            "retrying %s (%s), attempt %d/%d", r.label, "damaged bytes: sha256 mismatch", r.attempts, self.attempts
        )
        self.progress.update(-r.length)
        self._tasks.put(Piece(r, r.offset, r.length), front=True)

    # -- hashers

    def _hasher(self) -> None:
        buf = memoryview(bytearray(READ))
        while self._running():
            try:
                job = self._hash_q.get(timeout=0.1)
            except queue.Empty:
                continue
            done = job.advance(buf)
            job.rest()
            if done:
                self._complete(job)

    def _complete(self, job: FileJob) -> None:
        try:
            sha = verified_sha(job, self.where)
        except Mismatch as m:
            self._again(job, m)
            return
        self.on_complete(job, sha)
        with self._count:
            self._pending -= 1
            if self._pending == 0:
                self._finished.set()

    def _again(self, job: FileJob, m: Mismatch) -> None:
        """A whole file that failed its digest: download it again, or say whether it is damaged at rest."""
        e, path = job.entry, f"{self.where}/{job.entry.path}"
        if e.chunks is not None:  # every chunk matched, the whole does not: no download can fix that
            raise IntegrityError(
                f"{path}: its chunks match the manifest's chunk digests but not its {m.kind} "
                f"({m.expected[:16]}…); the manifest is inconsistent, re-publish the version"
            )
        if m.sha in job.wrong:
            raise IntegrityError(
                f"{path} is damaged in the store: {m.kind} mismatch twice with the same wrong bytes (expected "
                f"{m.expected[:16]}…, got {m.got[:16]}…); re-publish the model"
            )
        if job.attempts >= self.attempts:
            raise IntegrityError(
                f"{path}: {m.kind} mismatch {_tries(self.attempts, 'downloads')} (expected {m.expected[:16]}…): "
                "something on the way corrupts data; re-run"
            )
        job.wrong.add(m.sha)
        log.info(
            "retrying %s (whole file: %s mismatch), attempt %d/%d", e.path, m.kind, job.attempts + 1, self.attempts
        )
        self.progress.update(-e.size)
        job.restart()
        if e.size == 0:
            job.range_done(job.gen, 0, 0)
            self._hash_q.put(job)
        for r in job.ranges(self.store_checked):
            self._tasks.put(Piece(r, r.offset, r.length))


def ensure_cached(
    source: Source, uri: ModelURI, res: Resolution, cache: Cache, workers: int | None, show_progress: bool | None
) -> tuple[dict[str, str], int, int]:
    """Make every resolved file present and verified in the cache.

    Returns path→sha256, the bytes downloaded and the connections used (``workers``: a fixed number, or None to
    let the engine find how many the link rewards).
    """
    where = _where(uri, res)
    location = f"{uri.scheme}://{uri.location}/{uri.container}"
    shas: dict[str, str] = {}
    for f in res.files:
        sha = f.sha256 or cache.sha_for_etag(location + "/" + _name(res, f), f.etag, f.size)
        if sha and cache.get(sha, f.size):
            shas[f.path] = sha
    todo = [f for f in res.files if f.path not in shas]
    if not todo:
        return shas, 0, 0
    total = sum(f.size for f in todo)
    cancel = threading.Event()
    jobs: list[FileJob] = []

    def finish(job: FileJob, sha: str) -> None:
        """Move a verified file into the cache at once: a killed or failed fetch keeps it."""
        job.close()
        cache.put(job.tmp, sha)
        cache.remember_etag(location + "/" + job.name, job.entry.etag, job.entry.size, sha)
        shas[job.entry.path] = sha

    try:
        for f in todo:
            tmp = cache.new_temp()
            try:
                jobs.append(FileJob(f, _name(res, f), tmp))
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        log.info("downloading %d files (%d bytes) from %s", len(jobs), total, where)
        with Progress(total, f"fetch {res.version or uri.display}", show=show_progress) as bar:
            downloader = _Downloader(source, workers, bar, cancel, finish, where)
            downloader.run(jobs)
    finally:
        cancel.set()
        for job in jobs:
            job.close()
            job.tmp.unlink(missing_ok=True)
    return shas, total, downloader.connections


def _where(uri: ModelURI, res: Resolution) -> str:
    """The display URI that file paths are relative to in messages (a single-file URI names the file itself)."""
    if res.version is None and len(res.files) == 1 and _name(res, res.files[0]) == uri.prefix.strip("/"):
        return uri.display.split("?", 1)[0].rsplit("/", 1)[0]
    return uri.child(res.version or "")


def _name(res: Resolution, f: FileEntry) -> str:
    return f"{res.prefix}/{f.path}" if res.prefix else f.path
