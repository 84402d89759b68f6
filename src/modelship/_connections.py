"""How many connections a download opens: a fixed number asked for, or grown while throughput grows; and how
many files a publish uploads at once.

The download engine (``_download``) reads ranges over as many connections as the ``Tuner`` allows, within a
``ceiling`` derived from the cores (as AzCopy does) and a memory budget for what the reads in flight hold.
A publish uploads a fixed number of files at once (``uploads``): the same setting, else as many as the memory
budget allows for what one upload holds.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from . import settings
from .errors import UsageError
from .stores.base import MAX_CONNECTIONS, Source

log = logging.getLogger("modelship")

START = 16  # connections before the tuner has measured anything (at most the ceiling)
MEMORY_BUDGET = 96 * 1024 * 1024  # what the reads in flight may hold in memory together
_MiB = 1024 * 1024
UPLOADS_MIN, UPLOADS_MAX = 4, 16  # files a publish uploads at once, when not asked for a number
# What one upload holds in memory: Azure sends a file of up to 16 MiB in one request, read whole; a larger one
# goes as blocks of 8 MiB, four at once (stores/azure_blob.py; S3 streams from the file and holds less).
SINGLE_UPLOAD, UPLOAD_BLOCKS = 16 * _MiB, 4 * 8 * _MiB


def concurrency_setting(workers: int | None) -> int | None:
    """The fixed number of connections asked for (``workers``, else MODELSHIP_CONCURRENCY); None: automatic."""
    if workers is None:
        return settings.current().concurrency  # checked there, in a line naming the variable
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
    if workers > MAX_CONNECTIONS:
        raise UsageError(f"--workers must be at most {MAX_CONNECTIONS} (the connection pools' size), not {workers}")
    return workers


def uploads(workers: int | None, largest: int) -> int:
    """Files a publish uploads (and hashes) at once: ``workers`` or MODELSHIP_CONCURRENCY when set, else as many
    as MEMORY_BUDGET allows for what one upload holds, from UPLOADS_MIN to UPLOADS_MAX (``largest``: the largest
    file's size). Each upload is one request after another, so many small files need many at once: 20,000 small
    files took 208 s at the former fixed 4."""
    fixed = concurrency_setting(workers)
    if fixed is not None:
        return fixed
    held = largest if largest <= SINGLE_UPLOAD else UPLOAD_BLOCKS
    return max(UPLOADS_MIN, min(UPLOADS_MAX, MEMORY_BUDGET // max(held, _MiB)))


def ceiling(source: Source, *, checked: bool = False) -> int:
    """Most connections the tuner may open: 32, or 16 per core on larger machines (AzCopy's rule), and no more
    than the memory budget allows for what one read of this store holds in memory (``checked``: some reads are
    checked by the store, which may hold more)."""
    by_cores = max(32, 16 * (os.cpu_count() or 1))
    held = int(getattr(source, "read_buffer", _MiB))
    if checked:
        held = max(held, int(getattr(source, "verified_read_buffer", held)))
    by_memory = MEMORY_BUDGET // max(held, 64 * 1024)
    return max(1, min(MAX_CONNECTIONS, by_cores, by_memory))


class Tuner:
    """How many ranges are read at once: fixed when asked for, else grown while throughput grows.

    Every SAMPLE bytes a connection reads are a sample (bytes, seconds), tagged with the step it started in.
    Once a step has as many samples as connections, its throughput is limit × bytes / seconds. A step up is kept
    when it brings at least half of the linear gain (8 → 12 connections: at least +25 %); otherwise the tuner
    goes back one step and settles, and later measures again and tries one step up (links change, and one
    measurement can be unlucky): after RETUNE seconds, twice as long after each try that brought nothing, up to
    RETUNE_MAX. Steps are +50 %, at least +2.
    Samples started while fewer pieces were queued than connections are not counted: they see an idle link.
    """

    GAIN = 0.5
    RETUNE, RETUNE_MAX = 2.0, 30.0

    def __init__(self, fixed: int | None, most: int, start: int = START):
        self.fixed = fixed
        self.most = fixed or most
        self.limit = fixed or min(start, most)
        self.peak = self.limit
        self.step = 0
        self.settled = fixed is not None
        self._base: tuple[int, float] | None = None  # (limit, bytes/s) of the last kept step
        self._samples: list[tuple[int, float]] = []
        self._settled_at = time.monotonic()
        self._retune = self.RETUNE
        self._grew = False  # whether this round of measuring kept a step up
        self._lock = threading.Lock()

    def sample(self, step: int, nbytes: int, seconds: float) -> None:
        with self._lock:
            if self.settled or step != self.step or seconds <= 0:
                return
            self._samples.append((nbytes, seconds))
            if len(self._samples) >= max(self.limit, 4):
                self._decide()

    def _decide(self) -> None:
        rate = self.limit * sum(n for n, _ in self._samples) / sum(s for _, s in self._samples)
        if self._base is not None:
            before, before_rate = self._base
            if rate < before_rate * (1 + self.GAIN * (self.limit / before - 1)):
                log.debug(
                    "connections: %d gave %.0f MB/s, %d gave %.0f MB/s; staying at %d",
                    *(before, before_rate / 1e6, self.limit, rate / 1e6, before),
                )
                self._move(before)
                self._settle()
                return
            self._grew = True
        self._base = (self.limit, rate)
        if self.limit >= self.most:
            self._settle()
            return
        log.debug("connections: %d gave %.0f MB/s; trying more", self.limit, rate / 1e6)
        self._move(min(self.most, max(self.limit + 2, self.limit * 3 // 2)))

    def _move(self, limit: int) -> None:
        self.limit, self.peak = limit, max(self.peak, limit)
        self.step += 1
        self._samples = []

    def _settle(self) -> None:
        self.settled, self._settled_at = True, time.monotonic()
        self._retune = self.RETUNE if self._grew else min(self.RETUNE_MAX, self._retune * 2)
        self._samples = []

    def tick(self) -> None:
        """Called now and then: a while after settling, measure again and try one step more."""
        with self._lock:
            if self.fixed is None and self.settled and time.monotonic() - self._settled_at > self._retune:
                self.settled, self._base, self._grew = False, None, False
                self.step += 1
                self._samples = []
