"""The one retry policy (modelship._retry): the count and the time budget, on a real clock with small values."""

from __future__ import annotations

import time

import pytest

from modelship._retry import Budget, retrying
from modelship.errors import ModelshipError, StallError, TransientError


def _failing(times: int, slow: float = 0.0, progress: Budget | None = None):
    """A call that fails ``times`` times (each after ``slow`` seconds, reporting progress meanwhile), then works."""
    calls = [0]

    def fn() -> str:
        calls[0] += 1
        time.sleep(slow)  # the transfer takes a while...
        if progress is not None:
            progress.progress()  # ...and moves bytes
        if calls[0] <= times:
            raise TransientError(f"reset #{calls[0]}")
        return "done"

    return fn, calls


def test_retries_end_after_the_count(monkeypatch):
    monkeypatch.setenv("MODELSHIP_RETRY_BUDGET", "60")
    fn, calls = _failing(10)
    with pytest.raises(ModelshipError, match=r"reset #4 \(gave up after 3 retries\)") as e:
        retrying("x", fn, retries=3, delay=lambda n: 0.0)
    assert calls[0] == 4 and not isinstance(e.value, TransientError)  # an outer retry does not start over


def test_retries_end_once_the_budget_is_spent_without_progress(monkeypatch):
    monkeypatch.setenv("MODELSHIP_RETRY_BUDGET", "0.3")
    fn, calls = _failing(100, slow=0.1)
    start = time.monotonic()
    with pytest.raises(ModelshipError, match="gave up after"):
        retrying("x", fn, retries=100, delay=lambda n: 0.0)
    assert time.monotonic() - start < 0.6 and 3 <= calls[0] <= 5


def test_a_transfer_that_makes_progress_keeps_its_retries(monkeypatch):
    """Each attempt takes longer than the whole budget but moves bytes: its failures are still retried."""
    monkeypatch.setenv("MODELSHIP_RETRY_BUDGET", "0.1")
    budget = Budget("upload", delay=lambda n: 0.0)
    fn, calls = _failing(2, slow=0.15, progress=budget)
    assert retrying("upload", fn, budget=budget) == "done" and calls[0] == 3


def test_a_stall_ends_with_the_stall_line(monkeypatch):
    monkeypatch.setenv("MODELSHIP_RETRY_BUDGET", "0.2")
    monkeypatch.setenv("MODELSHIP_READ_TIMEOUT", "0.1")

    def stalled() -> None:
        time.sleep(0.1)  # a read timeout's worth of silence
        raise StallError("reading w.bin", "the blob service at http://127.0.0.1:1/acct")

    with pytest.raises(ModelshipError) as e:
        retrying("reading w.bin", stalled, delay=lambda n: 0.0)
    assert str(e.value) == (
        "reading w.bin stalled: no bytes for 0 s from the blob service at http://127.0.0.1:1/acct; check the "
        "network, or raise MODELSHIP_READ_TIMEOUT (now 0.1 s) if the store is only slow"
    )
