"""Attestations (cosign's format) against the testbed's registry, through the CLI: ``modelship attest`` writes the
``sha256-<hex>.att`` tag (distribution 2.8 has no referrers API: the tag path only; the referrers path is
tests/unit/test_attestations_units.py against a small server that has the API), and what it writes is judged by
tests/support/attestation_reader.py, a reader written apart from modelship (plain HTTP, its own PAE,
cryptography's ECDSA). That reader also attests as cosign does, and ``modelship verify --attestation`` judges it:
both directions, with the refusals."""

from __future__ import annotations

import json
import os

import pytest

from support import attestation_reader as reader
from support.cli import run_cli
from support.modelimage import push_plain_image, unique_repo
from support.oms import keypair

pytestmark = pytest.mark.docker
SLSA, TEST_RESULT = "https://slsa.dev/provenance/v1", "https://in-toto.io/attestation/test-result/v0.1"


def _image(registry: str, repo: str, seed: str) -> str:
    """A small image pushed with plain HTTP calls (nothing of modelship's): its digest."""
    return push_plain_image(
        registry, repo, seed, {"architecture": "amd64", "os": "linux", "seed": seed}, os.urandom(512)
    )


@pytest.fixture
def keys(tmp_path):
    return keypair(tmp_path, "team"), keypair(tmp_path, "other")


def _predicate(tmp_path, name: str, value: dict) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(value))
    return str(path)


def _verify(ref: str, public, *types: str) -> tuple[int, str]:
    argv = [a for t in types for a in ("--attestation", t)]
    r = run_cli("verify", ref, "--key", str(public), *argv)
    return r.returncode, r.stderr if r.returncode else r.stdout


def test_attested_twice_keeps_both_read_by_the_independent_reader_and_verify_needs_each(registry, keys, tmp_path):
    (team, team_pub), (other, other_pub) = keys
    repo = unique_repo("attest/app")
    digest = _image(registry, repo, "v1")
    ref = f"{registry}/{repo}@{digest}"
    slsa = _predicate(tmp_path, "slsa", {"buildDefinition": {"buildType": "https://modelship.dev/assemble/v1"}})
    verdict = _predicate(tmp_path, "verdict", {"result": "PASSED", "passedTests": ["test_predict"]})
    assert run_cli("sign", ref, "--key", str(team)).returncode == 0

    first = run_cli("attest", ref, "--key", str(team), "--type", "slsa", "--predicate", slsa, "--json")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["attestation"] == f"{registry}/{repo}:{reader.att_tag(digest)}" and out["referrer"] is None
    assert reader.verified_by(registry, repo, digest, team_pub, SLSA) == 1
    again = json.loads(
        run_cli("attest", ref, "--key", str(team), "--type", "slsa", "--predicate", slsa, "--json").stdout
    )
    assert again["unchanged"] and again["attestation_digest"] == out["attestation_digest"]

    # signed, attested slsa; no test-result yet: verify names what is missing, in one line, exit 1
    code, text = _verify(ref, team_pub, "slsa", "test-result")
    assert code == 1 and "no test-result attestation" in text and text.count("\n") == 1
    assert run_cli("attest", ref, "--key", str(other), "--type", "slsa", "--predicate", slsa).returncode == 0
    assert run_cli("attest", ref, "--key", str(team), "--type", "test-result", "--predicate", verdict).returncode == 0

    found = reader.read_attestations(registry, repo, digest)
    assert len(found) == 3  # appended: none dropped
    assert reader.verified_by(registry, repo, digest, team_pub, SLSA) == 1
    assert reader.verified_by(registry, repo, digest, other_pub, SLSA) == 1
    assert reader.verified_by(registry, repo, digest, team_pub, TEST_RESULT) == 1
    code, text = _verify(ref, team_pub, "slsa", "test-result")
    assert code == 0 and "slsa attested by sha256:" in text and "test-result attested by sha256:" in text, text
    # the other key attested slsa but signed nothing and ran no test
    code, text = _verify(ref, other_pub, "slsa")
    assert code == 1 and "none of its 1 signature(s)" in text


def test_cosign_written_attestations_are_judged_and_forgeries_refused(registry, keys, tmp_path):
    (team, team_pub), (other, _) = keys
    repo = unique_repo("attest/app")
    digest, elsewhere = _image(registry, repo, "v1"), _image(registry, repo, "v2")
    ref, ref2 = f"{registry}/{repo}@{digest}", f"{registry}/{repo}@{elsewhere}"
    for d in (digest, elsewhere):
        assert run_cli("sign", f"{registry}/{repo}@{d}", "--key", str(team)).returncode == 0

    reader.write_attestation(registry, repo, digest, team, TEST_RESULT, {"result": "PASSED"})
    code, text = _verify(ref, team_pub, "test-result")
    assert code == 0, text
    # another key's attestation only: refused
    reader.write_attestation(registry, repo, elsewhere, other, TEST_RESULT, {"result": "PASSED"})
    code, text = _verify(ref2, team_pub, "test-result")
    assert code == 1 and "none of its 1 test-result attestation(s) is signed by the given key(s)" in text
    # a valid statement by the team's key about the first image, put at the second image's tag: refused
    reader.write_attestation(registry, repo, elsewhere, team, TEST_RESULT, {"result": "PASSED"}, claimed_digest=digest)
    code, text = _verify(ref2, team_pub, "test-result")
    assert code == 1 and f"about another image ({digest[:19]}…)" in text and text.count("\n") == 1
    # a FAILED verdict by the team's key blocks, beside the PASSED one
    failed = _predicate(tmp_path, "failed", {"result": "FAILED", "failedTests": ["test_predict"]})
    assert run_cli("attest", ref, "--key", str(team), "--type", "test-result", "--predicate", failed).returncode == 0
    code, text = _verify(ref, team_pub, "test-result")
    assert code == 1 and "says FAILED (failed: test_predict)" in text and text.count("\n") == 1
    assert reader.verified_by(registry, repo, digest, team_pub, TEST_RESULT) == 2  # both kept, as cosign keeps them
