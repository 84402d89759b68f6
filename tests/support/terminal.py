"""Running a command under a real pseudo-terminal of a given width, and reading the screen it drew."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ETA = re.compile(r"ETA (\S+)")  # the ETA field of a progress bar


def run_in_pty(
    cmd: list[str], *, columns: int, env: dict[str, str], stdout_too: bool = True, timeout: float = 300
) -> tuple[int, str]:
    """Run ``cmd`` with stderr (and stdout) on a pty ``columns`` wide, as a terminal would be; (rc, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    full_env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm", **env}
    out = slave if stdout_too else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=slave, env=full_env)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the pty
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def screen_lines(output: str) -> list[str]:
    """Every line as drawn: each redraw after a carriage return is a line of its own, escapes removed."""
    text = ANSI.sub("", output.replace("\r\n", "\n"))
    return [seg.rstrip(" ") for line in text.split("\n") for seg in line.split("\r")]
