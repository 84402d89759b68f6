"""``modelship promote`` demands evidence, against the testbed's registry and a second one of the test's own:
``--require-key`` refuses (one line naming the digest, the tag where it was, nothing copied) an unsigned digest,
one signed by another key and one whose signature names another digest; ``--to`` copies the image with its
``.sig``/``.att`` manifests so that the destination's signatures and attestations verify -- judged by
tests/support/cosign_reader.py and attestation_reader.py, written apart from modelship -- and a second run uploads
0 bytes; ``--require-attestation`` refuses a missing attestation, and a missing or FAILED test-result (written
through modelship's attestations API).

The images and the cosign-style signatures the refusals are tested on are written with plain HTTP calls
(support.modelimage, the reader's ``write_signature``), not by modelship.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from modelship.trust.attestations import PREDICATE_TYPES, attest
from support import attestation_reader as att_reader
from support import cosign_reader as reader
from support.cli import run_cli
from support.modelimage import file_member, push_blob, push_manifest, push_plain_image, tar_layer, unique_repo
from support.models import make_model
from support.oci import manifest, registry_process, tag_digest
from support.oms import keypair

pytestmark = pytest.mark.docker
DSSE = "application/vnd.dsse.envelope.v1+json"


@pytest.fixture(scope="module")
def second(tmp_path_factory):
    """Another registry (the testbed's docker-registry binary on a port of its own, no auth): host:port."""
    with registry_process(tmp_path_factory.mktemp("promote-second")) as addr:
        yield addr


@pytest.fixture
def keys(tmp_path):
    return keypair(tmp_path, "team"), keypair(tmp_path, "other")


def _image(registry: str, repo: str, tag: str) -> str:
    return push_plain_image(
        registry, repo, tag, {"architecture": "amd64", "os": "linux", "seed": tag}, os.urandom(4096)
    )


def _promote(*args: str) -> tuple[int, str, dict | None]:
    r = run_cli("promote", *args, "--json")
    return r.returncode, r.stderr, json.loads(r.stdout) if r.returncode == 0 else None


def _attestation(registry: str, repo: str, digest: str) -> str:
    """A ``.att`` manifest of one DSSE layer, as cosign lays it out, pushed with plain HTTP: its digest (what
    it says is not judged here: promote carries it byte for byte)."""
    envelope = json.dumps({"payloadType": "application/vnd.in-toto+json", "payload": "e30=", "signatures": []})
    config = b'{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}'
    body = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": push_blob(registry, repo, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": DSSE,
                "digest": push_blob(registry, repo, envelope.encode()),
                "size": len(envelope),
                "annotations": {"predicateType": "https://slsa.dev/provenance/v1"},
            }
        ],
    }
    return push_manifest(registry, repo, digest.replace(":", "-") + ".att", body)


def test_require_key_refuses_unsigned_wrongly_signed_and_forged_digests_and_leaves_the_tag(registry, keys):
    (team, team_pub), (other, _) = keys
    repo = unique_repo("promote/app")
    old = _image(registry, repo, "stable")  # what :stable is before
    digest, elsewhere = _image(registry, repo, "candidate"), _image(registry, repo, "v3")
    ref = f"{registry}/{repo}@{digest}"

    def refused(why: str) -> None:
        code, err, _ = _promote(ref, "--tag", "stable", "--require-key", str(team_pub))
        assert code == 1 and err.count("\n") == 1, err
        assert err.startswith(f"modelship: error: promote refused: {ref}: ") and why in err, err
        assert "(stable not moved)" in err
        assert tag_digest(registry, repo, "stable") == old

    refused("not signed")
    reader.write_signature(registry, repo, digest, other)
    refused("none of its 1 signature(s) is by the given key(s)")
    # the team's valid signature of another digest, put at this digest's .sig tag
    reader.write_signature(registry, repo, elsewhere, team, claimed_digest=digest)
    reader.write_signature(registry, repo, digest, team, claimed_digest=elsewhere)
    refused(f"for another image ({elsewhere[:19]}…)")

    reader.write_signature(registry, repo, digest, team)  # as cosign sign --key does
    code, err, out = _promote(ref, "--tag", "stable", "--tag", "1.0", "--require-key", str(team_pub))
    assert code == 0, err
    assert out["tags"] == [f"{registry}/{repo}:stable", f"{registry}/{repo}:1.0"]
    assert out["verified"] == [f"signature by {out['verified'][0].split()[-1]}"] and out["copied"] is None
    assert tag_digest(registry, repo, "stable") == tag_digest(registry, repo, "1.0") == digest

    # a key file that is no key: a usage error before anything is asked of the registry
    bad = team_pub.with_name("bad.pub")
    bad.write_text("hello\n")
    code, err, _ = _promote(f"{registry}/{repo}@{old}", "--tag", "stable", "--require-key", str(bad))
    assert code == 2 and "not a PEM public key" in err and tag_digest(registry, repo, "stable") == digest


def test_promote_to_another_registry_carries_signatures_and_attestations_and_reruns_send_nothing(
    registry, second, keys
):
    (team, team_pub), (other, other_pub) = keys
    repo, mirror = unique_repo("promote/src"), unique_repo("promote/prod")
    digest = _image(registry, repo, "candidate")
    ref = f"{registry}/{repo}@{digest}"
    assert run_cli("sign", ref, "--key", str(team)).returncode == 0
    reader.write_signature(registry, repo, digest, other)  # a second signer's, as cosign writes it
    att = _attestation(registry, repo, digest)
    sig = reader.signature_manifest(registry, repo, digest)[2]

    code, err, out = _promote(ref, "--to", f"{second}/{mirror}", "--tag", "stable", "--require-key", str(team_pub))
    assert code == 0, err
    assert out["ref"] == f"{second}/{mirror}@{digest}" and out["source"] == ref
    assert out["tags"] == [f"{second}/{mirror}:stable"] and tag_digest(second, mirror, "stable") == digest
    assert out["uploaded_bytes"] > 4096
    tags = [f"{second}/{mirror}:{digest.replace(':', '-')}{s}" for s in (".sig", ".att")]
    assert out["copied"] == {
        "tags": tags,
        "referrers": 0,
        "referrers_skipped": 0,
        "uploaded_bytes": out["copied"]["uploaded_bytes"],
    }
    # the same manifests, byte for byte, and the signatures verify there for the digest (the reader, not modelship)
    assert manifest(second, mirror, digest)[0] == digest
    assert tag_digest(second, mirror, reader.sig_tag(digest)) == sig
    assert tag_digest(second, mirror, digest.replace(":", "-") + ".att") == att
    for public in (team_pub, other_pub):
        assert reader.verified_by(second, mirror, digest, public, signed_at=f"{registry}/{repo}") == 1
    verified = run_cli("verify", f"{second}/{mirror}@{digest}", "--key", str(team_pub))
    assert verified.returncode == 0, verified.stderr

    again = _promote(ref, "--to", f"{second}/{mirror}", "--tag", "stable", "--require-key", str(team_pub))
    assert again[0] == 0 and again[2]["uploaded_bytes"] == 0 and again[2]["copied"]["uploaded_bytes"] == 0

    # a signature made at the destination is kept when the source's are copied again (appended, none dropped)
    code, err, out = _promote(ref, "--to", f"{second}/{mirror}", "--tag", "1.0", "--sign-key", str(other))
    assert code == 0 and out["image_signature"]["signer"].startswith("sha256:"), err
    assert reader.verified_by(second, mirror, digest, other_pub) == 1  # the new one names the destination
    held = tag_digest(second, mirror, reader.sig_tag(digest))
    assert held != sig and len(reader.read_signatures(second, mirror, digest)) == 3
    rerun = _promote(ref, "--to", f"{second}/{mirror}", "--tag", "1.0")
    assert rerun[0] == 0 and rerun[2]["uploaded_bytes"] == 0, rerun[1]
    assert tag_digest(second, mirror, reader.sig_tag(digest)) == held
    # a signature added at the source later is appended at the destination by the next promote
    reader.write_signature(registry, repo, digest, team)
    assert _promote(ref, "--to", f"{second}/{mirror}", "--tag", "1.0")[0] == 0
    assert len(reader.read_signatures(second, mirror, digest)) == 4
    assert reader.verified_by(second, mirror, digest, team_pub, signed_at=f"{registry}/{repo}") == 2
    assert reader.verified_by(second, mirror, digest, other_pub) == 1


def test_a_refused_promote_to_another_registry_copies_nothing(registry, second, keys):
    (_, team_pub), (other, _) = keys
    repo, mirror = unique_repo("promote/src"), unique_repo("promote/prod")
    digest = _image(registry, repo, "candidate")
    reader.write_signature(registry, repo, digest, other)
    ref = f"{registry}/{repo}@{digest}"
    code, err, _ = _promote(ref, "--to", f"{second}/{mirror}", "--tag", "stable", "--require-key", str(team_pub))
    assert code == 1 and err.count("\n") == 1 and f"promote refused: {ref}: none of its" in err, err
    assert tag_digest(second, mirror, digest) is None and tag_digest(second, mirror, "stable") is None
    assert tag_digest(second, mirror, reader.sig_tag(digest)) is None


def test_promote_to_another_repository_of_one_registry_mounts_every_blob(registry, keys):
    (team, team_pub), _ = keys
    repo, prod = unique_repo("promote/src"), unique_repo("promote/prod")
    digest = _image(registry, repo, "candidate")
    ref = f"{registry}/{repo}@{digest}"
    assert run_cli("sign", ref, "--key", str(team)).returncode == 0
    code, err, out = _promote(ref, "--to", f"{registry}/{prod}", "--require-key", str(team_pub))
    assert code == 0, err
    assert out["tags"] == [] and out["uploaded_bytes"] == 0  # mounted from the source repository
    assert manifest(registry, prod, digest)[0] == digest
    assert reader.verified_by(registry, prod, digest, team_pub, signed_at=f"{registry}/{repo}") == 1


def _verdict(result: str) -> dict:
    failed = ["test_smoke[iris-setosa]"] if result == "FAILED" else []
    passed = [] if failed else ["test_smoke[iris-setosa]"]
    return {"result": result, "passedTests": passed, "failedTests": failed, "warnedTests": [], "configuration": []}


def test_require_attestation_refuses_a_missing_or_failed_verdict_and_promotes_a_digest_with_all_three(
    registry, second, keys
):
    (team, team_pub), (other, _) = keys
    repo, mirror = unique_repo("promote/evidence"), unique_repo("promote/evidence-prod")
    old = _image(registry, repo, "stable")
    failed, good = _image(registry, repo, "failed"), _image(registry, repo, "good")
    require = ["--require-key", str(team_pub)]
    for t in ("slsa", "cyclonedx", "test-result"):
        require += ["--require-attestation", t]
    for digest in (failed, good):
        ref = f"{registry}/{repo}@{digest}"
        assert run_cli("sign", ref, "--key", str(team)).returncode == 0
        attest(ref, "slsa", {"buildDefinition": {"buildType": "test"}, "runDetails": {}}, key=team)
        attest(ref, "cyclonedx", {"bomFormat": "CycloneDX", "specVersion": "1.6"}, key=team)

    def refused(digest: str, why: str, *args: str) -> None:
        ref = f"{registry}/{repo}@{digest}"
        code, err, _ = _promote(ref, "--tag", "stable", *(args or require))
        assert code == 1 and err.count("\n") == 1 and err.startswith(f"modelship: error: promote refused: {ref}: "), err
        assert why in err and "(stable not moved)" in err, err
        assert tag_digest(registry, repo, "stable") == old

    refused(failed, "no test-result attestation")
    attest(f"{registry}/{repo}@{failed}", "test-result", _verdict("PASSED"), key=other)  # by a key not required
    refused(failed, "none of its 1 test-result attestation(s) is signed by the given key(s)")
    attest(f"{registry}/{repo}@{failed}", "test-result", _verdict("FAILED"), key=team)
    refused(failed, "says FAILED (failed: test_smoke[iris-setosa])")
    # a FAILED verdict by the key blocks a promote that asked for the signature only, too
    refused(failed, "says FAILED", "--require-key", str(team_pub))
    code, err, _ = _promote(f"{registry}/{repo}@{good}", "--tag", "stable", "--require-attestation", "slsa")
    assert code == 2 and "--require-attestation needs --require-key" in err
    code, err, _ = _promote(f"{registry}/{repo}@{good}", "--tag", "stable", *require, "--require-attestation", "sbom")
    assert code == 2 and "'sbom' is no attestation type" in err and tag_digest(registry, repo, "stable") == old

    attest(f"{registry}/{repo}@{good}", "test-result", _verdict("PASSED"), key=team)
    code, err, out = _promote(f"{registry}/{repo}@{good}", "--to", f"{second}/{mirror}", "--tag", "stable", *require)
    assert code == 0, err
    assert [v.rsplit(" by ", 1)[0] for v in out["verified"]] == [
        "signature",
        "slsa attestation",
        "cyclonedx attestation",
        "test-result attestation",
    ]
    assert tag_digest(second, mirror, "stable") == good and tag_digest(registry, repo, "stable") == old
    for uri in PREDICATE_TYPES.values():  # the attestations verify at the destination (the independent reader)
        assert att_reader.verified_by(second, mirror, good, team_pub, uri) == 1, uri
    there = run_cli("promote", f"{second}/{mirror}@{good}", "--tag", "release", *require)
    assert there.returncode == 0, there.stderr


def test_what_assemble_sign_key_and_a_verdict_write_is_what_promote_requires(registry, keys, tmp_path):
    """The pipeline's chain without the engine: assemble --sign-key (signature, provenance, ML-BOM), the smoke
    test's verdict (written here through the attestations API), then promote requiring all of it."""
    (team, team_pub), _ = keys
    repo = unique_repo("promote/chain")
    layer = tar_layer([file_member("app/main.py", b"print('app')\n")])
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    push_plain_image(registry, repo, "app", config, layer)
    model = make_model(tmp_path / "model", {"weights.bin": 2048}, uri="az://acct/m/iris", version="1.0")
    assembled = run_cli(
        "assemble", f"{registry}/{repo}:app", "--model", str(model), "--tag", f"{registry}/{repo}:7",
        "--sign-key", str(team), "--json",
    )  # fmt: skip
    assert assembled.returncode == 0, assembled.stderr
    ref = json.loads(assembled.stdout)["ref"]
    require = ["--require-key", str(team_pub)]
    for t in PREDICATE_TYPES:
        require += ["--require-attestation", t]
    code, err, _ = _promote(ref, "--tag", "stable", *require)
    assert code == 1 and "no test-result attestation" in err and tag_digest(registry, repo, "stable") is None
    attest(ref, "test-result", _verdict("PASSED"), key=team)
    code, err, out = _promote(ref, "--tag", "stable", *require)
    assert code == 0, err
    assert len(out["verified"]) == 4 and tag_digest(registry, repo, "stable") == ref.split("@")[1]
