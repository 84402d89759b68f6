"""`modelship fetch` as a real process, killed, interrupted and terminated at random moments.

The fetch runs through the fault proxy with stalls, so that there is a download in progress to interrupt.
SIGINT/SIGTERM must end it promptly with exit 130/143 and one line, DEST as it was (or, if the signal came
after the swap, the complete new version), and no temp files; the same fetch run again must then complete
(every signal run counts as recovered only then). SIGKILL leaves debris by nature: the re-run must sweep it,
complete, and reuse the files the killed run had already verified into the cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import modelship
from modelship.cache import Cache
from support.faults import Fault, FaultProxy, RandomFaults
from support.faults.checks import cache_problems, secrets_in
from support.record import record, record_run, recovery, rng_for, seeds
from support.trees import leftovers, snapshot, tree_sha

STALL = 20.0  # longer than any test waits: a stalled read must not hold up a cancelled fetch

pytest_plugins = ["support.faults.stores"]  # the store fixtures
pytestmark = pytest.mark.timeout(180)  # a hang is a failure, found in minutes


def _start(backend, proxy, dest: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ)
    env["AZURE_STORAGE_CONNECTION_STRING"] = backend.env_template["AZURE_STORAGE_CONNECTION_STRING"].replace(
        "{ENDPOINT}", proxy.url if proxy else backend.direct_endpoint
    )
    return subprocess.Popen(
        [sys.executable, "-m", "modelship.cli", "fetch", backend.uri(), str(dest), "--no-progress", "--json", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)  # a real clock: polling another process
    return False


def _cached(cache: Cache) -> int:
    return sum(1 for p in (cache.root / "sha256").rglob("*") if p.is_file())


def _prefill(backend, monkeypatch, dest: Path, seed: int) -> dict:
    """Half the runs start from an older fetched version in DEST, half from nothing."""
    if seed % 2 == 0:
        backend.env(monkeypatch)
        modelship.fetch(backend.uri(), dest, version="1.0.0", progress=False)
    return snapshot(dest)


def _stop(proc: subprocess.Popen, sig: str, what: str = "publish") -> tuple[str, float]:
    """Send ``sig``; the process must end within 15 s. Returns its stderr and how long it took."""
    sent = time.monotonic()
    proc.send_signal(getattr(signal, sig))
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"{sig} did not stop the {what} within 15 s (stderr: {err[-300:]})")
    return err, time.monotonic() - sent


@pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_at_a_random_moment(azurite_backend, tmp_path, monkeypatch, sig, seed):
    backend = azurite_backend
    rng = rng_for("signal", sig, seed)
    dest = tmp_path / "out" / "model"
    dest.parent.mkdir()
    before = _prefill(backend, monkeypatch, dest, seed)
    # Every model-file read stalls a little, one of them for long: there is always something in flight.
    long_one = [True]

    def make(r, req):
        if long_one[0] and req.range and rng.random() < 0.3:
            long_one[0] = False
            return Fault.stall(r.randrange(2000), STALL)
        return Fault.stall(r.randrange(2000), r.uniform(0.05, 0.3))

    plan = RandomFaults(rng.randrange(1 << 30), make, match=lambda req: req.range is not None, p=1.0, budget=50)
    delay = rng.uniform(0.3, 2.5)
    with FaultProxy(backend.upstream, plan=plan, lifetime=60) as proxy:
        proc = _start(backend, proxy, dest)
        time.sleep(delay)  # a real clock: the signal lands at a random moment of the run
        err, took = _stop(proc, sig, "fetch")
    signum = getattr(signal, sig)
    expected_rc = 128 + signum  # 130 / 143
    problems = []
    if proc.returncode == 0:
        outcome = "finished-first"
        if tree_sha(dest) != tree_sha(backend.v2):
            problems.append("DEST differs from the source")
    elif proc.returncode == -signum:
        # The signal came while Python was starting up or shutting down, outside the CLI's handlers: the process
        # died by the signal itself (a shell reports 128+N, the same 130/143) before or after the fetch.
        outcome = "killed-outside-the-cli"
        if snapshot(dest) != before and tree_sha(dest) != tree_sha(backend.v2):
            problems.append("partial DEST: neither the old nor the complete new version")
    else:
        outcome = "clean-failure"
        if proc.returncode != expected_rc:
            problems.append(f"exit code {proc.returncode}, expected {expected_rc}: {err.strip()[-300:]}")
        if len(err.strip().splitlines()) != 1:
            problems.append(f"stderr is not one line: {err.strip()[-300:]}")
        now = snapshot(dest)
        if now != before and tree_sha(dest) != tree_sha(backend.v2):
            problems.append("partial DEST: neither the old nor the complete new version")
    if took > 5:
        problems.append(f"took {took:.1f}s to stop after {sig}")
    problems += leftovers(tmp_path / "out")
    problems += cache_problems(Cache())
    secrets = secrets_in(err, backend.secrets)
    if secrets:
        problems.append("the account key was printed")
    # Recovery: the same command, run again without faults, completes whatever the signal left.
    rerun = _start(backend, None, dest)
    _, rerun_err = rerun.communicate(timeout=60)
    recovered = rerun.returncode == 0 and tree_sha(dest) == tree_sha(backend.v2)
    if not recovered:
        problems.append(f"the re-run after {sig} did not complete: {rerun.returncode} {rerun_err.strip()[-300:]}")
    problems += leftovers(tmp_path / "out")
    record_run(
        "process",
        sig,
        outcome,
        problems,
        seed=seed,
        injected=1,
        **recovery(needed=True, ok=recovered),
        secrets=secrets,
        error=err.strip()[-200:] if proc.returncode else "",
        delay=round(delay, 2),
        stop_seconds=round(took, 2),
    )
    assert not problems, problems


@pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed{s}")
def test_sigkill_mid_fetch_then_rerun_reuses_verified_files(azurite_backend, tmp_path, monkeypatch, seed):
    backend = azurite_backend
    rng = rng_for("sigkill", seed)
    dest = tmp_path / "out" / "model"
    dest.parent.mkdir()
    before = _prefill(backend, monkeypatch, dest, seed)
    cache = Cache()
    already = _cached(cache)
    # The big file's reads stall; the small files finish and are verified into the cache meanwhile.
    plan = RandomFaults(
        rng.randrange(1 << 30),
        lambda r, req: Fault.stall(r.randrange(3000), STALL),
        match=lambda req: "w.bin" in req.target and req.method == "GET",
        p=1.0,
        budget=100,
    )
    with FaultProxy(backend.upstream, plan=plan, lifetime=60) as proxy:
        proc = _start(backend, proxy, dest)
        small = sum(1 for p in backend.v2.rglob("*") if p.is_file()) - 1  # all but w.bin
        reached = _wait_for(lambda: _cached(cache) >= already + small, 20)
        time.sleep(rng.uniform(0, 0.5))  # a real clock: kill at a random moment of the stalled download
        proc.kill()
        proc.communicate()
    assert reached, "the small files never reached the cache while the big one was stalled"
    assert proc.returncode == -signal.SIGKILL
    assert snapshot(dest) == before  # killed before the swap: DEST as it was
    debris = leftovers(tmp_path / "out") + [p.name for p in cache.tmp.iterdir()]

    rerun = _start(backend, None, dest)
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    result = json.loads(out)
    assert tree_sha(dest) == tree_sha(backend.v2)
    assert result["downloaded_files"] == 1 and result["cached_files"] == small  # only the stalled file again
    assert leftovers(tmp_path / "out") == [] and cache_problems(Cache()) == []
    record(
        "process",
        "SIGKILL+rerun",
        seed=seed,
        outcome="success",
        injected=1,
        **recovery(needed=True, ok=True),
        bytes_lost=0,
        secrets=0,
        debris_swept=len(debris),
    )


# ------------------------------------------------------------------------------------- interrupted publish


def _publish_cmd(model: Path, uri: str) -> list[str]:
    return [sys.executable, "-m", "modelship.cli", "publish", str(model), uri, "--version", "2.0.0", "--no-progress"]


def _check_interrupted(proc, err: str, took: float, sig: str, where: str, up: int, total: int) -> list[str]:
    word = {"SIGINT": "interrupted", "SIGTERM": "terminated"}[sig]
    expected = (
        f"modelship: {word}; {where} is left incomplete: .modelship-publishing and {up} of {total} files are up "
        "(an incomplete version is never picked as latest); run the same command again to resume it, "
        "or pass --force to start over"
    )
    problems = []
    if proc.returncode != 128 + getattr(signal, sig):
        problems.append(f"exit code {proc.returncode}: {err.strip()[-300:]}")
    if err.strip() != expected:
        problems.append(f"stderr is not the one expected line: {err.strip()[-400:]!r}")
    if took > 5:
        problems.append(f"took {took:.1f} s to stop after {sig}")
    return problems


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupted_publish_says_what_is_left_and_resumes(azurite_backend, blob_service, tmp_path, sig):
    """SIGINT/SIGTERM while the big file's upload stalls (the three small files are up): the line says exactly
    what the store holds, and the same command run again uploads only the missing file, without --force."""
    backend = azurite_backend
    uri = f"{backend.uri()}-interrupted-{sig}-{time.monotonic_ns()}"
    container = blob_service.get_container_client(uri.split("/")[3])
    prefix = uri.split("/", 4)[4] + "/2.0.0/"
    small = {f"{prefix}{p}" for p in ("b.bin", "empty.txt", "sub/cfg.json")}
    stalled = lambda req: req.method == "PUT" and req.target.split("?")[0].endswith("/w.bin")  # noqa: E731
    env = dict(os.environ)
    targets: list[str] = []

    def plan(req):
        targets.append(f"{req.method} {req.target.split('?')[0]}")
        return Fault.stall(1000, STALL, direction="request") if stalled(req) else None

    with FaultProxy(backend.upstream, plan=plan, lifetime=60) as proxy:
        env["AZURE_STORAGE_CONNECTION_STRING"] = backend.env_template["AZURE_STORAGE_CONNECTION_STRING"].replace(
            "{ENDPOINT}", proxy.url
        )
        proc = subprocess.Popen(_publish_cmd(backend.v2, uri), env=env, stderr=subprocess.PIPE, text=True)
        names = lambda: {b.name for b in container.list_blobs(name_starts_with=prefix)}  # noqa: E731
        reached = _wait_for(lambda: small <= names() and any(stalled_t.endswith("/w.bin") for stalled_t in targets), 30)
        err, took = _stop(proc, sig)
        left = names()
        targets.clear()
        # the same command again, through the proxy (now without faults): it resumes
        proxy.plan = lambda req: targets.append(f"{req.method} {req.target.split('?')[0]}")
        rerun = subprocess.run(_publish_cmd(backend.v2, uri), env=env, capture_output=True, text=True, timeout=60)
    assert reached, f"the small files never got up while w.bin stalled (stderr: {proc.stderr})"
    problems = _check_interrupted(proc, err, took, sig, f"{uri}/2.0.0", 3, 4)
    if left != small | {f"{prefix}.modelship-publishing"}:
        problems.append(f"the store holds {sorted(left)}, not what the line says")
    if (
        rerun.returncode != 0
        or "resuming the publish" not in rerun.stderr
        or "3 of 4 files are already up" not in rerun.stderr
    ):
        problems.append(f"the same command did not resume: {rerun.returncode} {rerun.stderr.strip()[-300:]}")
    uploads = sorted(t.rsplit("/2.0.0/", 1)[-1] for t in targets if t.startswith("PUT ") and "/2.0.0/" in t)
    if uploads != [".modelship-publishing", "modelship.json", "w.bin"]:
        problems.append(f"the re-run uploaded {uploads}, not just the missing file")
    with pytest.MonkeyPatch.context() as mp:
        backend.env(mp)
        got = modelship.fetch(uri, tmp_path / "check", progress=False)
    if got.version != "2.0.0" or tree_sha(tmp_path / "check") != tree_sha(backend.v2):
        problems.append("the resumed version does not fetch back byte-identical")
    record_run(
        "process",
        f"publish {sig}+rerun (azure)",
        "clean-failure",
        problems,
        seed=0,
        injected=1,
        **recovery(needed=True, ok=rerun.returncode == 0),
        secrets=secrets_in(err + rerun.stderr, backend.secrets),
        error=err.strip(),
        stop_seconds=round(took, 2),
    )
    assert not problems, problems


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupted_publish_to_a_local_folder_resumes(tmp_path, sig):
    """The same on a local folder store: twelve 16 MB files, the signal as soon as the first one is up."""
    model = tmp_path / "model"
    model.mkdir()
    for i in range(12):
        (model / f"f{i:02d}.bin").write_bytes(os.urandom(16 * 1024 * 1024))
    store = tmp_path / "store"
    version_dir = store / "m" / "2.0.0"
    uri = str(store / "m")
    proc = subprocess.Popen(_publish_cmd(model, uri), stderr=subprocess.PIPE, text=True)
    files_up = lambda: sorted(p.name for p in version_dir.glob("*.bin")) if version_dir.is_dir() else []  # noqa: E731
    reached = _wait_for(lambda: files_up() != [], 60)
    err, took = _stop(proc, sig)
    assert reached, "no file got up"
    assert proc.returncode != 0, "the publish finished before the signal: make the model larger"
    up = files_up()
    problems = _check_interrupted(proc, err, took, sig, uri + "/2.0.0", len(up), 12)
    if sorted(p.name for p in version_dir.iterdir()) != sorted([".modelship-publishing", *up]):
        problems.append(f"the store holds {sorted(p.name for p in version_dir.iterdir())} (temp files?)")
    rerun = subprocess.run(_publish_cmd(model, uri), capture_output=True, text=True, timeout=120)
    if rerun.returncode != 0 or f"{len(up)} of 12 files are already up" not in rerun.stderr:
        problems.append(f"the same command did not resume: {rerun.returncode} {rerun.stderr.strip()[-300:]}")
    got = modelship.fetch(uri, tmp_path / "check", progress=False)
    if got.version != "2.0.0" or tree_sha(tmp_path / "check") != tree_sha(model):
        problems.append("the resumed version does not fetch back byte-identical")
    if (version_dir / ".modelship-publishing").exists():
        problems.append("the marker is still there after the resumed publish")
    record_run(
        "process",
        f"publish {sig}+rerun (local)",
        "clean-failure",
        problems,
        seed=0,
        injected=1,
        **recovery(needed=True, ok=rerun.returncode == 0),
        secrets=0,
        error=err.strip(),
        stop_seconds=round(took, 2),
    )
    assert not problems, problems
