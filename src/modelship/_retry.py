"""The one retry policy: exponential backoff with jitter, cancellable, bounded in count and in time, for stores,
fetch, publish and push.

Whole calls go through ``retrying``; a loop of its own (the download workers' per range, a streamed read that
resumes) keeps a ``Budget`` (a transfer that moves bytes is making progress). Either way a failing operation
makes at most ``MODELSHIP_MAX_ATTEMPTS`` attempts (``max_retries()`` retries; an operation may ask for fewer), and
none once ``MODELSHIP_RETRY_BUDGET`` seconds have passed without progress: a store that stalls for good ends the
command within about that budget plus one read timeout, with one line saying it stalled. The settings come from
``modelship.settings``; this module imports nothing above ``errors`` and ``settings``.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from . import settings
from .errors import ModelshipError, StallError, TransientError

log = logging.getLogger("modelship")

T = TypeVar("T")


def max_retries() -> int:
    """Retries one operation may make after its first attempt: ``MODELSHIP_MAX_ATTEMPTS`` - 1 (default 4)."""
    return settings.current().max_retries


# What a retry line says for a failure without a reason of its own, by the type of what caused it (an SDK wraps
# the socket's error a few levels deep). First match wins: RemoteDisconnected is a ConnectionResetError too.
_BY_CAUSE: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (
        (http.client.RemoteDisconnected, http.client.IncompleteRead, ConnectionAbortedError, BrokenPipeError),
        "connection closed",
    ),
    (ConnectionResetError, "connection reset"),
    (ConnectionRefusedError, "connection refused"),
    (TimeoutError, "timed out"),
)


def reason(e: BaseException) -> str:
    """A few words for a retry line: the error's ``reason``, else what its cause was by type, else the cause's
    class name (the message itself can be long and name hosts)."""
    if isinstance(e, TransientError) and e.reason:
        return e.reason
    chain = _causes(e)
    for types, words in _BY_CAUSE:
        if any(isinstance(x, types) for x in chain):
            return words
    return chain[-1].__class__.__name__


def _causes(e: BaseException) -> list[BaseException]:
    """``e`` and what is behind it (causes, contexts, wrapped errors), outermost first."""
    seen: list[BaseException] = []
    todo: list[object] = [e]
    while todo and len(seen) < 20:
        x = todo.pop(0)
        if not isinstance(x, BaseException) or any(x is s for s in seen):
            continue
        seen.append(x)
        todo += [x.__cause__, x.__context__, getattr(x, "error", None), getattr(x, "inner_exception", None)]
        todo += [getattr(x, "reason", None), *getattr(x, "args", ())]
    return seen


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): exponential from 0.25 s, capped, jittered."""
    return min(8.0, 0.25 * 2 ** (attempt - 1)) * (0.5 + random.random())


def _log_retry(what: str, attempt: int, delay: float, e: Exception) -> None:
    log.info("retrying %s in %.1fs: %s", what, delay, e)


def _give_up(what: str, retries: int, e: Exception) -> Exception:
    # Not a TransientError: an outer retry must not start the whole budget again.
    return ModelshipError(f"{e} (gave up after {retries} retries)")


def stalled(e: StallError, seconds: float) -> ModelshipError:
    """The one line for a store that sent nothing for the whole retry budget."""
    return ModelshipError(
        f"{e.what} stalled: no bytes for {seconds:.0f} s from {e.store}; check the network, or raise "
        f"MODELSHIP_READ_TIMEOUT (now {settings.current().read_timeout:g} s) if the store is only slow"
    )


class Budget:
    """The retries left to one operation: ``max_retries()`` at most (or ``retries``, when fewer), and none after
    ``seconds`` (default ``MODELSHIP_RETRY_BUDGET``) without progress. ``retry`` is called on each failure: it
    returns the delay before the next attempt, or raises the give-up error. A streamed read that resumes after a
    broken connection keeps one for the whole stream and calls ``progress()`` as bytes arrive."""

    def __init__(
        self,
        what: str,
        *,
        retries: int | None = None,
        seconds: float | None = None,
        delay: Callable[[int], float] = backoff,
        give_up: Callable[[str, int, Exception], Exception] = _give_up,
    ):
        self.what, self.delay, self.give_up = what, delay, give_up
        env = settings.current()
        self.retries = env.max_retries if retries is None else min(retries, env.max_retries)
        self.seconds = env.retry_budget if seconds is None else seconds
        self.attempt = 0
        self.since = time.monotonic()  # the last progress (or the start)

    def progress(self) -> None:
        """The operation got somewhere (bytes moved): the time without progress starts again."""
        self.since = time.monotonic()

    def retry(self, e: Exception, *, progressed: bool = False) -> float:
        """Delay before the next attempt after ``e``; ``progressed``: the failed attempt got somewhere."""
        now = time.monotonic()
        if progressed:
            self.since = now
        self.attempt += 1
        wait = self.delay(self.attempt)
        idle = now - self.since
        if self.attempt > self.retries or idle + wait > self.seconds:
            if isinstance(e, StallError):
                raise stalled(e, idle) from None
            raise self.give_up(self.what, self.attempt - 1, e) from None
        return wait


def retrying(
    what: str,
    fn: Callable[[], T],
    cancel: threading.Event | None = None,
    *,
    retries: int | None = None,
    retry_on: tuple[type[Exception], ...] = (TransientError,),
    delay: Callable[[int], float] = backoff,
    on_retry: Callable[[str, int, float, Exception], None] = _log_retry,
    give_up: Callable[[str, int, Exception], Exception] = _give_up,
    budget: Budget | None = None,
) -> T:
    """``fn()``, retried with ``delay(attempt)`` between tries while it raises one of ``retry_on``.

    The retries end after ``retries`` (default and at most ``max_retries()``) or once the retry budget is spent,
    with the error ``give_up`` makes (a stalled store gets its own line); a set ``cancel`` ends the wait at once
    and re-raises the last failure. A long transfer passes its own ``budget`` (instead of retries, delay,
    give_up) and calls its ``progress()`` as bytes move, so that a failure after minutes of progress is still
    retried.
    """
    budget = budget or Budget(what, retries=retries, delay=delay, give_up=give_up)
    waiter = cancel or threading.Event()
    while True:
        try:
            return fn()
        except retry_on as e:
            wait = budget.retry(e)
            on_retry(what, budget.attempt, wait, e)
            if waiter.wait(wait):
                raise
