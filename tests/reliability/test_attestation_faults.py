"""``modelship attest`` under registry faults: the fault proxy (tests/support/faults/proxy.py) between modelship and
the real registry cuts, stalls and fails requests while a second attestation is appended to an image's
``sha256-<hex>.att`` manifest.

Every run must end with the ``.att`` tag on a complete manifest (every blob present with its digest, asked of
the registry directly) that holds the earlier attestation and the new one (judged by
tests/support/attestation_reader.py), or with a one-line failure and the tag where it was: an attestation is
never lost, and the tag never names a half-written envelope blob.
"""

from __future__ import annotations

import functools
import os

import pytest

from modelship.errors import ModelshipError
from modelship.trust import attestations
from support import attestation_reader as reader
from support.faults.proxy import Fault, FaultProxy, RandomFaults, Request, first, registry_fault
from support.modelimage import push_plain_image, unique_repo
from support.oci import image_problems, tag_digest
from support.oms import keypair

pytestmark = pytest.mark.docker
TIMEOUT = 1.5  # seconds without an answer before a request counts as stalled
SLSA = "https://slsa.dev/provenance/v1"
TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"
VERDICT = {"result": "PASSED", "passedTests": [f"test_{i}" for i in range(200)]}  # a few kB: cut mid-blob


def is_att_tag_put(r: Request) -> bool:
    return r.method == "PUT" and "/manifests/" in r.target and r.target.endswith(".att")


def is_blob_upload(r: Request) -> bool:
    return r.method in ("PUT", "PATCH") and "/blobs/uploads/" in r.target


@pytest.fixture
def attested_once(registry, tmp_path):
    """An image attested once (slsa) by ``old`` without faults: (repo, digest, .att digest, keys)."""
    repo = unique_repo("attest-faults/app")
    digest = push_plain_image(registry, repo, "1", {"architecture": "amd64", "os": "linux"}, os.urandom(2048))
    old, new = keypair(tmp_path, "old"), keypair(tmp_path, "new")
    before = attestations.attest(f"{registry}/{repo}@{digest}", "slsa", {"n": 1}, key=old[0]).attestation_digest
    return repo, digest, before, old, new


def _attest_through(registry, plan, attested_once):
    repo, digest, _, _, (new_private, _) = attested_once
    host, port = registry.split(":")
    with FaultProxy((host, int(port)), plan, lifetime=60) as proxy:
        try:
            outcome: object = attestations.attest(
                f"127.0.0.1:{proxy.port}/{repo}@{digest}", "test-result", VERDICT, key=new_private, timeout=TIMEOUT
            )
        except ModelshipError as e:
            outcome = e
    return outcome, proxy


def _problems(registry, outcome, attested_once) -> list[str]:
    repo, digest, before, (_, old_public), (_, new_public) = attested_once
    tag = reader.att_tag(digest)
    held = tag_digest(registry, repo, tag)
    problems = image_problems(registry, repo, tag)  # whatever the outcome: the tag names a complete manifest
    if isinstance(outcome, ModelshipError):
        problems += [] if held == before else [f"failed, but {tag} moved from {before[:19]} to {held}"]
        return problems + ([f"error is not one line: {outcome!r}"] if "\n" in str(outcome) else [])
    if held != outcome.attestation_digest:
        return [*problems, f"{tag} holds {held}, attest returned {outcome.attestation_digest}"]
    if reader.verified_by(registry, repo, digest, old_public, SLSA) != 1:
        problems.append("the old attestation is missing or does not verify")
    if reader.verified_by(registry, repo, digest, new_public, TEST_RESULT) != 1:
        problems.append("the new attestation is missing or does not verify")
    return problems


def test_5xx_on_the_att_tag_put_is_retried_and_both_attestations_are_kept(registry, attested_once):
    outcome, proxy = _attest_through(registry, first(2, Fault.answer(503), is_att_tag_put), attested_once)
    assert not isinstance(outcome, Exception), outcome
    assert proxy.stats.by_kind["status"] == 2 and _problems(registry, outcome, attested_once) == []


def test_an_envelope_upload_cut_midway_is_sent_again_before_any_manifest(registry, attested_once):
    def is_envelope(r: Request) -> bool:  # the one blob of a few kB (the config is a few hundred bytes)
        return is_blob_upload(r) and int(r.headers.get("content-length") or 0) > 1500

    outcome, proxy = _attest_through(registry, first(1, Fault.reset(700, "request"), is_envelope), attested_once)
    assert [i.kind for i in proxy.stats.injected] == ["reset"] and "/blobs/uploads/" in proxy.stats.injected[0].target
    assert _problems(registry, outcome, attested_once) == [], outcome


def test_a_registry_that_refuses_every_blob_upload_gives_one_line_and_no_manifest(registry, attested_once):
    plan = lambda r: Fault.answer(503) if is_blob_upload(r) else None  # noqa: E731
    outcome, proxy = _attest_through(registry, plan, attested_once)
    assert isinstance(outcome, ModelshipError) and "HTTP 503" in str(outcome), outcome
    assert not [i for i in proxy.stats.injected if "/manifests/" in i.target]
    assert _problems(registry, outcome, attested_once) == []


_random_fault = functools.partial(registry_fault, stall_past=TIMEOUT * 2)


@pytest.mark.parametrize("seed", range(6))
def test_seeded_random_faults_end_with_both_or_one_line_and_the_tag_unchanged(registry, attested_once, seed):
    plan = RandomFaults(seed, _random_fault, p=0.4, budget=4)
    outcome, proxy = _attest_through(registry, plan, attested_once)
    assert _problems(registry, outcome, attested_once) == [], (seed, proxy.stats.injected, outcome)
    assert proxy.stats.injected, "the plan injected nothing"
