#!/usr/bin/env python3
"""Run the fault and hostile-input tests many times and render docs/reliability.md from what they recorded.

    scripts/reliability.py --runs 30            # what `make reliability` does
    scripts/reliability.py --render-only LOG    # re-render from an existing log

The tests record into one channel: a JSON-lines log (MODELSHIP_RELIABILITY_LOG, see tests/support/record.py)
with one line per seeded run or hostile-input case and one per table of the hardening tests. This script runs
tests/reliability with MODELSHIP_FAULT_RUNS=N, then counts per cell: runs, faults injected, recoveries (runs
with a fault that still succeeded, of the runs with a fault), successes, clean failures, violations, bytes lost,
secrets found. It exits non-zero when pytest failed (the document is still written, with the violations in it).

A run of a transient-fault cell in which a fault fired fails its test unless it recovered
(support.faults.checks.recovery_problems): a cell's recovery count must equal its runs with a fault, and with
MODELSHIP_MAX_ATTEMPTS=1 (no retry at all) those cells fail. Extra knobs go through the environment
(``MODELSHIP_MAX_ATTEMPTS=1 scripts/reliability.py --runs 3 -- -k fetch``).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_FILES = ["tests/reliability"]  # faults, hostile input, cancellations, secrets, restarts


def run_tests(runs: int, log: Path, extra: list[str]) -> tuple[int, float]:
    env = {
        **os.environ,
        "MODELSHIP_FAULT_RUNS": str(runs),
        "MODELSHIP_CANCEL_RUNS": str(max(3, runs // 3)),  # each cancelled build costs a build: fewer
        "MODELSHIP_RELIABILITY_LOG": str(log),
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TEST_FILES, *extra]
    knobs = " ".join(f"{k}={env[k]}" for k in ("MODELSHIP_FAULT_RUNS", "MODELSHIP_CANCEL_RUNS"))
    print(f"$ {knobs} {' '.join(cmd[2:])}", flush=True)
    t0 = time.monotonic()
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    return rc, time.monotonic() - t0


def load(log: Path) -> tuple[list[dict], dict[str, list[dict]]]:
    """The log's runs and cases, and its tables by name (a table recorded twice: the last one counts)."""
    recs: list[dict] = []
    tables: dict[str, list[dict]] = {}
    for line in log.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            if "table" in entry:
                tables[entry["table"]] = entry["rows"]
            else:
                recs.append(entry)
    return recs, tables


def _rows_table(rows: list[dict]) -> list[str]:
    """One table over row dicts that may differ in keys: `what` first, then every other key once."""
    keys = [k for r in rows for k in r if k != "what"]
    head = ["what", *dict.fromkeys(keys)]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_clean(str(r.get(k, "")), 400) for k in head) + " |")
    return out


def _sections(tables: dict[str, list[dict]], prefix: str) -> list[dict]:
    return [row for name in sorted(tables) if name.startswith(prefix) for row in tables[name]]


_TMP = re.compile(r"/tmp/pytest-of-[^/\s']+/pytest-\d+/[^\s/']+")
_RANDOM = re.compile(r"\b(hostile|faults|t)-[0-9a-f]{12,}")
_RUN = re.compile(r"-\d+-\d{6,}\b")


def _clean(line: str, limit: int = 170) -> str:
    """An error line as the doc shows it: temp paths and random names replaced, cut, Markdown-safe."""
    line = line.removeprefix("modelship: error: ")
    line = _RANDOM.sub(r"\1-…", _TMP.sub("<tmp>", line))
    line = _RUN.sub("-…", line)
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return line.replace("|", "\\|").replace("`", "'")


def _lost(recs: list[dict]) -> str:
    bad = sum(1 for r in recs if r.get("bytes_lost", 0) < 0)
    return "0" if not bad else f"**{bad} run(s) with a violation**"


def _recovered(recs: list[dict]) -> str:
    """ "N of M": runs that recovered of those that had to (see support.record.recovery)."""
    if not any("must_recover" in r for r in recs):
        return ""
    return f"{sum(1 for r in recs if r.get('recovered'))} of {sum(1 for r in recs if r.get('must_recover'))}"


def _fault_table(recs: list[dict], outcomes: list[tuple[str, str]]) -> list[str]:
    cells: dict[str, list[dict]] = collections.defaultdict(list)
    for r in recs:
        cells[r["cell"]].append(r)
    head = ["cell", "runs", "faults injected", "recovered", *[label for _, label in outcomes]]
    head += ["violations", "bytes lost", "secrets"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for cell in sorted(cells):
        rs = cells[cell]
        counts = collections.Counter(r["outcome"] for r in rs)
        row = [f"`{cell}`", str(len(rs)), str(sum(r.get("injected", 0) for r in rs)), _recovered(rs)]
        row += [str(counts.get(key, 0)) for key, _ in outcomes]
        row += [str(counts.get("violation", 0)), _lost(rs), str(sum(r.get("secrets", 0) for r in rs))]
        out.append("| " + " | ".join(row) + " |")
    return out


def _flip_summary(recs: list[dict]) -> list[str]:
    """How many flipped-byte runs with at most three flips succeeded (the target: at least 95 %)."""
    flips = [r for r in recs if r["cell"].split("/")[-1].startswith("flip") and r.get("injected", 0) <= 3]
    if not flips:
        return []
    ok = sum(1 for r in flips if r["outcome"] == "success")
    retries = sum(r.get("retries", 0) for r in flips)
    return [
        f"Flipped bytes: {ok} of {len(flips)} runs with up to 3 flips succeeded ({100 * ok / len(flips):.1f} %, "
        f"target ≥ 95 %), with {retries} retries logged by modelship (Azure's own MD5 retries not counted).",
        "",
    ]


def _examples(recs: list[dict], n: int = 6) -> list[str]:
    """A few distinct clean-failure lines, to show what users read."""
    seen: dict[str, str] = {}
    for r in recs:
        if r["outcome"] == "clean-failure" and r.get("error"):
            key = re.sub(r"[0-9a-f]{16}…", "…", _clean(r["error"]))
            seen.setdefault(r["cell"].split("/")[-1] + ":" + key[:60], f"- `{r['cell']}`: {_clean(r['error'])}")
    return list(seen.values())[:n]


def render(recs: list[dict], tables: dict[str, list[dict]], runs: int, rc: int, seconds: float) -> str:
    by_suite: dict[str, list[dict]] = collections.defaultdict(list)
    for r in recs:
        by_suite[r["suite"]].append(r)
    network = by_suite["fetch"] + by_suite["publish"] + by_suite["push"]
    allruns = [r for r in recs if r["suite"] != "hostile"]
    total_faults = sum(r.get("injected", 0) for r in network)
    outcomes = collections.Counter(r["outcome"] for r in allruns)
    violations = sum(1 for r in recs if r["outcome"] == "violation")
    secrets = sum(r.get("secrets", 0) for r in recs) + sum(int(r.get("found", 0)) for r in tables.get("secrets", []))
    hostile = by_suite["hostile"]
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    md = [
        "# Reliability: faults, hostile input and what was lost (nothing)",
        "",
        f"_Generated by `make reliability` (`scripts/reliability.py --runs {runs}`) on {now}; "
        f"pytest exit code {rc}, {seconds / 60:.1f} min. Do not edit by hand._",
        "",
        "The promise: modelship never installs a wrong or partial model, never leaves debris behind, never prints",
        "a credential, and every failure says what happened in one line. The tests below produce the faults for",
        "real — a TCP proxy between the SDK and Azurite / a moto S3 server / a local HTTP server "
        "(`tests/support/faults/proxy.py`),",
        "real tmpfs mounts, real signals to a real `modelship fetch` process — and check every run against that",
        "promise. Fault positions are random but seeded: the seed is in the test id, so any run replays exactly",
        "(`pytest 'tests/reliability/test_faults_fetch.py::test_fetch_under_faults[azure-reset-seed7]'`). "
        "`make test` runs each cell twice; this report ran each cell "
        f"{runs} times.",
        "",
        "## Totals",
        "",
        "| what | count |",
        "|---|---|",
        f"| seeded fault runs (network, process, disk) | {len(allruns)} |",
        f"| network faults injected (fired, not just planned) | {total_faults} |",
        f"| runs that succeeded with byte-identical files | {outcomes.get('success', 0)} |",
        f"| runs that failed cleanly (one line, DEST untouched, no debris) | {outcomes.get('clean-failure', 0)} |",
        f"| runs where the signal came after the fetch finished | {outcomes.get('finished-first', 0)} |",
        f"| runs killed by the signal outside the CLI (start-up/exit) | {outcomes.get('killed-outside-the-cli', 0)} |",
        f"| hostile-input cases | {len(hostile)} |",
        f"| violations (wrong bytes, partial DEST, debris, bad cache entry, not one line) | **{violations}** |",
        f"| bytes lost | **{_lost(recs)}** |",
        f"| secrets found in any output | **{secrets}** |",
        "",
        "A *violation* fails the test; the counts above come from passing and failing runs alike. The faults of the",
        "network cells are transient, so a clean failure is not enough there: a run in which a fault fired must",
        "succeed (*recovered N of M*: M runs had a fault, N recovered; the test fails unless N = M), which is what",
        "`MODELSHIP_MAX_ATTEMPTS=1` (no retry at all) breaks (not in `stall` cells, where a short delay needs no",
        "retry, nor in push cells whose faults the Docker engine retries itself). Signal cells must complete when",
        "run again; disk cells must succeed when the model fits.",
        "",
        "## Fetch under network faults",
        "",
        "Store × fault; each run fetches the latest version (10 MiB in 4 files: a 9 MiB file in two 8 MiB chunks, a",
        "1 MiB file, a small JSON file, an empty file), half of the runs into a DEST holding an older version.",
        "Faults hit random requests at random byte positions: `reset` = TCP RST, `close` = FIN mid-message,",
        "`stall` = no bytes for 0.05-0.5 s, `status503/500` = answered by the proxy. http fetches pin sha256s with",
        "a lock file. `stall-for-good` = every model-file read goes silent for good (`MODELSHIP_READ_TIMEOUT=1`,",
        "`MODELSHIP_RETRY_BUDGET=4`): the fetch must end by itself within the budget and a few read timeouts, with one",
        "line saying the store stalled.",
        "",
        "`flip` cells fetch a 24 MiB model while the proxy XORs one body byte into a quarter of the model-file",
        "answers, 1-3 times per run. `flip`: published by modelship, so its manifest (for http: the lock made by",
        "`modelship lock`) has a sha256 per 8 MiB chunk; each range is checked as it arrives and only a damaged",
        "one is read again. `flip-no-chunks`: the same bytes stored by another tool (for http: an older lock",
        "without chunk digests); Azure checks each 4 MiB range itself (transactional MD5, retried inside the",
        "SDK), S3 and http fall back to the whole-file digest and download the file again.",
        "",
        *_fault_table(by_suite["fetch"], [("success", "successes"), ("clean-failure", "clean failures")]),
        "",
        *_flip_summary(by_suite["fetch"]),
        "Typical clean failures:",
        "",
        *(_examples(by_suite["fetch"]) or ["(none in this run)"]),
        "",
        "## Publish under network faults",
        "",
        "`-upload` faults hit request bodies (the bytes being uploaded); the others hit the answers. A run passes",
        "when the version fetches back byte-identical (a run in which a fault fired must; one without may also",
        "fail with one line, if the failed version is never picked as",
        "latest and publishing again with `--force` works).",
        "",
        *_fault_table(by_suite["publish"], [("success", "successes"), ("clean-failure", "clean failures")]),
        "",
        *_examples(by_suite["publish"]),
        "",
        "## Cancelled and killed `modelship fetch` and `publish` processes",
        "",
        "SIGINT / SIGTERM at a random moment (0.3-2.5 s after start) of a fetch whose reads stall (one for 20 s):",
        "the process must stop within 5 s with 130 / 143 and one line, DEST old or complete, no temp files; the",
        "same fetch run again must then complete (*recovered*).",
        "SIGKILL while the big file stalls: the re-run sweeps the debris and downloads only the unfinished file.",
        "`publish SIG*+rerun`: SIGINT / SIGTERM to a publish with files up and one upload in flight (stalled on",
        "Azurite; a 16 MB file being written on a local folder store): it stops within 5 s with one line saying",
        "exactly what the store holds, and the same command run again uploads only the missing files.",
        "",
        *_fault_table(
            by_suite["process"],
            [
                ("clean-failure", "stopped cleanly (130/143)"),
                ("finished-first", "finished first"),
                ("killed-outside-the-cli", "died by the signal outside the CLI"),
                ("success", "re-run completed"),
            ],
        ),
    ]
    stops = [r["stop_seconds"] for r in by_suite["process"] if "stop_seconds" in r and r["outcome"] != "violation"]
    if stops:
        md += ["", f"Time from signal to exit: median {sorted(stops)[len(stops) // 2]:.2f} s, max {max(stops):.2f} s."]
    md += [
        "",
        "## Local disk faults",
        "",
        "Disk full on a real tmpfs (random fill level, for the cache or for DEST on another file system), a cache",
        "disk smaller than the model, DEST, the cache or `lock -o` on a read-only mount, and a fetched file written to",
        "in place afterwards (DEST files are hard links to cache entries). A random fill level that leaves room for",
        "the model (its bytes + 256 KiB) must succeed (*recovered*).",
        "",
        *_fault_table(by_suite["disk"], [("success", "successes"), ("clean-failure", "clean failures")]),
        "",
        *_examples(by_suite["disk"], 8),
        "",
        "## Hostile input",
        "",
        "Each row is a test case (`tests/reliability/test_hostile_stores.py` for URIs, credentials and stores,",
        "`tests/reliability/test_hostile_cli.py` for locks, DEST, options and model folders,",
        "`tests/reliability/test_hostile_build.py` for builds and smoke runs); the line is what the user reads.",
        "",
        "| case | group | exit | result | error line |",
        "|---|---|---|---|---|",
    ]
    for r in hostile:
        result = "ok" if r["outcome"] == "pass" else "**violation**"
        detail = _clean(r["error"]) if r.get("error") else "(succeeds: " + r["cell"].replace("-", " ") + ")"
        if r["cell"] == "ten-thousand-tiny-files":
            detail = (
                f"(succeeds: publish {r.get('publish_seconds', '?')} s, fetch {r.get('fetch_seconds', '?')} s, "
                "1024 file descriptors)"
            )
        md.append(f"| `{r['cell']}` | {r.get('group', '')} | {r['rc']} | {result} | {detail} |")
    md += [
        "",
        "## Push under network faults",
        "",
        "`modelship push` through the proxy in front of the registry: the engine uploads a fresh layer of random",
        "bytes each run. A run passes when the registry, asked directly, holds the pushed tag with the digest",
        "modelship printed, the local image's config and every layer (a run in which a fault fired must); or, with",
        "no fault fired, when it failed with one line and the tag is absent or still right. `-upload` faults hit",
        "the uploaded bytes (the registry checks their digest; the engine retries those uploads itself).",
        "",
        *_fault_table(by_suite["push"], [("success", "successes"), ("clean-failure", "clean failures")]),
        "",
        *_examples(by_suite["push"]),
        "",
        "## Credential hygiene",
        "",
        "The whole demo flow (publish, resolve, fetch, lock, build, smoke test, push, inspect, failures on",
        "purpose) run with a recognisable fake secret in every credential variable, at `-vv`; every output",
        "below is searched for each secret whole and for any 16-character piece of it, raw, URL-quoted,",
        "JSON-escaped and base64 (`tests/reliability/test_hygiene_secrets.py`).",
        "",
        *_rows_table(tables.get("secrets", [])),
        "",
        "## Cancelled builds and smoke runs",
        "",
        "SIGINT / SIGTERM to `modelship build` after a seeded line of its log plus a seeded fraction of a second,",
        "and to `pytest --modelship-image` at a seeded moment of its start-up or test",
        "(`tests/reliability/test_cancel.py`): no `<none>` image, no container, no temp file, exit 130 / 143; the",
        "phases hit are listed per row.",
        "",
        *_rows_table(_sections(tables, "cancel-")),
        "",
        "## The container under test dying, restarting, or under load",
        "",
        "`tests/reliability/test_plugin_restart.py`: the app exits (mid-request or between requests, with and",
        "without a restart policy) while tests run, and 200 concurrent probes hit the ready path while the plugin",
        "polls it.",
        "",
        *_rows_table(_sections(tables, "restart-") + _sections(tables, "readiness-")),
        "",
    ]
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=30, help="seeded runs per fault cell (default 30)")
    p.add_argument("--out", default=str(ROOT / "docs" / "reliability.md"))
    p.add_argument("--log", metavar="FILE", help="keep the JSON-lines log here (default: a temp file)")
    p.add_argument("--render-only", metavar="LOG", help="render from an existing log, run nothing")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    a = p.parse_args(argv)
    if a.render_only:
        (recs, tables), rc, seconds = load(Path(a.render_only)), 0, 0.0
    else:
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(a.log) if a.log else Path(tmp) / "reliability.jsonl"
            log.write_text("")  # a kept --log from an earlier run is stale
            rc, seconds = run_tests(a.runs, log, a.pytest_args)
            recs, tables = load(log)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(render(recs, tables, a.runs, rc, seconds))
    violations = sum(1 for r in recs if r["outcome"] == "violation")
    print(f"wrote {a.out}: {len(recs)} records, {violations} violations, pytest exit {rc}")
    return 1 if rc or violations else 0


if __name__ == "__main__":
    sys.exit(main())
