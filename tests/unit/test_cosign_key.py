"""cosign's encrypted private keys (modelship.trust.cosign_key) as --sign-key / --key of every signing verb.

Judged twice: against keys cosign itself wrote (tests/data/cosign, with the password its own tests use) and
against tests/support/cosign_keys.py, a writer of the format made apart from the reader (hashlib's scrypt,
libsodium's crypto_secretbox), for round trips with random passwords. Every refusal is one line that names the
file and never shows the password.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelship.errors import UsageError
from modelship.trust import cosign, cosign_key, oms
from support import cosign_keys as writer
from support import cosign_reader as reader
from support.cli import run_in_process
from support.referrers_registry import push_image, referrers_registry

DATA = Path(__file__).parents[1] / "data" / "cosign"
# sha256 of each key's public DER, found apart from modelship's reader (tests/data/cosign/README.md)
COSIGNS_KEYS = {
    "sigstore-label.key": "sha256:f1057bf3c114d5486f0bdb3c702596d6154158248980d4be49f6c61fdc62c591",
    "cosign-label.key": "sha256:a6659c08b9909880c6e4bc51cab6fd7265673f67d614c20ba59a18957feb700d",
}
FILES = {"model.onnx": "33" * 32}
NOWHERE = f"127.0.0.1:9/team/app@sha256:{'ab' * 32}"  # nothing answers: a verb that got past the key would fail


def _public_pem(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, spki))
    return path


def _refused(path: Path, *needles: str, password: str | None = None) -> str:
    with pytest.raises(UsageError) as err:
        oms.load_private_key(path)
    line = str(err.value)
    assert line.startswith(f"{path}: ") and "\n" not in line, line
    for needle in needles:
        assert needle in line, line
    if password:
        assert password not in line
    return line


@pytest.mark.parametrize("name", sorted(COSIGNS_KEYS))
def test_keys_cosign_wrote_open_with_their_password(monkeypatch, name):
    monkeypatch.setenv("COSIGN_PASSWORD", "hello")
    key = cosign.load_sign_key(DATA / name)  # the image signer's loader is the model signer's
    assert key.curve.name == "secp256r1"
    assert oms.fingerprint(key.public_key()) == COSIGNS_KEYS[name]
    public = key.public_key()
    assert oms.verify(oms.sign(FILES, oms.load_private_key(DATA / name)), FILES, [public]).files == FILES


def test_an_image_signed_with_cosigns_key_is_accepted_by_the_independent_reader(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("COSIGN_PASSWORD", "hello")
    private = DATA / "sigstore-label.key"
    public = _public_pem(oms.load_private_key(private), tmp_path / "cosign.pub")
    with referrers_registry(referrers_api=False) as (addr, handler):
        digest = push_image(addr, handler, "team/app")
        ref = f"{addr}/team/app@{digest}"
        rc, _, err = run_in_process(capsys, "sign", ref, "--key", str(private))
        assert rc == 0, err
        assert reader.verified_by(addr, "team/app", digest, public) == 1
        rc, out, err = run_in_process(capsys, "verify", ref, "--key", str(public))
        assert rc == 0 and COSIGNS_KEYS["sigstore-label.key"] in out, err


@pytest.mark.parametrize(
    ("n", "label"),
    [(32768, writer.COSIGN_LABEL), (65536, writer.SIGSTORE_LABEL), (131072, writer.SIGSTORE_LABEL)],
    ids=["legacy-2^15-cosign-label", "standard-2^16", "owasp-2^17"],
)
def test_round_trip_with_a_random_password(monkeypatch, tmp_path, n, label):
    # any bytes a POSIX environment holds (not only UTF-8): every byte but NUL, which ends a C string
    password = bytes(b % 255 + 1 for b in os.urandom(12))
    monkeypatch.setenv("COSIGN_PASSWORD", os.fsdecode(password))
    path = tmp_path / "cosign.key"
    key = writer.write_key(path, password, label=label, n=n)
    assert oms.load_private_key(path).private_numbers() == key.private_numbers()


def test_an_empty_password_is_a_password_as_for_cosign(monkeypatch, tmp_path):
    path = tmp_path / "cosign.key"
    key = writer.write_key(path, b"", n=32768)
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    assert oms.load_private_key(path).private_numbers() == key.private_numbers()
    monkeypatch.delenv("COSIGN_PASSWORD")  # unset is not empty: cosign would prompt; modelship says what to set
    _refused(path, "set COSIGN_PASSWORD to its password", "empty if generated without one")


def test_a_wrong_or_missing_password_is_one_line_and_exit_2_before_anything_is_sent(capsys, monkeypatch, tmp_path):
    path = tmp_path / "cosign.key"
    writer.write_key(path, b"right horse battery", n=32768)
    body = path.read_text().splitlines()[1]
    monkeypatch.setenv("COSIGN_PASSWORD", "wrong staple")
    _refused(path, "COSIGN_PASSWORD does not open this cosign encrypted key", password="wrong staple")
    predicate = tmp_path / "p.json"
    predicate.write_text("{}")
    attest = ["attest", NOWHERE, "--type", "slsa", "--predicate", str(predicate), "--key"]
    for argv in (["sign", NOWHERE, "--key"], attest):
        rc, out, err = run_in_process(capsys, *argv, str(path))
        assert rc == 2 and err.count("\n") == 1 and f"{path}: COSIGN_PASSWORD does not open" in err, err
        assert "wrong staple" not in err + out and body not in err + out
    monkeypatch.delenv("COSIGN_PASSWORD")
    rc, _, err = run_in_process(capsys, "promote", NOWHERE, "--tag", "stable", "--sign-key", str(path))
    assert rc == 2 and err.count("\n") == 1 and f"{path}: a cosign encrypted key; set COSIGN_PASSWORD" in err, err


@pytest.fixture(scope="module")
def sealed() -> dict:
    """One document of the format with password 'pw' (the KDF is the cost: made once, altered per test)."""
    return writer.encrypt(writer.pkcs8(ec.generate_private_key(ec.SECP256R1())), b"pw", n=32768)


def test_the_writers_document_is_what_the_pem_block_carries(monkeypatch, tmp_path, sealed):
    path = tmp_path / "cosign.key"
    path.write_bytes(writer.pem(sealed))
    lines = path.read_text().splitlines()
    assert json.loads(base64.b64decode("".join(lines[1:-1]))) == sealed
    assert max(map(len, lines)) == 64  # Go's pem.EncodeToMemory line length
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    assert oms.load_private_key(path).curve.name == "secp256r1"


def _flip(b64: str, at: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    ("field", "at"),
    [("ciphertext", 0), ("ciphertext", 40), ("ciphertext", -1), ("nonce", 3), ("salt", 5)],
    ids=["mac", "body", "last-byte", "nonce", "salt"],
)
def test_an_altered_file_does_not_open_secretbox_mac(monkeypatch, tmp_path, sealed, field, at):
    path = tmp_path / "cosign.key"
    doc = copy.deepcopy(sealed)
    part = doc if field == "ciphertext" else doc["cipher"] if field == "nonce" else doc["kdf"]
    part[field] = _flip(part[field], at)
    path.write_bytes(writer.pem(doc))
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    _refused(path, "does not open this cosign encrypted key", "altered")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d["kdf"].update(name="argon2id"), "its key derivation is 'argon2id', not scrypt"),
        (lambda d: d["cipher"].update(name="aes-gcm"), "its cipher is 'aes-gcm', not nacl/secretbox"),
        (lambda d: d["kdf"]["params"].update(N=2**22), "scrypt parameters are none of the three cosign writes"),
        (lambda d: d["kdf"]["params"].update(r=16), "scrypt parameters are none of the three cosign writes"),
        (lambda d: d["kdf"]["params"].update(N=65536.0), "scrypt parameters are none of the three cosign writes"),
        (lambda d: d["cipher"].update(nonce=base64.b64encode(b"x" * 12).decode()), "nonce is 12 bytes, not 24"),
        (lambda d: d.pop("ciphertext"), "not the JSON of an encrypted key"),
        (lambda d: d["kdf"].update(salt="not base64!"), "not the JSON of an encrypted key"),
    ],
    ids=["not-scrypt", "not-secretbox", "costly-N", "other-r", "float-N", "short-nonce", "no-ciphertext", "bad-b64"],
)
def test_what_is_not_cosigns_format_is_refused_before_any_kdf(monkeypatch, tmp_path, sealed, change, reason):
    path = tmp_path / "cosign.key"
    doc = copy.deepcopy(sealed)
    change(doc)
    path.write_bytes(writer.pem(doc))
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    _refused(path, "not a cosign encrypted key that modelship reads", reason, "cosign generate-key-pair")


def test_a_cut_block_or_a_box_without_a_key_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    cut = tmp_path / "cut.key"
    cut.write_bytes(writer.pem({"kdf": {}})[:60])
    _refused(cut, "PEM block is cut or malformed")
    junk = tmp_path / "junk.key"
    junk.write_bytes(writer.pem(writer.encrypt(b"not a DER key", b"pw", n=32768)))
    _refused(junk, "the cosign key opens but holds no DER private key")


def test_a_cosign_key_on_another_curve_signs_models_but_not_images(monkeypatch, tmp_path):
    path = tmp_path / "p384.key"
    writer.write_key(path, b"pw", key=ec.generate_private_key(ec.SECP384R1()), n=32768)
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    assert oms.load_private_key(path).curve.name == "secp384r1"
    with pytest.raises(UsageError, match="image signatures take P-256"):
        cosign.load_sign_key(path)


def test_only_cosigns_labels_are_taken_for_its_format():
    assert cosign_key.is_cosign_key((DATA / "cosign-label.key").read_bytes())
    assert not cosign_key.is_cosign_key(
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
