"""Certificate-based model signatures, judged both ways by the reference ``model_signing`` CLI with a CA made here
(a root, an intermediate, a leaf allowed to sign): ``publish --sign-key --sign-cert --cert-chain`` writes what
``model_signing verify certificate`` accepts (folder store and model image), ``--verify-cert-chain ROOT.pem``
accepts what ``model_signing sign certificate`` writes, and another CA's root, a leaf not allowed to sign and a
certificate of another key are refused.

Sigstore keyless signing (a Fulcio certificate for an OIDC identity, logged in Rekor) is not tested and not
offered: it needs the network and an identity token, which this machine has neither of; faking Fulcio and
Rekor would test a fake."""

from __future__ import annotations

import json

import pytest

from modelship.errors import SignatureError
from modelship.manifest import SIGNATURE_NAME
from modelship.modeldir import compute_manifest
from modelship.trust import certs, oms
from support.cli import run_cli
from support.modelimage import unique_repo
from support.oms import (
    certificate_chain,
    flip_byte,
    model_folder,
    reference_sign_certificate,
    reference_verify_certificate,
)


def _signing(ca):
    return ["--sign-key", str(ca["key"]), "--sign-cert", str(ca["leaf"]), "--cert-chain", str(ca["intermediate"])]


def test_a_certificate_signed_version_passes_the_reference_verifier_and_fetch_verify_cert_chain(tmp_path):
    ca, other = certificate_chain(tmp_path, "team"), certificate_chain(tmp_path, "other")
    store = tmp_path / "store" / "iris"
    r = run_cli("publish", str(model_folder(tmp_path / "model")), store.as_uri(), "--version", "1.0.0", *_signing(ca))
    assert r.returncode == 0, r.stderr
    version = store / "1.0.0"
    ok = reference_verify_certificate(version / SIGNATURE_NAME, [ca["root"]], version)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert reference_verify_certificate(version / SIGNATURE_NAME, [other["root"]], version).returncode != 0

    dest = tmp_path / "dest"
    r = run_cli("fetch", store.as_uri(), str(dest), "--verify-cert-chain", str(ca["root"]))
    assert r.returncode == 0, r.stderr
    ok = reference_verify_certificate(dest / SIGNATURE_NAME, [ca["root"]], dest)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused = run_cli("fetch", store.as_uri(), str(tmp_path / "d2"), "--verify-cert-chain", str(other["root"]))
    assert refused.returncode == 1 and not (tmp_path / "d2").exists()
    assert "does not chain to a given root" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    # the intermediate alone is no root (as for OpenSSL, the path must end at a self-signed trusted certificate)
    assert run_cli("resolve", store.as_uri(), "--verify-cert-chain", str(ca["intermediate"])).returncode == 1

    flip_byte(version / "a-c.json")
    assert reference_verify_certificate(version / SIGNATURE_NAME, [ca["root"]], version).returncode != 0


def test_a_certificate_signed_model_image_fetches_with_verify_cert_chain(registry, tmp_path):
    ca = certificate_chain(tmp_path, "team")
    uri = f"oci://{registry}/{unique_repo('ms/cert-signed')}"
    r = run_cli("publish", str(model_folder(tmp_path / "m")), uri, "--version", "1.0.0", "--json", *_signing(ca))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["signature_layer"]
    dest = tmp_path / "dest"
    r = run_cli("fetch", uri, str(dest), "--verify-cert-chain", str(ca["root"]))
    assert r.returncode == 0, r.stderr
    ok = reference_verify_certificate(dest / SIGNATURE_NAME, [ca["root"]], dest)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def _digests(root):
    return {f.path: f.sha256 for f in compute_manifest(root).files}


def test_modelship_accepts_what_the_reference_signs_with_a_certificate(tmp_path):
    ca, other = certificate_chain(tmp_path, "team"), certificate_chain(tmp_path, "other")
    model = model_folder(tmp_path / "model")
    reference_sign_certificate(ca, tmp_path / "s.sig", model)
    bundle = (tmp_path / "s.sig").read_bytes()

    done = oms.verify(bundle, _digests(model), [certs.load_roots([ca["root"]])])
    leaf_key = oms.load_private_key(ca["key"]).public_key()
    assert done.fingerprint == oms.fingerprint(leaf_key)

    with pytest.raises(SignatureError) as err:
        oms.verify(bundle, _digests(model), [certs.load_roots([other["root"]])])
    assert err.value.kind == SignatureError.UNKNOWN_KEY and "does not chain to a given root" in str(err.value)
    flip_byte(model / "model.onnx")
    with pytest.raises(SignatureError) as err:
        oms.verify(bundle, _digests(model), [certs.load_roots([ca["root"]])])
    assert err.value.kind == SignatureError.BYTES_DIFFER


def test_a_leaf_not_allowed_to_sign_is_refused_by_both_and_a_foreign_certificate_at_signing(tmp_path):
    tls = certificate_chain(tmp_path, "tls", signing=False)  # a TLS server certificate: no digitalSignature
    model = model_folder(tmp_path / "model")
    reference_sign_certificate(tls, tmp_path / "s.sig", model)  # the reference signs anything...
    assert reference_verify_certificate(tmp_path / "s.sig", [tls["root"]], model).returncode != 0  # ...not verify
    with pytest.raises(SignatureError, match="does not allow signing"):
        oms.verify((tmp_path / "s.sig").read_bytes(), _digests(model), [certs.load_roots([tls["root"]])])

    store = tmp_path / "store"
    r = run_cli("publish", str(model), store.as_uri(), "--version", "1", *_signing(tls))
    assert r.returncode == 2 and "does not allow signing" in r.stderr and not store.exists()
    team = certificate_chain(tmp_path, "team")
    mixed = ["--sign-key", str(team["key"]), "--sign-cert", str(tls["leaf"])]
    r = run_cli("publish", str(model), store.as_uri(), "--version", "1", *mixed)
    assert r.returncode == 2 and "the certificate is not of the key" in r.stderr and not store.exists()
