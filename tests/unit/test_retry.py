"""The one retry policy (modelship._retry): the count and the time budget, on a real clock with small values;
the reason a retry line gives and the fresh resolve, told by the error's attributes, not its text."""

from __future__ import annotations

import http.client
import time

import pytest

import modelship
from modelship._retry import Budget, reason, retrying
from modelship.errors import ChecksumError, IntegrityError, ModelshipError, StallError, TransientError
from support.models import make_model


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


# ------------------------------------------------------------------------------- errors told apart by type


def test_a_retry_line_says_the_errors_reason_or_its_causes_type():
    assert reason(TransientError("GET x: answered 503", reason="HTTP 503")) == "HTTP 503"
    assert reason(StallError("reading w.bin", "S3")) == "timed out"
    assert reason(ChecksumError("reading w.bin: md5")) == "damaged bytes: the store's checksum failed"
    for cause, words in [
        (ConnectionResetError(104, "reset"), "connection reset"),
        (http.client.RemoteDisconnected("gone"), "connection closed"),  # a ConnectionResetError too
        (ConnectionRefusedError(111, "no"), "connection refused"),
        (TimeoutError("slow"), "timed out"),
    ]:
        assert reason(_raised_from(cause)) == words
    assert reason(TransientError("the text says connection reset and HTTP 503")) == "TransientError"


def _raised_from(cause: BaseException) -> TransientError:
    """A TransientError raised while handling an SDK's error that wraps ``cause``, as the stores raise them."""
    try:
        try:
            raise OSError("wrapped by an SDK") from cause
        except OSError:
            raise TransientError("GET x: ConnectionError") from None  # the context is kept, only not shown
    except TransientError as e:
        return e


@pytest.mark.parametrize("kind", [IntegrityError.CHANGED, None])
def test_only_a_source_that_changed_gets_a_fresh_resolve_whatever_its_message_says(tmp_path, kind):
    """``IntegrityError.kind``, not the text: a changed source is resolved again once, other damage is final."""
    from modelship.hookspecs import hookimpl
    from modelship.stores import plugin_manager
    from modelship.stores.local import LocalSource

    make_model(tmp_path / "x" / "1.0", {"w": 10})
    failures = [1]

    class Changing(LocalSource):
        def read(self, name, offset, length, etag):
            if failures[0]:
                failures[0] -= 1
                raise IntegrityError(f"{name}: changed while it was being read (kind {kind})", kind=kind)
            yield from super().read(name, offset, length, etag)

    def changing(uri, credential):
        source = Changing(uri, credential)
        source.root = tmp_path
        return source

    class Plugin:
        @hookimpl
        def modelship_stores(self):
            return {"mem": changing}

    plugin_manager().register(Plugin(), name="changing")
    try:
        if kind is None:
            with pytest.raises(IntegrityError, match="changed while"):
                modelship.fetch("mem://x/x", tmp_path / "o", cache_dir=tmp_path / "c", progress=False)
        else:
            result = modelship.fetch("mem://x/x", tmp_path / "o", cache_dir=tmp_path / "c", progress=False)
            assert (
                result.version == "1.0" and (tmp_path / "o" / "w").read_bytes() == (tmp_path / "x/1.0/w").read_bytes()
            )
    finally:
        plugin_manager().unregister(name="changing")
    assert failures == [0]
