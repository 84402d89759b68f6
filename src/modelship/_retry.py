"""The one retry policy: exponential backoff with jitter, cancellable, for stores, fetch, publish and push.

Whole calls go through ``retrying``; the download workers' per-range loop and push's whole-push loop use the
same ``RETRIES``/``backoff`` (push with its own attempts and delays, given as arguments).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

from .errors import TransientError

log = logging.getLogger("modelship")

RETRIES = 5

T = TypeVar("T")


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): exponential from 0.25 s, capped, jittered."""
    return min(8.0, 0.25 * 2 ** (attempt - 1)) * (0.5 + random.random())


def _log_retry(what: str, attempt: int, delay: float, e: Exception) -> None:
    log.info("retrying %s in %.1fs: %s", what, delay, e)


def _give_up(what: str, retries: int, e: Exception) -> Exception:
    return TransientError(f"{e} (gave up after {retries} retries)")


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
) -> T:
    """``fn()``, retried with ``delay(attempt)`` between tries while it raises one of ``retry_on``.

    After ``retries`` retries (default ``RETRIES``) the error ``give_up`` makes is raised; a set ``cancel``
    ends the wait at once and re-raises the last failure. Byte ranges have their own loop (in the download
    workers) on the same policy; this one is for whole calls.
    """
    limit = RETRIES if retries is None else retries
    waiter = cancel or threading.Event()
    attempt = 0
    while True:
        try:
            return fn()
        except retry_on as e:
            attempt += 1
            if attempt > limit:
                raise give_up(what, limit, e) from None
            wait = delay(attempt)
            on_retry(what, attempt, wait, e)
            if waiter.wait(wait):
                raise
