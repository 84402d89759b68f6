"""The one backoff/retry policy: exponential, capped, jittered; cancellable."""

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


def retrying(what: str, fn: Callable[[], T], cancel: threading.Event | None = None) -> T:
    """``fn()``, retried with backoff while it raises TransientError (store metadata calls, uploads).

    Byte ranges have their own retry loop (in the download workers); this one is for whole calls.
    """
    waiter = cancel or threading.Event()
    attempt = 0
    while True:
        try:
            return fn()
        except TransientError as e:
            attempt += 1
            if attempt > RETRIES:
                raise TransientError(f"{e} (gave up after {RETRIES} retries)") from None
            delay = backoff(attempt)
            log.info("retrying %s in %.1fs: %s", what, delay, e)
            if waiter.wait(delay):
                raise
