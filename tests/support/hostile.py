"""Hostile and malformed input, what its cases share (test_hostile_stores.py, test_hostile_cli.py): a case, what
it runs against, and the checks every case gets: its one-line error and exit code (or, where the input is odd
but legitimate, a correct result), nothing ever written outside DEST, no secret echoed, a row in the
reliability log. The stores the cases read are prepared by tests/reliability/conftest.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelship import cli
from modelship.cache import Cache
from support.faults.checks import cache_problems, secrets_in
from support.record import record
from support.trees import leftovers, tree_sha

SECRET_SIG = "SECRETSIG0123456789abcdefXYZ"


@dataclass
class Ctx:
    """What the cases run against; ``az``/``s3``/``local`` build URIs below the prepared stores."""

    tmp: Path
    container: str
    bucket: str
    local: Path
    lock: Path
    blob_endpoint: str = ""  # Azurite's, with the account path: http://127.0.0.1:PORT/devstoreaccount1
    account_key: str = ""

    def az(self, prefix: str) -> str:
        return f"az://devstoreaccount1/{self.container}/{prefix}"

    def s3(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"


S3_NAMES = {
    "dotdot": "../../escape",
    "dot": "./here",
    "backslash": "a\\..\\..\\escape",
    "nul": "n\x00ul",
    "control": "c\x01d",
    "del": "d\x7fl",
    "tab": "t\tab",
    "absolute": "/etc/passwd",
}


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    argv: Callable[[Ctx, Path], list[str]]  # (ctx, dest) → command line
    rc: int
    needle: str  # in the error line; for rc 0, in stdout
    edit_lock: Callable[[dict], object] | None = None
    raw_lock: str | None = None
    env: Callable[[Ctx], dict[str, str | None]] | None = None  # variables to set (None: unset) for this case


def _fetch_at(where: str, prefix: str, *extra: str) -> Callable[[Ctx, Path], list[str]]:
    def argv(ctx: Ctx, dest: Path) -> list[str]:
        uri = {"az": ctx.az, "s3": ctx.s3, "local": lambda p: str(ctx.local / p)}[where](prefix)
        return ["fetch", uri, str(dest), *extra]

    return argv


def check_case(
    env: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, case: Case
) -> None:
    """Run ``case`` through the CLI in this process and check what every hostile input must get."""
    ctx = env
    work = tmp_path / "work"
    work.mkdir()
    dest = work / "model"
    if case.raw_lock is not None or case.edit_lock is not None:
        text = case.raw_lock
        if text is None:
            doc = json.loads(ctx.lock.read_text())
            case.edit_lock(doc)
            text = json.dumps(doc)
        (ctx.tmp / "edited.lock").write_text(text)
    for key, value in (case.env(ctx) if case.env else {}).items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    protected = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (ctx.tmp / "good").rglob("*") if p.is_file()}
    capsys.readouterr()
    rc = cli.main([*case.argv(ctx, dest), "--no-progress"])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    problems = []
    if rc != case.rc:
        problems.append(f"exit {rc}, expected {case.rc}: {err.strip()[-300:]}")
    if case.rc == 0:
        if case.needle not in out:
            problems.append(f"{case.needle!r} not in the output")
        if (dest / "escape").exists() or (work / "escape").exists():
            problems.append("odd files in or next to DEST")
    else:
        if len(lines) != 1 or not lines[0].startswith("modelship: error: "):
            problems.append(f"not one error line: {err.strip()[-300:]}")
        elif case.needle not in lines[0]:
            problems.append(f"{case.needle!r} not in {lines[0][:300]!r}")
        if "unexpected" in err or "Traceback" in err:
            problems.append("unmapped exception")
        if dest.exists():
            problems.append("DEST was created by a failed command")
    if [p.name for p in work.iterdir() if p.name != "model"] or leftovers(work):
        problems.append(f"files written outside DEST: {sorted(p.name for p in work.iterdir())}")
    if any(hashlib.sha256(p.read_bytes()).hexdigest() != sha for p, sha in protected.items()):
        problems.append("the local model folder was changed")
    problems += cache_problems(Cache())
    secrets = secrets_in(out + err, [SECRET_SIG])
    if secrets:
        problems.append("the SAS signature was echoed")
    record(
        "hostile",
        case.id,
        group=case.group,
        expected_rc=case.rc,
        rc=rc,
        needle=case.needle,
        error=lines[-1] if rc and lines else "",
        outcome="pass" if not problems else "violation",
        secrets=secrets,
        injected=1,
        bytes_lost=0,
    )
    assert not problems, problems
    if case.id == "zero-byte-files":
        assert tree_sha(dest) == tree_sha(ctx.tmp / "zero") and all(
            p.stat().st_size == 0 for p in dest.rglob("*.*") if p.name != "modelship.json"
        )
