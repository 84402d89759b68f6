"""Publish under network faults (TCP proxy between the SDK and Azurite / moto), seeded and counted.

Every run either publishes a version that fetches back byte-identical, or fails with one clean error line and
leaves a version that is never picked as latest and can be replaced with --force; the local model folder is
never touched and no credential is printed. The faults are transient: a run in which one fired must succeed
(a clean failure means a retry is missing; with MODELSHIP_MAX_ATTEMPTS=1 these cells fail).
"""

from __future__ import annotations

import random
import uuid

import pytest

import modelship
from modelship import cli
from modelship.errors import ModelshipError
from support.faults import Fault, FaultProxy, RandomFaults, Request, first, response_fault
from support.faults.checks import error_line_problems, recovery_problems, secrets_in
from support.record import record, record_run, recovery, rng_for, seeds
from support.trees import leftovers, snapshot, tree_sha

KINDS = ["reset", "reset-upload", "close", "stall-upload", "status503", "status500", "flip-upload"]
BACKENDS = ["azure", "s3"]

pytest_plugins = ["support.faults.stores"]  # the store fixtures
pytestmark = pytest.mark.timeout(180)  # a hang is a failure, found in minutes


def make_fault(kind: str, rng: random.Random, req: Request) -> Fault | None:
    length = int(req.headers.get("content-length", "0") or 0)
    if kind.endswith("-upload"):
        if req.method not in ("PUT", "POST") or length < 16:
            return None
        at = rng.randrange(length)
        if kind == "reset-upload":
            return Fault.reset(at, direction="request")
        if kind == "stall-upload":
            return Fault.stall(at, rng.uniform(0.05, 0.5), direction="request")
        return Fault.flip(at, mask=rng.randrange(1, 256), direction="request")
    at = rng.randrange(700)  # responses to uploads are small: anywhere in the head or the short body
    return response_fault(kind, at, rng)


@pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("store", BACKENDS)
def test_publish_under_faults(request, tmp_path, monkeypatch, capsys, store, kind, seed):
    backend = request.getfixturevalue(f"{'azurite' if store == 'azure' else store}_backend")
    rng = rng_for("publish", store, kind, seed)
    uri = f"{backend.uri()}-{kind}-{seed}-{rng.randrange(1 << 30)}"  # a model of its own per run
    backend.env(monkeypatch)
    modelship.publish(backend.v1, uri, version="1.0.0", progress=False)
    before = snapshot(backend.v2)

    plan = RandomFaults(
        rng.randrange(1 << 30), lambda r, req: make_fault(kind, r, req), p=0.4, budget=rng.randint(1, 3)
    )
    with FaultProxy(backend.upstream, plan=plan, lifetime=90) as proxy:
        backend.env(monkeypatch, proxy.url)
        capsys.readouterr()
        rc = cli.main(["publish", str(backend.v2), uri, "--version", "2.0.0", "--no-progress"])
        out, err = capsys.readouterr()
    backend.env(monkeypatch)  # checks go straight to the store

    problems = []
    if rc == 0:
        outcome = "success"
    else:
        outcome = "clean-failure"
        problems += error_line_problems(rc, err)
        problems += recovery_problems(rc, len(proxy.stats.injected), err)
        if modelship.resolve(uri).version != "1.0.0":
            problems.append("a half-published version became latest")
        try:
            modelship.resolve(uri, version="2.0.0")
            problems.append("a failed publish left a complete-looking version")  # its manifest goes up last
        except ModelshipError:
            pass
        # The way out the error line points to: publish again (with --force when something was left).
        modelship.publish(backend.v2, uri, version="2.0.0", force=True, progress=False)
    try:
        got = modelship.fetch(uri, tmp_path / "check", progress=False)
        if got.version != "2.0.0" or tree_sha(tmp_path / "check") != tree_sha(backend.v2):
            problems.append("the published version does not fetch back byte-identical")
    except ModelshipError as e:
        problems.append(f"the published version does not fetch back: {e}")
    if snapshot(backend.v2) != before or leftovers(backend.v2):
        problems.append("publish changed the local model folder")
    secrets = secrets_in(out + err, backend.secrets)
    if secrets:
        problems.append(f"{secrets} credential occurrences in the output")
    record_run(
        "publish",
        f"{store}/{kind}",
        outcome,
        problems,
        seed=seed,
        injected=len(proxy.stats.injected),
        **recovery(needed=bool(proxy.stats.injected), ok=rc == 0),
        secrets=secrets,
        error=err.strip().splitlines()[-1] if rc else "",
    )
    assert not problems, f"{problems} (faults: {proxy.stats.injected}; stderr: {err.strip()[-500:]})"


@pytest.mark.parametrize("seed", seeds()[:2], ids=lambda s: f"seed{s}")
def test_damaged_block_of_a_chunked_upload(azurite_backend, tmp_path, monkeypatch, capsys, seed):
    """A 20 MiB file goes up in blocks (Put Block, then Put Block List, which checks no content): a byte flipped
    in one block must be caught by the service (per-request Content-MD5) and the block sent again."""
    from support.models import make_model

    backend = azurite_backend
    rng = rng_for("chunked", seed)
    model = make_model(tmp_path / "big", {"big.bin": 20 * 1024 * 1024}, seed=seed)
    uri = f"{backend.uri()}-chunked-{seed}-{rng.randrange(1 << 30)}"
    plan = RandomFaults(
        rng.randrange(1 << 30),
        lambda r, req: Fault.flip(r.randrange(int(req.headers["content-length"])), direction="request"),
        match=lambda req: "comp=block" in req.target and "blocklist" not in req.target,
        p=0.5,
        budget=1,
    )
    with FaultProxy(backend.upstream, plan=plan, lifetime=90) as proxy:
        backend.env(monkeypatch, proxy.url)
        capsys.readouterr()
        rc = cli.main(["publish", str(model), uri, "--version", "1", "--no-progress"])
        err = capsys.readouterr().err
    backend.env(monkeypatch)
    assert proxy.stats.by_kind == {"flip": 1}
    assert rc == 0, err
    got = modelship.fetch(uri, tmp_path / "check", progress=False)
    assert got.version == "1" and tree_sha(tmp_path / "check") == tree_sha(model)
    record(
        "publish",
        "azure/flip-block-of-chunked-upload",
        seed=seed,
        outcome="success",
        injected=1,
        **recovery(needed=True, ok=True),
        bytes_lost=0,
        secrets=secrets_in(err, backend.secrets),
        error="",
    )


@pytest.mark.timeout(60)
def test_s3_upload_answer_cut_right_after_its_status_line(s3_backend, tmp_path, monkeypatch, capsys):
    """The answers to two uploads end right after their first line. botocore used to send "Expect: 100-continue"
    and, when the connection closed right after the interim "100 Continue" line, spin forever at 100% CPU; the
    S3 source no longer asks for 100-continue, and the cut answers are retried."""
    backend = s3_backend
    uri = f"{backend.uri()}-cut-{uuid.uuid4().hex[:8]}"
    with FaultProxy(backend.upstream, plan=first(2, Fault.close(25), lambda r: r.method == "PUT")) as proxy:
        backend.env(monkeypatch, proxy.url)
        rc = cli.main(["publish", str(backend.v2), uri, "--version", "1", "--no-progress"])
        err = capsys.readouterr().err
    backend.env(monkeypatch)
    assert rc == 0, err
    assert proxy.stats.by_kind == {"close": 2}
    assert tree_sha(modelship.fetch(uri, tmp_path / "o", progress=False).dest) == tree_sha(backend.v2)
