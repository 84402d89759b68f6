"""Progress bars for long work (downloads, uploads, builds, pushes): tqdm, on stderr, only on a TTY.

tqdm fits the line to the terminal (and follows a resize), keeps ETAs sane and redraws in place; this
module only decides *whether* a bar is shown (``--no-progress``, ``MODELSHIP_NO_PROGRESS``, ``CI``, a TTY)
and makes one bar safe to update from the download threads. tqdm is imported only when a bar is drawn: it
is 60 ms of every command's start otherwise (CI, scripts and tests run without bars).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from typing import Any, TextIO

from . import settings

_ENABLED: bool | None = None  # set by the CLI's --no-progress; None = decide per stream


def set_enabled(enabled: bool | None) -> None:
    """Force bars on or off for this process (None: decide from the environment and the stream)."""
    global _ENABLED
    _ENABLED = enabled


def enabled(stream: TextIO | None = None) -> bool:
    """Whether bars are drawn on ``stream`` (default stderr)."""
    if _ENABLED is not None:
        return _ENABLED
    if settings.current().no_progress:  # MODELSHIP_NO_PROGRESS or CI set (not to 0, false, no, off)
        return False
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def human_bytes(n: float) -> str:
    """``350_000_000`` -> ``334MB``: the bars' own style (tqdm's ``format_sizeof``: binary units, three
    digits; tests/unit/test_output_style.py holds them equal), so a result line says the same amount as the
    bar above it did."""
    if abs(n) < 999.5:
        return f"{n:.0f}B"
    for unit in ("", "k", "M", "G", "T", "P", "E", "Z"):
        if abs(n) < 999.5:
            if abs(n) < 99.95:
                return f"{n:1.2f}{unit}B" if abs(n) < 9.995 else f"{n:2.1f}{unit}B"
            return f"{n:3.0f}{unit}B"
        n /= 1024
    return f"{n:3.1f}YB"


# Layouts from the widest to the narrowest; each with the width its numbers can take (a steady reserve, so a
# line does not switch layout as the numbers grow). The description is shortened only when even the
# narrowest numbers leave it too little room.
_FULL = "{percentage:3.0f}% {n_fmt}B/{total_fmt}B {rate_fmt} ETA {remaining}"
_COMPACT = "{percentage:3.0f}% {n_fmt}B {rate_fmt} ETA {remaining}"
_NO_TOTAL = "{n_fmt}B {rate_fmt}"
_WIDTH = {
    _FULL: len("100% 1000MB/1000MB 1000MB/s ETA 00:00"),
    _COMPACT: len("100% 1000MB 1000MB/s ETA 00:00"),
    _NO_TOTAL: len("1000MB 1000MB/s"),
}
_MIN_BAR = 10  # narrower than this, the bar graphic is left out: the numbers matter more


@functools.cache
def _bar_class() -> type:
    from tqdm import tqdm

    class _Bar(tqdm):
        """tqdm with a layout for narrow terminals: the numbers always show, then the description, and the
        bar graphic only where there is room (tqdm alone cuts the line's end, i.e. the numbers)."""

        monitor_interval = 0  # no tqdm monitor thread: bars here are redrawn by their updates

        @property
        def format_dict(self) -> dict:
            d = super().format_dict
            ncols = d.get("ncols") or 80
            desc = d.get("prefix") or ""
            head = len(desc) + 2  # "DESC: "
            if not d.get("total"):
                stats = _NO_TOTAL
            elif ncols - head - _WIDTH[_FULL] >= _MIN_BAR + 2:
                bar = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B {rate_fmt} ETA {remaining}"
                return {**d, "bar_format": bar}
            else:
                stats = _FULL if ncols - head >= _WIDTH[_FULL] else _COMPACT
            room = ncols - _WIDTH[stats] - 2
            if len(desc) > room:
                desc = desc[: max(room - 1, 1)] + "…"
            return {**d, "prefix": desc, "bar_format": "{desc}: " + stats}

    return _Bar


def _width(stream: TextIO) -> dict[str, object]:
    """tqdm's width options: follow the terminal when it reports a size, else $COLUMNS, else 80."""
    try:
        if os.get_terminal_size(stream.fileno()).columns > 0:
            return {"dynamic_ncols": True}
    except (AttributeError, OSError, ValueError):
        pass  # not a terminal, or one that reports no size (a fresh pty)
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    return {"ncols": (columns if columns > 0 else 80) - 1}  # one spare column: a full line never wraps


class Progress:
    """A thread-safe byte counter drawn as one tqdm line; ``total`` may grow while it runs (push layers)."""

    def __init__(self, total: int | None, desc: str, *, show: bool | None = None, stream: TextIO | None = None):
        self._stream = stream or sys.stderr
        show = enabled(self._stream) if show is None else show
        self._lock = threading.Lock()
        self.desc = desc
        self.done = 0
        self._total = total or None
        self._bar: Any = None  # a tqdm bar when shown
        if show:
            self._bar = _bar_class()(
                total=self._total,
                desc=desc,
                file=self._stream,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                mininterval=0.1,
                leave=True,
                **_width(self._stream),
            )

    @property
    def total(self) -> int | None:
        return self._total

    @total.setter
    def total(self, value: int | None) -> None:
        with self._lock:
            self._total = value or None
            if self._bar is not None:
                self._bar.total = self._total
            self._clamp()

    def update(self, n: int) -> None:
        """Count ``n`` more bytes (negative when a retried transfer starts over)."""
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
            self._clamp()

    def _clamp(self) -> None:
        # a total that turned out low (a push discovering layers) must not show over 100% or a negative ETA
        if self._total is not None and self.done > self._total:
            self._total = self.done
            if self._bar is not None:
                self._bar.total = self.done

    def write(self, line: str) -> None:
        """Print a line above the bar (the bar is redrawn below it), or plainly when no bar is shown."""
        with self._lock:
            if self._bar is None:
                print(line, file=self._stream, flush=True)
            else:
                self._bar.write(line, file=self._stream)

    def close(self) -> None:
        """Draw the final state and end the line; idempotent."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
