"""Progress bars for long work (downloads, uploads, builds, pushes), on stderr, only on a TTY."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

_ENABLED: bool | None = None  # set by the CLI's --no-progress; None = decide per stream


def set_enabled(enabled: bool | None) -> None:
    global _ENABLED
    _ENABLED = enabled


def enabled(stream: TextIO | None = None) -> bool:
    if _ENABLED is not None:
        return _ENABLED
    if os.environ.get("MODELSHIP_NO_PROGRESS") or os.environ.get("CI"):
        return False
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """A thread-safe byte counter that redraws one line at most 10 times a second."""

    def __init__(self, total: int | None, desc: str, *, show: bool | None = None, stream: TextIO | None = None):
        self.total, self.desc, self.done = total, desc, 0
        self._stream = stream or sys.stderr
        self._show = enabled(self._stream) if show is None else show
        self._lock = threading.Lock()
        self._start = self._last = time.monotonic()

    def update(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if self._show and now - self._last >= 0.1:
                self._last = now
                self._draw(now)

    def _draw(self, now: float, end: str = "") -> None:
        elapsed = max(now - self._start, 1e-6)
        rate = self.done / elapsed
        line = f"{self.desc}: {human_bytes(self.done)}"
        if self.total:
            pct = 100 * self.done / self.total
            eta = (self.total - self.done) / rate if rate > 0 else 0
            line += f" / {human_bytes(self.total)} ({pct:3.0f}%) {human_bytes(rate)}/s ETA {eta:4.1f}s"
        else:
            line += f" {human_bytes(rate)}/s"
        self._stream.write("\r\x1b[2K" + line + end)
        self._stream.flush()

    def close(self) -> None:
        if self._show:
            with self._lock:
                self._draw(time.monotonic(), end="\n")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
