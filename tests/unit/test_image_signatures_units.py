"""Image signatures in cosign's format (modelship.trust.cosign), against a registry in this process.

The registry is tests/support/referrers_registry.py: a small in-memory server that answers the OCI 1.1
referrers API (the testbed's distribution 2.8 does not; tests/integration/test_image_signatures.py covers
the tag path there). What modelship writes is judged by tests/support/cosign_reader.py, written apart from
it (plain HTTP, cryptography's ECDSA); what that reader writes the way cosign does is judged by modelship.
"""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from modelship.errors import ModelshipError, NotFoundError, SignatureError, UsageError
from modelship.trust import cosign
from support import cosign_reader as reader
from support.cli import run_in_process
from support.oms import pem_keypair
from support.referrers_registry import push_image, referrers_registry

REPO = "team/app"


@pytest.fixture
def keys(tmp_path):
    return pem_keypair(tmp_path, "team"), pem_keypair(tmp_path, "other")


@pytest.fixture(params=[True, False], ids=["referrers-api", "tags-only"])
def reg(request):
    with referrers_registry(referrers_api=request.param) as (addr, handler):
        yield addr, handler, request.param


def test_the_payload_is_byte_for_byte_cosigns():
    # the bytes of sigstore/cosign pkg/cosign/obsolete_test.go (Go's json.Marshal of the simple-signing claim)
    digest = "sha256:4aa3054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec"
    assert cosign.payload("index.docker.io/namespace/image", digest) == (
        b'{"critical":{"identity":{"docker-reference":"index.docker.io/namespace/image"},"image":{"docker-manifest-'
        b'digest":"sha256:4aa3054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec"},"type":"cosign container '
        b'image signature"},"optional":null}'
    )
    assert cosign.signature_tag(digest) == "sha256-4aa3054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec.sig"


def test_a_signature_is_read_and_accepted_by_the_independent_reader(reg, keys):
    addr, handler, api = reg
    (private, public), (_, other_public) = keys
    digest = push_image(addr, handler, REPO)
    r = cosign.sign(f"{addr}/{REPO}@{digest}", private)
    s = r.image_signature
    assert s.signature == f"{addr}/{REPO}:{reader.sig_tag(digest)}" and not s.unchanged
    assert reader.verified_by(addr, REPO, digest, public) == 1
    assert reader.verified_by(addr, REPO, digest, other_public) == 0
    manifest, media_type, sig_digest = reader.signature_manifest(addr, REPO, digest)
    assert media_type == "application/vnd.oci.image.manifest.v1+json" and sig_digest == s.signature_digest
    if api:  # the same layer, attached as a referrer of the image
        ref_manifest = json.loads(handler.manifests[(REPO, s.referrer)][0])
        assert ref_manifest["subject"]["digest"] == digest
        assert ref_manifest["artifactType"] == "application/vnd.dev.cosign.artifact.sig.v1+json"
        assert ref_manifest["layers"] == manifest["layers"]
        found = reader.read_layers(addr, REPO, ref_manifest)
        assert reader.accepts(found[0], public, f"{addr}/{REPO}", digest)
    else:
        assert s.referrer is None
    v = cosign.verify(f"{addr}/{REPO}@{digest}", [other_public, public])
    assert v.signer == s.signer and v.image_digest == digest


def test_signing_again_adds_nothing_and_another_key_appends(reg, keys):
    addr, handler, _ = reg
    (private, public), (other_private, other_public) = keys
    digest = push_image(addr, handler, REPO)
    ref = f"{addr}/{REPO}@{digest}"
    first = cosign.sign(ref, private).image_signature
    again = cosign.sign(ref, private).image_signature
    assert again.unchanged and again.signature_digest == first.signature_digest and again.referrer == first.referrer
    assert len(reader.read_signatures(addr, REPO, digest)) == 1
    second = cosign.sign(ref, other_private).image_signature
    assert not second.unchanged and second.signature_digest != first.signature_digest
    assert (
        reader.verified_by(addr, REPO, digest, public) == 1
        and reader.verified_by(addr, REPO, digest, other_public) == 1
    )
    assert cosign.verify(ref, [public]).signer == first.signer
    assert cosign.verify(ref, [other_public]).signer == second.signer


def test_a_signature_cosign_would_write_is_verified_and_appended_to(reg, keys):
    addr, handler, _ = reg
    (private, public), (other_private, other_public) = keys
    digest = push_image(addr, handler, REPO)
    ref = f"{addr}/{REPO}@{digest}"
    reader.write_signature(addr, REPO, digest, other_private)
    assert cosign.verify(ref, [other_public]).image_digest == digest
    with pytest.raises(SignatureError) as e:
        cosign.verify(ref, [public])
    assert e.value.kind == SignatureError.UNKNOWN_KEY
    cosign.sign(ref, private)  # appended: the signature written by the other tool is kept
    assert (
        reader.verified_by(addr, REPO, digest, other_public) == 1
        and reader.verified_by(addr, REPO, digest, public) == 1
    )


def test_refusals_unsigned_other_key_and_another_images_signature(reg, keys):
    addr, handler, _ = reg
    (private, public), (other_private, _) = keys
    digest = push_image(addr, handler, REPO)
    elsewhere = push_image(addr, handler, REPO, seed=b"other")
    ref = f"{addr}/{REPO}@{digest}"
    with pytest.raises(SignatureError) as e:
        cosign.verify(ref, [public])
    assert e.value.kind == SignatureError.UNSIGNED and "not signed" in str(e.value)
    # a valid signature by the team's key, of another image, copied to this image's tag
    reader.write_signature(addr, REPO, digest, private, claimed_digest=elsewhere)
    with pytest.raises(SignatureError) as e:
        cosign.verify(ref, [public])
    assert e.value.kind == SignatureError.OTHER_IMAGE and elsewhere[:19] in str(e.value)
    reader.write_signature(addr, REPO, elsewhere, other_private)
    with pytest.raises(SignatureError) as e:
        cosign.verify(f"{addr}/{REPO}@{elsewhere}", [public])
    assert e.value.kind == SignatureError.UNKNOWN_KEY and "\n" not in str(e.value)


def test_a_changed_payload_or_signature_is_refused(keys):
    (private, public), _ = keys
    with referrers_registry(referrers_api=False) as (addr, handler):
        digest = push_image(addr, handler, REPO)
        ref = f"{addr}/{REPO}@{digest}"
        cosign.sign(ref, private)
        tag = (REPO, reader.sig_tag(digest))
        manifest = json.loads(handler.manifests[tag][0])
        sig = manifest["layers"][0]["annotations"][cosign.SIGNATURE_ANNOTATION]
        flipped = sig[:-6] + ("A" if sig[-6] != "A" else "B") + sig[-5:]
        manifest["layers"][0]["annotations"][cosign.SIGNATURE_ANNOTATION] = flipped
        handler.manifests[tag] = (json.dumps(manifest).encode(), handler.manifests[tag][1])
        with pytest.raises(SignatureError) as e:
            cosign.verify(ref, [public])
        assert e.value.kind == SignatureError.UNKNOWN_KEY


def test_usage_errors_come_before_any_request(tmp_path, keys):
    (private, _), _ = keys
    p384, _ = pem_keypair(tmp_path, "p384", ec.SECP384R1())
    digest = "sha256:" + "ab" * 32
    with pytest.raises(UsageError, match="by digest"):
        cosign.sign("127.0.0.1:9/team/app:1.0", private)
    with pytest.raises(UsageError, match="P-256"):
        cosign.sign(f"127.0.0.1:9/team/app@{digest}", p384)
    with pytest.raises(UsageError, match="--key"):
        cosign.verify(f"127.0.0.1:9/team/app@{digest}", [])
    with pytest.raises(UsageError, match="not a PEM public key"):
        cosign.verify(f"127.0.0.1:9/team/app@{digest}", [private])


def test_signing_an_image_that_is_not_there_is_refused(keys):
    (private, _), _ = keys
    with referrers_registry() as (addr, handler):
        with pytest.raises(NotFoundError):
            cosign.sign(f"{addr}/{REPO}@sha256:{'cd' * 32}", private)
        assert not handler.manifests


def test_cli_sign_and_verify_an_image_and_a_folder_still(capsys, tmp_path, keys):
    (private, public), (_, other_public) = keys
    with referrers_registry(referrers_api=False) as (addr, handler):
        digest = push_image(addr, handler, REPO)
        ref = f"{addr}/{REPO}@{digest}"
        rc, out, err = run_in_process(capsys, "verify", ref, "--key", str(public))
        assert rc == 1 and err.count("\n") == 1 and "not signed" in err
        rc, out, err = run_in_process(capsys, "sign", ref, "--key", str(private), "--json")
        assert rc == 0, err
        assert json.loads(out)["signature"] == f"{addr}/{REPO}:{reader.sig_tag(digest)}"
        rc, out, err = run_in_process(capsys, "verify", ref, "--key", str(public))
        assert rc == 0 and out.startswith(f"verified {ref}: signed by sha256:"), err
        rc, out, err = run_in_process(capsys, "verify", ref, "--key", str(other_public))
        assert rc == 1 and "none of its 1 signature(s)" in err and err.count("\n") == 1
    rc, _, err = run_in_process(capsys, "verify", ref)
    assert rc == 2 and "--key PUB.pem" in err
    rc, _, err = run_in_process(capsys, "verify", str(tmp_path), "--key", str(public))
    assert rc == 2 and "is a folder" in err


@pytest.mark.parametrize("verb", ["promote", "push", "assemble"])
def test_a_sign_key_that_is_no_key_is_refused_before_anything_else(capsys, tmp_path, verb):
    """Exit 2 naming the file: nothing was pushed, assembled or tagged (127.0.0.1:9 answers nothing, and no
    model folder or engine is there: any step taken before the key was read would fail otherwise)."""
    bad = tmp_path / "notes.pem"
    bad.write_text("not a key\n")
    argv = {
        "promote": ["promote", f"127.0.0.1:9/team/app@sha256:{'ab' * 32}", "--tag", "stable"],
        "push": ["push", "127.0.0.1:9/team/app:1"],
        "assemble": ["assemble", "127.0.0.1:9/team/app:1", "--model", str(tmp_path / "none"), "--tag", "x/y:1"],
    }[verb]
    rc, _, err = run_in_process(capsys, *argv, "--sign-key", str(bad))
    assert rc == 2 and f"{bad}: not a PEM private key" in err, err


def test_a_sig_tag_that_holds_something_else_is_not_overwritten(keys):
    (private, public), _ = keys
    with referrers_registry(referrers_api=False) as (addr, handler):
        digest = push_image(addr, handler, REPO)
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
        )
        tag = (REPO, reader.sig_tag(digest))
        handler.manifests[tag] = (index.encode(), "application/vnd.oci.image.index.v1+json")
        for call in (lambda: cosign.sign(f"{addr}/{REPO}@{digest}", private),
                     lambda: cosign.verify(f"{addr}/{REPO}@{digest}", [public])):  # fmt: skip
            with pytest.raises(ModelshipError, match="is not a signature manifest") as e:
                call()
            assert "\n" not in str(e.value)
        assert handler.manifests[tag][0] == index.encode()
