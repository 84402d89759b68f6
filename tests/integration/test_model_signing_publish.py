"""``publish --sign-key``: the version gets model.sig before its manifest, and the reference verifier accepts it."""

from __future__ import annotations

import modelship
from modelship.manifest import SIGNATURE_NAME
from support.cli import run_cli
from support.oms import flip_byte, keypair, model_folder, reference_verify


def test_cli_publish_signs_a_file_store_version_the_reference_verifier_accepts(tmp_path):
    private, public = keypair(tmp_path)
    model = model_folder(tmp_path / "model")
    store = tmp_path / "store" / "iris"
    r = run_cli("publish", str(model), store.as_uri(), "--version", "1.0.0", "--sign-key", str(private))
    assert r.returncode == 0, r.stderr
    version = store / "1.0.0"
    assert sorted(p.name for p in version.iterdir()) == ["a", "a-c.json", "model.onnx", "model.sig", "modelship.json"]
    ok = reference_verify(version / SIGNATURE_NAME, public, version, ignore_unsigned=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # resolve sees the model's files only: model.sig is the version's signature, not a model file
    assert {f.path for f in modelship.resolve(store.as_uri()).files} == {"a/b.bin", "a-c.json", "model.onnx"}
    flip_byte(version / "a-c.json")
    assert reference_verify(version / SIGNATURE_NAME, public, version).returncode != 0


def test_publish_with_a_key_that_is_not_a_key_uploads_nothing(tmp_path):
    (tmp_path / "junk.pem").write_text("-----BEGIN NOTHING-----\n")
    model = model_folder(tmp_path / "model")
    store = tmp_path / "store"
    r = run_cli("publish", str(model), store.as_uri(), "--version", "1", "--sign-key", str(tmp_path / "junk.pem"))
    assert r.returncode == 2
    line = f"modelship: error: {tmp_path / 'junk.pem'}: not a PEM private key; create one with openssl ecparam"
    assert r.stderr.strip().splitlines() == [line + " -name prime256v1"]
    assert not store.exists()


def test_publish_to_azurite_signs_the_version(tmp_path, blob_container, azure_env):
    private, public = keypair(tmp_path)
    model = model_folder(tmp_path / "model")
    uri = f"az://devstoreaccount1/{blob_container.container_name}/models/iris"
    modelship.publish(model, uri, version="2.0.0", sign_key=private, progress=False)
    got = tmp_path / "got"
    for blob in blob_container.list_blobs(name_starts_with="models/iris/2.0.0/"):
        path = got / blob.name.removeprefix("models/iris/2.0.0/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob_container.download_blob(blob.name).readall())
    assert (got / SIGNATURE_NAME).is_file()
    ok = reference_verify(got / SIGNATURE_NAME, public, got, ignore_unsigned=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_fetch_from_azurite_verifies_and_leaves_a_signature_the_reference_verifier_accepts(
    tmp_path, blob_container, azure_env
):
    private, public = keypair(tmp_path, "team")
    _, stranger = keypair(tmp_path, "stranger")
    uri = f"az://devstoreaccount1/{blob_container.container_name}/models/iris"
    modelship.publish(model_folder(tmp_path / "model"), uri, version="1.0.0", sign_key=private, progress=False)
    dest = tmp_path / "dest"
    r = run_cli("fetch", uri, str(dest), "--verify-key", str(public))
    assert r.returncode == 0, r.stderr
    ok = reference_verify(dest / SIGNATURE_NAME, public, dest, ignore_unsigned=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused = run_cli("fetch", uri, str(tmp_path / "d2"), "--verify-key", str(stranger))
    assert refused.returncode == 1 and "not signed by any of the 1 verify key(s)" in refused.stderr
    assert not (tmp_path / "d2").exists()
