"""The one worker pool: daemon threads that stop on a failure, Ctrl-C or SIGTERM, for download, publish, OCI
layer fetches and uploads.

Daemon threads, not a ThreadPoolExecutor: on SIGINT/SIGTERM an executor runs every queued item to the end, and
its threads are joined at interpreter exit, so one stuck in a stalled read or write would hold up the exit for
a read timeout. Here the main thread waits in short steps (it stays responsive to signals); an interrupt or the
first failure sets ``cancel``, the workers get ``grace`` seconds to notice it (at their next item, read or
progress callback, where they raise ``Cancelled`` or simply return), and the interrupt or the failure goes on;
an ``abandon`` callback then cleans up after workers that are still running (their temp files).

``for_each`` runs one function over items (``collect``: and returns the results in the items' order); ``Pool``
runs long-lived worker loops of different kinds (the download engine's connections and hashers) until they are
done.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

POLL = 0.1  # seconds between the main thread's checks: short, so that SIGINT/SIGTERM are handled at once
GRACE = 0.5  # seconds to let workers notice a cancel before leaving them behind

_lost: list[BaseException] = []  # interrupts swallowed by Python (see keep_interrupts), raised at the next POLL


@contextlib.contextmanager
def keep_interrupts(kinds: tuple[type[BaseException], ...] = (KeyboardInterrupt,)) -> Iterator[None]:
    """Keep an interrupt Python would swallow: a signal handler's exception raised while a weakref callback
    or a ``__del__`` runs (an import lock's, say) is printed as "Exception ignored" and lost, and the work
    would go on. Kept, it is raised in the main thread at the pool's next check instead."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, kinds):
            _lost.append(unraisable.exc_value)
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous
        _lost.clear()


class Cancelled(BaseException):
    """Raised in a worker once its pool is cancelled, to end it quietly (the main thread raises the reason).

    A BaseException: stores map every Exception of their SDK to a ModelshipError, and this must get through."""


class Pool:
    """Worker threads until ``done`` is set or every worker has returned; the first failure cancels the rest.

    ``cancel`` is shared with the work (a worker checks it at its next step); ``done`` may be set by the work
    itself when everything is finished, so that workers waiting for more can be left to stop.
    """

    def __init__(self, cancel: threading.Event | None = None, *, grace: float = GRACE, drain: bool = False):
        """``drain``: on a failure, wait for every worker to stop (each stops at its next step) instead of
        leaving the slow ones behind after ``grace``: what the caller reports must count their work."""
        self.cancel = cancel if cancel is not None else threading.Event()
        self.done = threading.Event()
        self.grace, self.drain = grace, drain
        self.errors: list[BaseException] = []
        self._live = 0  # workers started and not returned: the last one to return sets ``done``
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def running(self) -> bool:
        """Whether workers should go on: neither cancelled nor done."""
        return not (self.cancel.is_set() or self.done.is_set())

    def _guarded(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Cancelled:
                return
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                self.errors.append(e)
                self.cancel.set()
                self.done.set()
            finally:
                with self._lock:
                    self._live -= 1
                    if self._live == 0:
                        self.done.set()  # the main thread goes on now, not at its next POLL

        return run

    def run(
        self,
        workers: Iterable[tuple[str, Callable[[], None]]],
        *,
        tick: Callable[[], None] | None = None,
        abandon: Callable[[], None] | None = None,
    ) -> None:
        """Start each ``(thread name, loop)`` and wait; ``tick`` is called every POLL seconds meanwhile.

        Raises the first worker failure, or the interrupt that ended the wait (after ``cancel`` is set and the
        workers had their grace; ``abandon`` runs when some are still alive then)."""
        try:
            workers = list(workers)  # all counted before any starts: the first to return is not the last
            with self._lock:
                self._live += len(workers)
            for name, fn in workers:  # inside: an interrupt while the last start must stop the first ones too
                t = threading.Thread(target=self._guarded(fn), name=name, daemon=True)
                self._threads.append(t)
                t.start()
            while not self.done.wait(POLL):
                if _lost:
                    raise _lost.pop()
                if tick is not None:
                    tick()
                if not any(t.is_alive() for t in self._threads):
                    break
            if self.errors and self.drain:
                self._wait_all()
        except BaseException:
            self._stop(abandon)
            raise
        if self.errors:
            self._stop(abandon)
            raise self.errors[0]

    def _wait_all(self) -> None:
        for t in self._threads:
            while t.is_alive():
                t.join(POLL)

    def _stop(self, abandon: Callable[[], None] | None) -> None:
        self.cancel.set()
        deadline = time.monotonic() + self.grace
        for t in self._threads:
            if t.ident is not None:  # started
                t.join(max(0.0, deadline - time.monotonic()))
        if abandon is not None and any(t.is_alive() for t in self._threads):
            abandon()


def for_each(
    fn: Callable[[T], None],
    items: Iterable[T],
    workers: int,
    cancel: threading.Event | None = None,
    *,
    name: str = "modelship-worker",
    grace: float = GRACE,
    drain: bool = False,
    abandon: Callable[[], None] | None = None,
) -> None:
    """``fn(item)`` for every item on at most ``workers`` threads (see ``Pool``); a worker takes the next item
    once it is done with one, in the order given, until none is left or the pool is cancelled."""
    todo: queue.SimpleQueue[T] = queue.SimpleQueue()
    for item in items:
        todo.put(item)
    pool = Pool(cancel, grace=grace, drain=drain)

    def worker() -> None:
        while not pool.cancel.is_set():
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            fn(item)

    n = max(1, min(workers, todo.qsize()))
    pool.run(((f"{name}-{i}", worker) for i in range(n)), abandon=abandon)


def collect(fn: Callable[[T], R], items: Iterable[T], workers: int, *, name: str = "modelship-worker") -> list[R]:
    """``[fn(item) for item in items]`` on at most ``workers`` threads (``for_each``), in the items' order."""
    todo = list(enumerate(items))
    results: dict[int, R] = {}

    def one(pair: tuple[int, T]) -> None:
        results[pair[0]] = fn(pair[1])

    for_each(one, todo, workers, name=name)
    return [results[i] for i in range(len(todo))]
