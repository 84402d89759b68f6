"""The one worker pool (modelship._workers): the first failure stops the rest, an interrupt cancels and leaves
stuck workers behind (after their grace, with ``abandon``), ``drain`` waits for every worker on a failure."""

from __future__ import annotations

import threading
import time

import pytest

from modelship import _workers
from modelship._workers import Cancelled, Pool, collect, for_each


def test_every_item_is_done_on_at_most_the_workers_asked_for():
    seen, names, lock = [], set(), threading.Lock()

    def fn(item: int) -> None:
        time.sleep(0.01)
        with lock:
            seen.append(item)
            names.add(threading.current_thread().name)

    for_each(fn, range(40), 3, name="t")
    assert sorted(seen) == list(range(40)) and names <= {"t-0", "t-1", "t-2"} and len(names) > 1


def test_the_first_failure_cancels_the_others_and_is_raised():
    cancel, started = threading.Event(), []

    def fn(item: int) -> None:
        started.append(item)
        if item == 2:
            raise ValueError("item 2 failed")
        if cancel.wait(5):  # a long item that stops at its next step once cancelled
            raise Cancelled

    t0 = time.monotonic()
    with pytest.raises(ValueError, match="item 2 failed"):
        for_each(fn, range(100), 3, cancel)
    assert cancel.is_set() and len(started) < 10 and time.monotonic() - t0 < 2


def test_an_interrupt_cancels_and_abandons_a_worker_stuck_past_its_grace():
    """The main thread's wait ends with KeyboardInterrupt (raised here by ``tick``, as SIGINT would be)."""
    stuck, abandoned = threading.Event(), []
    pool = Pool(grace=0.2)

    def worker() -> None:
        stuck.wait(10)  # a stalled read that does not look at cancel

    def tick() -> None:
        raise KeyboardInterrupt

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pool.run([("w", worker)], tick=tick, abandon=lambda: abandoned.append(True))
    assert pool.cancel.is_set() and abandoned == [True] and time.monotonic() - t0 < 1.5
    stuck.set()


def test_drain_waits_for_every_worker_on_a_failure():
    """A publish counts what is up when it fails: each upload stops at its next step, none is left running."""
    finished = []
    pool = Pool(grace=0.0, drain=True)

    def failing() -> None:
        raise OSError("disk")

    def slow() -> None:
        time.sleep(0.5)  # a step that does not look at cancel
        finished.append(True)

    with pytest.raises(OSError, match="disk"):
        pool.run([("a", failing), ("b", slow)], abandon=lambda: pytest.fail("nothing is left behind to abandon"))
    assert finished == [True]


def test_collect_returns_the_results_in_the_items_order():
    def slow_square(n: int) -> int:
        time.sleep(0.001 * (20 - n))  # later items finish first
        return n * n

    assert collect(slow_square, range(20), 4) == [n * n for n in range(20)]
    with pytest.raises(ZeroDivisionError):
        collect(lambda n: 1 // (n - 7), range(20), 4)


def test_the_pool_returns_when_its_workers_do_not_at_its_next_poll(monkeypatch):
    # the main thread polls every POLL seconds for signals; finished work must not wait for that poll (a
    # no-change assemble took 0.1 s more per digest pass for it)
    monkeypatch.setattr(_workers, "POLL", 30.0)
    start = time.monotonic()
    assert _workers.collect(lambda x: x * 2, range(8), 4) == [0, 2, 4, 6, 8, 10, 12, 14]
    _workers.for_each(lambda _: None, [1], 1)
    assert time.monotonic() - start < 10  # not 2 x 30 s


def test_an_interrupt_python_swallowed_is_raised_at_the_next_check(capsys):
    """A signal handler's KeyboardInterrupt raised while a weakref callback runs (a clean-clone CI run: an
    import lock's) is printed as "Exception ignored" and lost; kept, it ends the wait at the next check."""
    import weakref

    class Obj:
        pass

    def interrupted_callback(_ref: object) -> None:
        raise KeyboardInterrupt  # as the SIGINT handler raises it, where Python cannot pass it on

    def fn(item: int) -> None:
        if item == 0:
            obj = Obj()
            ref = weakref.ref(obj, interrupted_callback)
            del obj  # the callback runs now; Python swallows what it raises
            assert ref() is None
        time.sleep(3)  # without the kept interrupt, the work would simply go on

    t0 = time.monotonic()
    with _workers.keep_interrupts(), pytest.raises(KeyboardInterrupt):
        for_each(fn, range(2), 2)
    assert time.monotonic() - t0 < 2, "the swallowed interrupt was not raised"
    assert "Exception ignored" not in capsys.readouterr().err
    with _workers.keep_interrupts():
        for_each(lambda _: None, range(2), 2)  # nothing left over for the next pool
