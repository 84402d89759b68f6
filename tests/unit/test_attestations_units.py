"""Attestations in cosign's format (modelship.trust.dsse, modelship.trust.attestations).

The DSSE and statement units need nothing; the rest runs against tests/support/referrers_registry.py, a small
in-memory registry in this process that answers the OCI 1.1 referrers API (a stand-in: the testbed's
distribution 2.8 has no such API; tests/integration/test_attestations.py covers the tag path there). What
modelship writes is judged by tests/support/attestation_reader.py, written apart from it (plain HTTP, its own
PAE, cryptography's ECDSA); what that reader writes the way cosign does is judged by modelship.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import modelship
from modelship.errors import NotFoundError, SignatureError, UsageError
from modelship.oci.reference import parse_reference
from modelship.oci.registry import RegistryClient
from modelship.trust import attestations as att
from modelship.trust import dsse
from support import attestation_reader as reader
from support.cli import run_in_process
from support.oms import pem_keypair
from support.referrers_registry import push_image, referrers_registry

REPO = "team/app"
SLSA, TEST_RESULT = "https://slsa.dev/provenance/v1", "https://in-toto.io/attestation/test-result/v0.1"
PASSED = {"result": "PASSED", "passedTests": ["test_predict"], "failedTests": []}


@pytest.fixture
def keys(tmp_path):
    return pem_keypair(tmp_path, "team"), pem_keypair(tmp_path, "other")


@pytest.fixture(params=[True, False], ids=["referrers-api", "tags-only"])
def reg(request):
    with referrers_registry(referrers_api=request.param) as (addr, handler):
        yield addr, handler, request.param


def _verify(addr, digest, public, types):
    r = parse_reference(f"{addr}/{REPO}@{digest}")
    with RegistryClient(addr, None) as client:
        return att.verify_attestations(client, r, [public], types)


# ---- DSSE and statements ----------------------------------------------------------------------------------


def test_pae_is_the_dsse_spec_vector_and_the_readers():
    # secure-systems-lab/dsse protocol.md's example
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    body = "ünïcode {}".encode()
    assert dsse.pae(dsse.PAYLOAD_TYPE, body) == reader.pae(reader.PAYLOAD_TYPE, body)


def test_an_envelope_verifies_with_its_key_only_and_not_once_changed():
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    data = dsse.sign(b'{"a":1}', key)
    doc = json.loads(data)
    assert list(doc) == ["payloadType", "payload", "signatures"] and doc["signatures"][0]["keyid"] == ""
    env = dsse.parse(data, "x")
    assert env.payload == b'{"a":1}' and env.payload_type == dsse.PAYLOAD_TYPE
    assert env.signer([other.public_key(), key.public_key()]) is not None
    assert env.signer([other.public_key()]) is None
    doc["payload"] = base64.b64encode(b'{"a":2}').decode()
    assert dsse.parse(json.dumps(doc).encode(), "x").signer([key.public_key()]) is None
    doc["payloadType"] = "text/plain"  # the type is signed too (it is in the PAE)
    doc["payload"] = base64.b64encode(b'{"a":1}').decode()
    assert dsse.parse(json.dumps(doc).encode(), "x").signer([key.public_key()]) is None
    with pytest.raises(UsageError, match="P-256"):
        dsse.sign(b"{}", ec.generate_private_key(ec.SECP384R1()))


@pytest.mark.parametrize("data", [b"", b"{", b'{"payloadType":"t","payload":"%%%","signatures":[]}', b"[]",
                                  b'{"payloadType":"t","payload":"","signatures":[]}'])  # fmt: skip
def test_what_is_no_envelope_is_refused_in_one_line(data):
    with pytest.raises(SignatureError) as e:
        dsse.parse(data, "where")
    assert e.value.kind == SignatureError.MALFORMED and "\n" not in str(e.value)


def test_the_statement_names_the_digest_and_the_types_map_once():
    digest = "sha256:" + "ab" * 32
    st = json.loads(att.statement("reg.example/team/app", digest, SLSA, {"k": 1}))
    assert st == {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "reg.example/team/app", "digest": {"sha256": "ab" * 32}}],
        "predicateType": SLSA,
        "predicate": {"k": 1},
    }
    assert att.PREDICATE_TYPES == {"slsa": SLSA, "cyclonedx": "https://cyclonedx.org/bom", "test-result": TEST_RESULT}
    assert att.predicate_uri("https://example.com/p/v1") == "https://example.com/p/v1"
    with pytest.raises(UsageError, match="no attestation type"):
        att.predicate_uri("sbom")
    assert att.attestation_tag(digest) == f"sha256-{'ab' * 32}.att"


# ---- written, read back, refused ---------------------------------------------------------------------------


def test_an_attestation_is_read_and_accepted_by_the_independent_reader(reg, keys):
    addr, handler, api = reg
    (private, public), (_, other_public) = keys
    digest = push_image(addr, handler, REPO)
    r = att.attest(f"{addr}/{REPO}@{digest}", "slsa", {"buildType": "x"}, key=private)
    assert r.attestation == f"{addr}/{REPO}:{reader.att_tag(digest)}" and not r.unchanged
    assert r.predicate_type == SLSA
    assert reader.verified_by(addr, REPO, digest, public, SLSA) == 1
    assert reader.verified_by(addr, REPO, digest, other_public) == 0
    manifest, media_type, att_digest = reader.attestation_manifest(addr, REPO, digest)
    assert media_type == "application/vnd.oci.image.manifest.v1+json" and att_digest == r.attestation_digest
    if api:  # the same layer, attached as a referrer of the image, as cosign's oci-1-1 mode does
        ref_manifest = json.loads(handler.manifests[(REPO, r.referrer)][0])
        assert ref_manifest["subject"]["digest"] == digest
        assert ref_manifest["artifactType"] == "application/vnd.in-toto+json"
        assert ref_manifest["layers"] == manifest["layers"]
        assert reader.accepts(reader.read_layers(addr, REPO, ref_manifest)[0], public, digest, SLSA)
    else:
        assert r.referrer is None
    found = _verify(addr, digest, public, ["slsa"])
    assert [(a.predicate_type, a.predicate, a.signer) for a in found] == [(SLSA, {"buildType": "x"}, r.signer)]


def test_attested_again_adds_nothing_another_key_or_type_appends(reg, keys):
    addr, handler, _ = reg
    (private, public), (other_private, other_public) = keys
    digest = push_image(addr, handler, REPO)
    ref = f"{addr}/{REPO}@{digest}"
    first = att.attest(ref, "slsa", {"n": 1}, key=private)
    again = att.attest(ref, SLSA, {"n": 1}, key=private)
    assert again.unchanged and again.attestation_digest == first.attestation_digest and again.referrer == first.referrer
    assert len(reader.read_attestations(addr, REPO, digest)) == 1
    second = att.attest(ref, "slsa", {"n": 1}, key=other_private)
    third = att.attest(ref, "test-result", PASSED, key=private)
    assert not second.unchanged and not third.unchanged
    assert len(reader.read_attestations(addr, REPO, digest)) == 3  # appended: none dropped
    assert reader.verified_by(addr, REPO, digest, public) == 2
    assert reader.verified_by(addr, REPO, digest, other_public, SLSA) == 1
    both = _verify(addr, digest, public, ["slsa", "test-result"])
    assert sorted(a.predicate_type for a in both) == sorted([SLSA, TEST_RESULT])
    assert [a.predicate_type for a in _verify(addr, digest, other_public, ["slsa"])] == [SLSA]
    assert len(_verify(addr, digest, public, [])) == 2  # no type asked: every verified one


def test_an_attestation_cosign_would_write_is_verified_and_appended_to(reg, keys):
    addr, handler, _ = reg
    (private, public), (other_private, other_public) = keys
    digest = push_image(addr, handler, REPO)
    reader.write_attestation(addr, REPO, digest, other_private, TEST_RESULT, PASSED)
    assert [a.predicate for a in _verify(addr, digest, other_public, ["test-result"])] == [PASSED]
    att.attest(f"{addr}/{REPO}@{digest}", "cyclonedx", {"bomFormat": "CycloneDX"}, key=private)
    assert reader.verified_by(addr, REPO, digest, other_public, TEST_RESULT) == 1
    assert reader.verified_by(addr, REPO, digest, public, "https://cyclonedx.org/bom") == 1


def test_a_statement_about_two_images_verifies_for_each_and_not_for_a_third(reg, keys):
    """The plugin's verdict of the split shape: one statement whose subjects are the app and the model image,
    stored at each; it verifies for either digest, and is refused for a digest it does not name."""
    addr, handler, _ = reg
    (private, public), _ = keys
    app = push_image(addr, handler, REPO)
    model = push_image(addr, handler, "team/model", seed=b"model")
    third = push_image(addr, handler, REPO, seed=b"third")
    pair = [parse_reference(f"{addr}/{REPO}@{app}"), parse_reference(f"{addr}/team/model@{model}")]
    key = att.load_sign_key(private)
    for r in pair:
        with RegistryClient(addr, None) as client:
            att.attest_image(client, r, TEST_RESULT, PASSED, key, subjects=pair)
    (found,) = reader.read_attestations(addr, "team/model", model)
    assert [(s["name"], s["digest"]["sha256"]) for s in found.statement["subject"]] == [
        (f"{addr}/{REPO}", app.partition(":")[2]),
        (f"{addr}/team/model", model.partition(":")[2]),
    ]
    assert reader.accepts(found, public, model, TEST_RESULT) and reader.accepts(found, public, app, TEST_RESULT)
    assert [a.predicate for a in _verify(addr, app, public, ["test-result"])] == [PASSED]
    with RegistryClient(addr, None) as client:
        got = att.verify_attestations(client, pair[1], [public], ["test-result"])
    assert [a.image_digest for a in got] == [model]
    # the same statement at a third image's tag names neither its digest: refused
    reader.write_attestation(addr, REPO, third, private, TEST_RESULT, PASSED, claimed_digest=app)
    with pytest.raises(SignatureError) as e:
        _verify(addr, third, public, ["test-result"])
    assert e.value.kind == SignatureError.OTHER_IMAGE
    with RegistryClient(addr, None) as client, pytest.raises(UsageError, match="subjects must include it"):
        att.attest_image(client, parse_reference(f"{addr}/{REPO}@{third}"), TEST_RESULT, PASSED, key, subjects=pair)


def test_refusals_missing_other_key_other_digest_and_a_failed_verdict(reg, keys):
    addr, handler, _ = reg
    (private, public), (other_private, _) = keys
    digest = push_image(addr, handler, REPO)
    elsewhere = push_image(addr, handler, REPO, seed=b"other")
    with pytest.raises(SignatureError) as e:
        _verify(addr, digest, public, ["slsa"])
    assert e.value.kind == SignatureError.UNSIGNED and "no slsa attestation" in str(e.value)
    att.attest(f"{addr}/{REPO}@{digest}", "slsa", {}, key=other_private)
    with pytest.raises(SignatureError) as e:
        _verify(addr, digest, public, ["slsa"])
    assert e.value.kind == SignatureError.UNKNOWN_KEY and "\n" not in str(e.value)
    # a valid statement by the team's key about another image, put at this image's tag
    reader.write_attestation(addr, REPO, digest, private, SLSA, {}, claimed_digest=elsewhere)
    with pytest.raises(SignatureError) as e:
        _verify(addr, digest, public, ["slsa"])
    assert e.value.kind == SignatureError.OTHER_IMAGE and elsewhere[:19] in str(e.value)
    # a test-result that says FAILED blocks, even beside one that says PASSED
    att.attest(f"{addr}/{REPO}@{digest}", "test-result", PASSED, key=private)
    assert _verify(addr, digest, public, ["test-result"])[0].predicate == PASSED
    failed = {"result": "FAILED", "passedTests": [], "failedTests": ["test_predict", "test_health"]}
    att.attest(f"{addr}/{REPO}@{digest}", "test-result", failed, key=private)
    with pytest.raises(SignatureError) as e:
        _verify(addr, digest, public, ["test-result"])
    assert e.value.kind == SignatureError.FAILED_VERDICT and "says FAILED (failed: test_predict" in str(e.value)


def test_a_changed_envelope_is_refused(keys):
    (private, public), _ = keys
    with referrers_registry(referrers_api=False) as (addr, handler):
        digest = push_image(addr, handler, REPO)
        att.attest(f"{addr}/{REPO}@{digest}", "slsa", {"builder": "ci"}, key=private)
        tag = (REPO, reader.att_tag(digest))
        manifest = json.loads(handler.manifests[tag][0])
        layer = manifest["layers"][0]
        env = json.loads(handler.blobs[layer["digest"]])
        st = json.loads(base64.b64decode(env["payload"]))
        st["predicate"]["builder"] = "laptop"
        env["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
        data = json.dumps(env).encode()
        layer["digest"], layer["size"] = "sha256:" + hashlib.sha256(data).hexdigest(), len(data)
        handler.blobs[layer["digest"]] = data
        handler.manifests[tag] = (json.dumps(manifest).encode(), handler.manifests[tag][1])
        with pytest.raises(SignatureError) as e:
            _verify(addr, digest, public, ["slsa"])
        assert e.value.kind == SignatureError.UNKNOWN_KEY


def test_usage_errors_come_before_any_request(tmp_path, keys):
    (private, _), _ = keys
    p384, _ = pem_keypair(tmp_path, "p384", ec.SECP384R1())
    digest = "sha256:" + "ab" * 32
    with pytest.raises(UsageError, match="by digest"):
        att.attest("127.0.0.1:9/team/app:1.0", "slsa", {}, key=private)
    with pytest.raises(UsageError, match="P-256"):
        att.attest(f"127.0.0.1:9/team/app@{digest}", "slsa", {}, key=p384)
    with pytest.raises(UsageError, match="no attestation type"):
        att.attest(f"127.0.0.1:9/team/app@{digest}", "sbom", {}, key=private)
    with pytest.raises(UsageError, match="JSON object"):
        att.attest(f"127.0.0.1:9/team/app@{digest}", "slsa", [1], key=private)  # type: ignore[arg-type]
    for odd in ({"x": float("nan")}, {"x": object()}):
        with pytest.raises(UsageError, match="not plain JSON"):
            att.statement("127.0.0.1:9/team/app", digest, SLSA, odd)
    assert modelship.attest is att.attest and modelship.AttestResult is att.AttestResult  # the public API, lazily


def test_attesting_an_image_that_is_not_there_is_refused(keys):
    (private, public), _ = keys
    with referrers_registry() as (addr, handler):
        with pytest.raises(NotFoundError):
            att.attest(f"{addr}/{REPO}@sha256:{'cd' * 32}", "slsa", {}, key=private)
        assert not handler.manifests
        with pytest.raises(NotFoundError):
            _verify(addr, f"sha256:{'cd' * 32}", public, ["slsa"])


def test_cli_attest_and_verify_attestation(capsys, tmp_path, keys):
    (private, public), (_, other_public) = keys
    predicate = tmp_path / "verdict.json"
    predicate.write_text(json.dumps(PASSED))
    with referrers_registry(referrers_api=False) as (addr, handler):
        digest = push_image(addr, handler, REPO)
        ref = f"{addr}/{REPO}@{digest}"
        assert run_in_process(capsys, "sign", ref, "--key", str(private))[0] == 0
        rc, out, err = run_in_process(capsys, "verify", ref, "--key", str(public), "--attestation", "test-result")
        assert rc == 1 and err.count("\n") == 1 and "no test-result attestation" in err
        argv = ["attest", ref, "--key", str(private), "--type", "test-result", "--predicate", str(predicate)]
        rc, out, err = run_in_process(capsys, *argv, "--json")
        assert rc == 0, err
        r = json.loads(out)
        assert r["attestation"] == f"{addr}/{REPO}:{reader.att_tag(digest)}" and r["predicate_type"] == TEST_RESULT
        assert set(r) == {"ref", "image_digest", "predicate_type", "attestation", "attestation_digest", "signer",
                          "unchanged", "referrer"}  # fmt: skip
        rc, out, err = run_in_process(capsys, *argv)
        assert rc == 0 and out.startswith(f"attested {ref}: test-result at ") and "already there" in out
        rc, out, err = run_in_process(capsys, "verify", ref, "--key", str(public), "--attestation", "test-result")
        assert rc == 0 and f"verified {ref}: test-result attested by sha256:" in out, err
        rc, out, err = run_in_process(capsys, "verify", ref, "--key", str(public), "--attestation", "test-result",
                                      "--attestation", "slsa", "--json")  # fmt: skip
        assert rc == 1 and "no slsa attestation" in err and err.count("\n") == 1
        rc, out, err = run_in_process(capsys, "verify", ref, "--key", str(public), "--attestation", "test-result",
                                      "--json")  # fmt: skip
        assert rc == 0 and json.loads(out)["attestations"][0]["predicate"] == PASSED
        rc, out, err = run_in_process(capsys, "verify", ref, "--key", str(other_public), "--attestation", "slsa")
        assert rc == 1 and "none of its 1 signature(s)" in err  # the signature is checked first
    key_text = private.read_text().split("-----")[2].strip().splitlines()[0]
    bad_files = (("nope.json", "cannot read the predicate"), ("[1]", "must be a JSON object"), ("{", "not JSON"),
                 ('{"x": NaN}', "NaN is not JSON"))  # fmt: skip
    for bad, why in bad_files:
        path = tmp_path / "p.json"
        if bad != "nope.json":
            path.write_text(bad)
        target = tmp_path / bad if bad == "nope.json" else path
        rc, out, err = run_in_process(capsys, "attest", ref, "--key", str(private), "--type", "slsa",
                                      "--predicate", str(target))  # fmt: skip
        assert rc == 2 and why in err and err.count("\n") == 1 and key_text not in out + err
    rc, _, err = run_in_process(capsys, "verify", ref, "--key", str(public), "--attestation", "sbom")
    assert rc == 2 and "no attestation type" in err
    rc, _, err = run_in_process(capsys, "verify", str(tmp_path), "--attestation", "slsa")
    assert rc == 2 and "is a folder" in err
