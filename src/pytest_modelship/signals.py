"""Signals of the run: SIGTERM becomes Ctrl-C, so the container is always removed, and the run ends with 130/143.

A CI cancel or ``docker stop`` sends SIGTERM, which would kill pytest without any cleanup. Turned into a
``KeyboardInterrupt``, it unwinds pytest like Ctrl-C does, and the session's cleanup removes the containers.
Either signal is noted, so the exit status is the shell's 128 + signal instead of pytest's 2 for any
interruption.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest


class SignalGuard:
    """Turns SIGTERM and SIGINT into ``KeyboardInterrupt`` for the run, and remembers which one came."""

    def __init__(self, closing: Callable[[], bool]) -> None:
        self._closing = closing  # True once cleanup is under way
        self._old: dict[int, Any] = {}
        self.interrupted_by: int | None = None  # SIGINT or SIGTERM: exit status 128 + it, not pytest's 2

    def install(self) -> None:
        """Handle SIGTERM and SIGINT (main thread only; handlers someone else installed are left alone)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
            try:
                if signum not in self._old and signal.getsignal(signum) is default:
                    self._old[signum] = signal.signal(signum, self._on_signal)
            except (ValueError, OSError):
                pass

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGTERM and self._closing():
            return  # cleanup is under way: a repeated SIGTERM must not cut it short (Ctrl-C still does)
        self.interrupted_by = self.interrupted_by or signum
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def settle(self, session: pytest.Session | None) -> None:
        """After cleanup: give an interrupted run the conventional 128 + signal, then restore the handlers."""
        if self.interrupted_by is not None:
            # pytest reports any interruption as 2; a run ended by a signal keeps the conventional 128 + signal
            if session is not None and session.exitstatus == pytest.ExitCode.INTERRUPTED:
                session.exitstatus = 128 + self.interrupted_by
            # CPython remembers a KeyboardInterrupt that escaped an exec() of a string (dataclasses create
            # their methods that way, in any lazy import) and then ends the process by SIGINT instead of
            # with this exit status; the next exec() of a string clears that memory.
            exec("pass")  # noqa: S102
        self.restore()

    def restore(self) -> None:
        for signum, old in self._old.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signum, old)
        self._old.clear()
