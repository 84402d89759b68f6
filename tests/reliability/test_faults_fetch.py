"""Fetch under network faults, produced for real by a TCP proxy between the SDK and the store.

Each cell (store × fault kind) runs MODELSHIP_FAULT_RUNS times with seeded random fault positions (the seed is
in the test id, so a failing run replays exactly). Every run must either succeed with byte-identical files or
fail with one clean error line and DEST untouched; never leave temp files; never cache a wrong file; never
print a credential. The faults are transient, so a run in which one fired must succeed: a clean failure there
means a retry is missing (with MODELSHIP_MAX_ATTEMPTS=1 these cells fail), and each cell's recovery count is
recorded for docs/reliability.md.
"""

from __future__ import annotations

import json
import logging
import random
import time

import pytest

import modelship
from modelship.cache import Cache
from support.cli import run_in_process
from support.faults import Fault, FaultProxy, RandomFaults, Request, response_fault
from support.faults.checks import cache_problems, error_line_problems, recovery_problems, secrets_in
from support.record import record_run, recovery, rng_for, seeds
from support.trees import leftovers, snapshot, tree_sha

KINDS = ["reset", "close", "stall", "stall-past-timeout", "status503", "status500"]  # flips: see below
READ_TIMEOUT = 1.0  # MODELSHIP_READ_TIMEOUT for the stall-past-timeout cells: a connection that went silent
BACKENDS = ["azure", "s3", "http"]

pytest_plugins = ["support.faults.stores"]  # the store fixtures
pytestmark = pytest.mark.timeout(180)  # a hang is a failure, found in minutes


def make_fault(kind: str, rng: random.Random, req: Request) -> Fault | None:
    """A fault of ``kind`` at a random position inside this request's response."""
    span = req.range[1] - req.range[0] + 1 if req.range else 200  # listings, HEADs: small answers
    at = rng.randrange(span + 600)  # the head is a few hundred bytes: anywhere in head or body
    if kind == "stall-past-timeout":  # a model-file read goes silent for longer than the read timeout
        return Fault.stall(at, READ_TIMEOUT + 2) if req.range else None
    return response_fault(kind, at, rng)


def flip_fault(rng: random.Random, req: Request) -> Fault | None:
    """One body byte XORed in a model-file read (manifests are small JSON: a flip there is a syntax error)."""
    if req.method != "GET" or not req.range or "modelship.json" in req.target:
        return None
    return Fault.flip(rng.randrange(req.range[1] - req.range[0] + 1), mask=rng.randrange(1, 256))


@pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("store", BACKENDS)
def test_fetch_under_faults(request, tmp_path, monkeypatch, capsys, store, kind, seed):
    backend = request.getfixturevalue(f"{'azurite' if store == 'azure' else store}_backend")
    rng = rng_for("fetch", store, kind, seed)
    dest = tmp_path / "out" / "model"
    dest.parent.mkdir()
    # Half the runs replace an older fetched version, half fetch into a new folder.
    if seed % 2 == 0:
        backend.env(monkeypatch)
        old = backend.uri().replace("/w.bin", "/old.bin") if store == "http" else backend.uri()
        modelship.fetch(old, dest, version="1.0.0" if backend.versioned else None, progress=False)
    before = snapshot(dest)
    expected = tree_sha(backend.v2, {"w.bin"} if store == "http" else None)

    plan = RandomFaults(
        rng.randrange(1 << 30),
        lambda r, req: make_fault(kind, r, req),
        p=0.5,
        budget=1 if kind in ("flip", "stall-past-timeout") else rng.randint(1, 3),
    )
    if kind == "stall-past-timeout":
        monkeypatch.setenv("MODELSHIP_READ_TIMEOUT", str(READ_TIMEOUT))
    with FaultProxy(backend.upstream, lifetime=90) as proxy:
        backend.env(monkeypatch, proxy.url)
        argv = ["fetch", backend.uri(proxy.url), str(dest), "--no-progress", "--json"]
        if not backend.versioned:  # http has no checksum: pin the sha256 with a lock made before the faults
            lock = tmp_path / "modelship.lock"
            modelship.lock(backend.uri(proxy.url), output=lock, cache_dir=tmp_path / "lock-cache", progress=False)
            argv += ["--lock", str(lock)]
        proxy.plan = plan
        rc, out, err = run_in_process(capsys, *argv)
    injected = len(proxy.stats.injected)

    problems = []
    if rc == 0:
        outcome = "success"
        got = tree_sha(dest)
        if got != expected:
            problems.append(f"DEST differs from the source: {sorted(set(got.items()) ^ set(expected.items()))[:3]}")
        if json.loads(out)["version"] != ("2.0.0" if backend.versioned else None):
            problems.append("wrong version installed")
    else:
        outcome = "clean-failure"
        problems += error_line_problems(rc, err)
        problems += recovery_problems(rc, injected, err)
        if snapshot(dest) != before:
            problems.append("DEST changed by a failed fetch")
    problems += leftovers(tmp_path / "out")
    problems += cache_problems(Cache())
    secrets = secrets_in(out + err, backend.secrets)
    if secrets:
        problems.append(f"{secrets} credential occurrences in the output")
    record_run(
        "fetch",
        f"{store}/{kind}",
        outcome,
        problems,
        seed=seed,
        injected=injected,
        **recovery(needed=injected > 0, ok=rc == 0),
        secrets=secrets,
        error=err.strip().splitlines()[-1] if rc else "",
    )
    assert not problems, f"{problems} (faults: {proxy.stats.injected}; stderr: {err.strip()[-500:]})"


STALL_TIMEOUT, STALL_BUDGET = 1.0, 4.0  # MODELSHIP_READ_TIMEOUT and MODELSHIP_RETRY_BUDGET for the stalls below


@pytest.mark.parametrize("store", BACKENDS)
def test_a_store_that_stalls_for_good_ends_within_the_retry_budget(request, tmp_path, monkeypatch, capsys, store):
    """Every model-file read goes silent for longer than the test runs: the fetch must end by itself, within the
    retry budget plus a few read timeouts (the storage SDK's downloader tries each read three times), with one
    line saying the store stalled and what to do."""
    backend = request.getfixturevalue(f"{'azurite' if store == 'azure' else store}_backend")
    monkeypatch.setenv("MODELSHIP_READ_TIMEOUT", str(STALL_TIMEOUT))
    monkeypatch.setenv("MODELSHIP_RETRY_BUDGET", str(STALL_BUDGET))
    dest = tmp_path / "out" / "model"
    dest.parent.mkdir()
    with FaultProxy(backend.upstream, lifetime=120) as proxy:
        backend.env(monkeypatch, proxy.url)
        argv = ["fetch", backend.uri(proxy.url), str(dest), "--no-progress"]
        if not backend.versioned:
            lock = tmp_path / "modelship.lock"
            modelship.lock(backend.uri(proxy.url), output=lock, cache_dir=tmp_path / "lock-cache", progress=False)
            argv += ["--lock", str(lock)]
        proxy.plan = lambda req: Fault.stall(0, 600) if req.range and "modelship.json" not in req.target else None
        start = time.monotonic()
        rc, out, err = run_in_process(capsys, *argv)
        took = time.monotonic() - start
    problems = error_line_problems(rc, err)
    line = err.strip().splitlines()[-1] if err.strip() else ""
    if "stalled: no bytes for" not in line or "raise MODELSHIP_READ_TIMEOUT (now 1 s)" not in line:
        problems.append(f"the last line does not say the store stalled: {line!r}")
    if took > STALL_BUDGET + 4 * STALL_TIMEOUT + 3:
        problems.append(f"took {took:.1f} s: the retry budget ({STALL_BUDGET} s) did not bound the stall")
    if dest.exists() or leftovers(tmp_path / "out") or cache_problems(Cache()):
        problems.append("a stalled fetch left something behind")
    record_run(
        "fetch",
        f"{store}/stall-for-good",
        "clean-failure",
        problems,
        seed=0,
        injected=len(proxy.stats.injected),
        secrets=secrets_in(out + err, backend.secrets),
        error=line.removeprefix("modelship: error: "),
        seconds=round(took, 1),
    )
    assert not problems, f"{problems} (stderr: {err.strip()[-800:]})"


def test_a_publish_into_a_store_that_stalls_for_good_ends_within_the_retry_budget(
    azurite_backend, tmp_path, monkeypatch, capsys
):
    """The answers to uploads never come: publish obeys the same budget and says the store stalled."""
    backend = azurite_backend
    monkeypatch.setenv("MODELSHIP_READ_TIMEOUT", str(STALL_TIMEOUT))
    monkeypatch.setenv("MODELSHIP_RETRY_BUDGET", str(STALL_BUDGET))
    uri = f"{backend.uri()}-stall-{time.monotonic_ns()}"
    with FaultProxy(backend.upstream, lifetime=120) as proxy:
        backend.env(monkeypatch, proxy.url)
        proxy.plan = lambda req: Fault.stall(0, 600) if req.method == "PUT" and ".bin" in req.target else None
        start = time.monotonic()
        rc, _, err = run_in_process(capsys, "publish", str(backend.v2), uri, "--version", "1", "--no-progress")
        took = time.monotonic() - start
    line = err.strip().splitlines()[-1]
    assert error_line_problems(rc, err) == [], err
    assert "stalled: no bytes for" in line and "from the blob service at http://127.0.0.1:" in line, line
    assert took < STALL_BUDGET + 4 * STALL_TIMEOUT + 3, f"took {took:.1f} s"


MAX_FLIPS = 3
FLIP_P = 0.25  # the fraction of model-file responses that get a flipped byte, until MAX_FLIPS have fired


@pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("digests", ["chunks", "no-chunks"])
@pytest.mark.parametrize("store", BACKENDS)
def test_fetch_with_flipped_bytes(request, tmp_path, monkeypatch, capsys, caplog, store, digests, seed):
    """Up to three flipped bytes in a 24 MiB fetch: with chunk digests (published by modelship; for http, a lock
    made by ``modelship lock``) only the damaged ranges are read again; without them (stored by another tool;
    for http, a lock without chunk digests) the store's own range check (Azure's transactional MD5) or a second
    whole-file download recovers. Every such run must end byte-identical; DEST is never touched by a failure."""
    backend = request.getfixturevalue(f"{'azurite' if store == 'azure' else store}_backend")
    model = backend.model("big" if digests == "chunks" else "big-plain")
    rng = rng_for("fetch-flip", store, digests, seed)
    dest = tmp_path / "out" / "model"
    dest.parent.mkdir()
    backend.env(monkeypatch)
    if seed % 2 == 0:  # half the runs replace an older fetched model
        old = backend.uri().replace("/w.bin", "/old.bin") if store == "http" else backend.uri()
        modelship.fetch(old, dest, version="1.0.0" if backend.versioned else None, progress=False)
    before = snapshot(dest)
    expected = tree_sha(model.files)
    with FaultProxy(backend.upstream, lifetime=120) as proxy:
        backend.env(monkeypatch, proxy.url)
        uri = backend.model_uri(model, proxy.url)
        argv = ["fetch", uri, str(dest), "--no-progress", "--json"]
        if store == "http":  # no digests in the store: the lock made before the faults pins the bytes
            lock = tmp_path / "modelship.lock"
            modelship.lock(uri, output=lock, cache_dir=tmp_path / "lock-cache", progress=False)
            if not model.chunks:  # an older lock, from before chunk digests
                doc = json.loads(lock.read_text())
                for f in doc["files"]:
                    f.pop("chunks"), f.pop("chunk_size")
                lock.write_text(json.dumps(doc))
            argv += ["--lock", str(lock)]
        proxy.plan = RandomFaults(rng.randrange(1 << 30), flip_fault, p=FLIP_P, budget=rng.randint(1, MAX_FLIPS))
        caplog.set_level(logging.INFO, logger="modelship")
        caplog.clear()
        rc, out, err = run_in_process(capsys, *argv)
    injected = len(proxy.stats.injected)
    retries = sum(1 for r in caplog.records if r.name == "modelship" and r.getMessage().startswith("retrying "))

    problems = []
    if rc == 0:
        outcome = "success"
        if tree_sha(dest) != expected:
            problems.append("DEST differs from the source")
        if json.loads(out)["version"] != model.version:
            problems.append("wrong version installed")
    else:
        outcome = "clean-failure"
        problems += error_line_problems(rc, err)
        if snapshot(dest) != before:
            problems.append("DEST changed by a failed fetch")
        if injected <= MAX_FLIPS:
            problems.append(f"failed with only {injected} flipped bytes")
    if injected and not retries and (model.chunks or store != "azure"):  # the Azure SDK retries an MD5 failure itself
        problems.append(f"{injected} flips fired but no retry was logged")
    problems += leftovers(tmp_path / "out")
    problems += cache_problems(Cache())
    secrets = secrets_in(out + err, backend.secrets)
    if secrets:
        problems.append(f"{secrets} credential occurrences in the output")
    errors = [line for line in err.splitlines() if line.startswith("modelship: error:")]
    record_run(
        "fetch",
        f"{store}/flip" + ("" if model.chunks else "-no-chunks"),
        outcome,
        problems,
        seed=seed,
        injected=injected,
        **recovery(needed=injected > 0, ok=rc == 0),
        secrets=secrets,
        retries=retries,
        error=errors[-1] if errors else "",
    )
    assert not problems, f"{problems} (faults: {proxy.stats.injected}; stderr: {err.strip()[-1500:]})"
