"""OMS signatures from recorded sha256s (modelship.trust.oms): what verifies, and each refusal in one line."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from modelship.errors import SignatureError, UsageError
from modelship.trust import oms
from support.oms import pem_keypair

FILES = {"a/b.bin": "11" * 32, "a-c.json": "22" * 32, "model.onnx": "33" * 32}


def _pem_pair(tmp_path, name="k", curve=None):
    private, public = pem_keypair(tmp_path, name, curve)
    return oms.load_private_key(private), oms.load_public_keys([public])[0]


def _refused(bundle, files, keys):
    with pytest.raises(SignatureError) as err:
        oms.verify(bundle, files, keys, what="v1/model.sig")
    assert "\n" not in str(err.value) and str(err.value).startswith("v1/model.sig: ")
    return err.value


def test_statement_lists_every_file_in_path_order_under_a_root_digest():
    st = oms.statement(FILES, "m")
    names = [r["name"] for r in st["predicate"]["resources"]]
    assert names == ["a/b.bin", "a-c.json", "model.onnx"]  # by path components, as model_signing sorts
    root = hashlib.sha256(b"".join(bytes.fromhex(FILES[n]) for n in names)).hexdigest()
    assert st["subject"] == [{"name": "m", "digest": {"sha256": root}}]
    assert st["predicateType"] == "https://model_signing/signature/v1.0"
    assert st["predicate"]["serialization"]["ignore_paths"] == ["modelship.json", "model.sig"]


def test_sign_then_verify_names_the_signer_by_der_fingerprint(tmp_path):
    private, public = _pem_pair(tmp_path)
    done = oms.verify(oms.sign(FILES, private), FILES, [public])
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert done.fingerprint == "sha256:" + hashlib.sha256(der).hexdigest()
    assert dict(done.files) == FILES
    # modelship's own files beside the model are not model files
    assert oms.verify(oms.sign(FILES, private), {**FILES, "modelship.json": "44" * 32}, [public]).files == FILES


def test_the_second_of_several_keys_verifies(tmp_path):
    private, public = _pem_pair(tmp_path, "a")
    _, other = _pem_pair(tmp_path, "b")
    assert oms.verify(oms.sign(FILES, private), FILES, [other, public]).fingerprint == oms.fingerprint(public)


def test_unknown_key_is_refused_with_the_fingerprints_tried(tmp_path):
    private, _ = _pem_pair(tmp_path, "a")
    _, other = _pem_pair(tmp_path, "b")
    err = _refused(oms.sign(FILES, private), FILES, [other])
    assert err.kind == SignatureError.UNKNOWN_KEY
    assert err.fingerprints == (oms.fingerprint(other),) and oms.fingerprint(other) in str(err)


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({**FILES, "model.onnx": "99" * 32}, "model.onnx"),  # bytes differ
        ({k: v for k, v in FILES.items() if k != "a-c.json"}, "a-c.json"),  # missing
        ({**FILES, "extra.pkl": "55" * 32}, "extra.pkl"),  # not signed
        ({"other.bin": "66" * 32}, "a-c.json"),  # a signature for another model
    ],
    ids=["digest-differs", "file-missing", "file-extra", "another-model"],
)
def test_other_bytes_are_refused_naming_the_file(tmp_path, files, named):
    private, public = _pem_pair(tmp_path)
    err = _refused(oms.sign(FILES, private), files, [public])
    assert err.kind == SignatureError.BYTES_DIFFER and named in str(err)
    assert err.fingerprints == (oms.fingerprint(public),)


def _edit_payload(bundle: bytes, change) -> bytes:
    doc = json.loads(bundle)
    st = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    change(st)
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    return json.dumps(doc).encode()


def test_an_edited_statement_no_longer_verifies(tmp_path):
    private, public = _pem_pair(tmp_path)

    def swap(st):
        st["predicate"]["resources"][0]["digest"] = "99" * 32

    err = _refused(_edit_payload(oms.sign(FILES, private), swap), {**FILES, "a/b.bin": "99" * 32}, [public])
    assert err.kind == SignatureError.UNKNOWN_KEY


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],
        lambda b: b"",
        lambda b: b"\x00\xff garbage",
        lambda b: b.replace(b'"payload": "', b'"payload": "!!'),
        lambda b: b.replace(b"bundle.v0.3", b"bundle.v9"),
        lambda b: b"[1, 2]",
    ],
    ids=["truncated", "empty", "binary", "bad-base64", "other-media-type", "not-an-object"],
)
def test_a_damaged_bundle_is_malformed_in_one_line(tmp_path, damage):
    private, public = _pem_pair(tmp_path)
    err = _refused(damage(oms.sign(FILES, private)), FILES, [public])
    assert err.kind == SignatureError.MALFORMED


def test_key_files_that_are_not_keys_are_usage_errors_naming_them(tmp_path):
    (tmp_path / "junk.pem").write_text("not a key\n")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pub").write_bytes(
        rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    _pem_pair(tmp_path, "ec")
    cases = [
        (oms.load_private_key, tmp_path / "junk.pem"),
        (oms.load_private_key, tmp_path / "ec.pub"),  # a public key given as the signing key
        (oms.load_private_key, tmp_path / "missing.pem"),
        (lambda p: oms.load_public_keys([p]), tmp_path / "junk.pem"),
        (lambda p: oms.load_public_keys([p]), tmp_path / "ec.pem"),  # the private key given as a verify key
        (lambda p: oms.load_public_keys([p]), tmp_path / "rsa.pub"),
    ]
    for load, path in cases:
        with pytest.raises(UsageError) as err:
            load(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_a_file_modelship_keeps_for_itself_cannot_be_signed_as_a_model_file(tmp_path):
    private, _ = _pem_pair(tmp_path)
    with pytest.raises(UsageError, match=r"model\.sig"):
        oms.sign({**FILES, "model.sig": "77" * 32}, private)
