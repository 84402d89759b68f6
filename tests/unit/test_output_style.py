"""Output people read: one unit style in bars and result lines, and a bar on a terminal that reports no width."""

from __future__ import annotations

import sys

from modelship.progress import human_bytes
from support.terminal import run_in_pty, screen_lines

BAR = """
import time
from modelship.progress import Progress, human_bytes
p = Progress(350_000_000, "fetch model")
for _ in range(35):
    p.update(10_000_000)
    time.sleep(0.01)
p.close()
print("fetched (" + human_bytes(350_000_000) + ")", flush=True)
"""


def test_a_result_line_says_the_amount_as_its_bar_did():
    assert [human_bytes(n) for n in (0, 17, 1536, 350_000_000, 32 * 1024**2, 3 * 1024**3)] == [
        "0B", "17B", "1.50kB", "334MB", "32.0MB", "3.00GB",
    ]  # fmt: skip
    from tqdm import tqdm

    # the same digits as tqdm's own units over every range (modelship imports tqdm only to draw a bar)
    for n in [1000, 1023, 1024, 10_230, 102_400, 1_048_000, 5 * 1024**5, 2 * 1024**8, 3 * 1024**9]:
        for k in (n, n + 1, n * 0.999, n * 1.001, -n):
            assert human_bytes(k) == tqdm.format_sizeof(k, "B", 1024), k
    rc, out = run_in_pty([sys.executable, "-c", BAR], columns=100, env={"CI": "", "MODELSHIP_NO_PROGRESS": ""})
    lines = screen_lines(out)
    assert rc == 0 and "fetched (334MB)" in lines, out
    assert [line for line in lines if line.startswith("fetch model: 100%") and "334MB/334MB" in line], lines


def test_a_terminal_that_reports_zero_columns_still_gets_a_visible_bar():
    # a fresh pty reports 0 x 0 until someone sets its size; COLUMNS unset too: the bar falls back to 80
    rc, out = run_in_pty(
        [sys.executable, "-c", BAR], columns=0, env={"COLUMNS": "", "CI": "", "MODELSHIP_NO_PROGRESS": ""}
    )
    bars = [line for line in screen_lines(out) if line.startswith("fetch model:")]
    assert rc == 0 and bars, out
    assert "100%" in bars[-1] and "334MB/334MB" in bars[-1] and 40 < len(bars[-1]) < 80, bars
