"""modelship's OMS signatures and the reference implementation (PyPI model-signing's CLI) judge each other."""

from __future__ import annotations

import pytest

from modelship.errors import SignatureError
from modelship.manifest import MANIFEST_NAME
from modelship.modeldir import compute_manifest
from modelship.trust import oms
from support.oms import flip_byte, keypair, model_folder, reference_sign, reference_verify


def _digests(root):
    return {f.path: f.sha256 for f in compute_manifest(root).files}


def test_modelship_signature_passes_the_reference_verifier_and_a_flipped_byte_fails_it(tmp_path):
    private, public = keypair(tmp_path)
    dest = model_folder(tmp_path / "dest")
    manifest = compute_manifest(dest)
    manifest.write(dest / MANIFEST_NAME)  # a fetched DEST: modelship.json + the signature beside the files
    (dest / oms.SIGNATURE_NAME).write_bytes(oms.sign(_digests(dest), oms.load_private_key(private), "dest"))

    ok = reference_verify(dest / oms.SIGNATURE_NAME, public, dest)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    # modelship.json and model.sig are recorded as ignored: even without --ignore_unsigned_files it passes
    strict = reference_verify(dest / oms.SIGNATURE_NAME, public, dest, ignore_unsigned=False)
    assert strict.returncode == 0, strict.stderr + strict.stdout

    flip_byte(dest / "a" / "b.bin")
    bad = reference_verify(dest / oms.SIGNATURE_NAME, public, dest)
    assert bad.returncode != 0
    assert "a/b.bin" in bad.stdout + bad.stderr


def test_reference_signature_of_another_key_fails_the_reference_verifier(tmp_path):
    private, _ = keypair(tmp_path, "signer")
    _, other = keypair(tmp_path, "other")
    dest = model_folder(tmp_path / "dest")
    (tmp_path / "s.sig").write_bytes(oms.sign(_digests(dest), oms.load_private_key(private)))
    assert reference_verify(tmp_path / "s.sig", other, dest).returncode != 0


@pytest.mark.parametrize("inside", [False, True], ids=["signature-outside", "signature-inside-the-folder"])
def test_reference_signature_verifies_in_modelship(tmp_path, inside):
    private, public = keypair(tmp_path)
    model = model_folder(tmp_path / "model")
    signature = (model if inside else tmp_path) / oms.SIGNATURE_NAME
    reference_sign(private, signature, model)
    keys = oms.load_public_keys([public])

    done = oms.verify(signature.read_bytes(), _digests(model), keys)
    assert done.fingerprint == oms.fingerprint(keys[0])
    assert set(done.files) == {"a/b.bin", "a-c.json", "model.onnx"}

    flip_byte(model / "model.onnx")
    with pytest.raises(SignatureError) as err:
        oms.verify(signature.read_bytes(), _digests(model), keys)
    assert err.value.kind == SignatureError.BYTES_DIFFER
    assert "model.onnx" in str(err.value)
