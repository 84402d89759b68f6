"""Signed model images against the testbed's registry: ``publish oci://… --sign-key`` puts model.sig in a layer of
the image, so containerd's mount of it (what an image volume shows the app), a copy to another repository and a
fetch all carry a signature the reference ``model_signing verify key`` accepts; ``--verify-key`` picks the newest
version that verifies and refuses a pinned one that does not; ``sign-model`` signs an image published unsigned by
writing it again (only the new small blobs) and moving its tag."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from modelship.manifest import SIGNATURE_NAME, Lock
from support.cli import run_cli
from support.modelimage import MODEL_DIR, ctr_mounted, unique_repo
from support.oci import manifest
from support.oms import flip_byte, keypair, model_folder, reference_verify

pytestmark = pytest.mark.docker


def _publish(model, uri, version, *extra):
    r = run_cli("publish", str(model), uri, "--version", version, "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_signed_model_image_carries_its_signature_mounted_copied_and_fetched(registry, tmp_path):
    private, public = keypair(tmp_path, "team")
    model = model_folder(tmp_path / "model")
    uri = f"oci://{registry}/{unique_repo('ms/signed')}"
    out = _publish(model, uri, "1.0.0", "--sign-key", str(private))
    # the image's last layer is model.sig, named by its label and not one of the model layers
    _, m, _ = manifest(registry, uri.split("/", 3)[3], "1.0.0")
    assert m["layers"][-1]["digest"] == out["signature_layer"]
    assert m["layers"][-1]["annotations"]["org.opencontainers.image.title"] == SIGNATURE_NAME
    assert out["signature_layer"] not in [layer["digest"] for layer in out["layers"]]

    # containerd pulls, unpacks and mounts it read-only (as the kubelet mounts an image volume): the reference
    # verifier accepts the mounted model folder as it is, and refuses it once a byte is flipped
    with ctr_mounted(out["ref"], tmp_path / "mnt") as mnt:
        folder = mnt / MODEL_DIR.lstrip("/")
        ok = reference_verify(folder / SIGNATURE_NAME, public, folder)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        shutil.copytree(folder, tmp_path / "copy")
    flip_byte(tmp_path / "copy" / "model.onnx")
    assert reference_verify(tmp_path / "copy" / SIGNATURE_NAME, public, tmp_path / "copy").returncode != 0

    # publishing it again changes nothing (signatures differ from run to run; this one is kept)
    again = _publish(model, uri, "1.0.0", "--sign-key", str(private))
    assert again["unchanged"] and again["uploaded_bytes"] == 0 and again["image_digest"] == out["image_digest"]

    # a copy carries it: fetch --verify-key of the copy installs it, and the reference verifier accepts DEST
    copied = f"{uri}-copy"
    r = run_cli("copy", f"{uri.removeprefix('oci://')}:1.0.0", f"{copied.removeprefix('oci://')}:1.0.0")
    assert r.returncode == 0, r.stderr
    dest = tmp_path / "dest"
    r = run_cli("fetch", copied, str(dest), "--verify-key", str(public))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["a", "a-c.json", "model.onnx", "model.sig", "modelship.json"]
    ok = reference_verify(dest / SIGNATURE_NAME, public, dest, ignore_unsigned=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_verify_key_takes_the_newest_model_image_that_verifies_and_refuses_a_pinned_one_that_does_not(
    registry, tmp_path
):
    private, public = keypair(tmp_path, "team")
    stranger, _ = keypair(tmp_path, "stranger")
    uri = f"oci://{registry}/{unique_repo('ms/latest-signed')}"
    _publish(model_folder(tmp_path / "m1"), uri, "1.0.0", "--sign-key", str(private))
    _publish(model_folder(tmp_path / "m2"), uri, "2.0.0")  # unsigned
    _publish(model_folder(tmp_path / "m3"), uri, "3.0.0", "--sign-key", str(stranger))

    r = run_cli("resolve", uri, "--verify-key", str(public), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == "1.0.0"
    warning = "skipped newer version(s) that do not verify: 3.0.0 (unknown key), 2.0.0 (unsigned); latest is 1.0.0"
    assert warning in r.stderr

    r = run_cli("lock", uri, "--verify-key", str(public), "-o", str(tmp_path / "m.lock"))
    assert r.returncode == 0, r.stderr
    lk = Lock.load(tmp_path / "m.lock")
    assert lk.version == "1.0.0" and lk.signer and lk.signer.startswith("sha256:")

    for version, why in (("2.0.0", "the version is unsigned"), ("3.0.0", "not signed by any of the 1 verify key")):
        dest = tmp_path / f"d-{version}"
        r = run_cli("fetch", uri, str(dest), "--version", version, "--verify-key", str(public))
        assert r.returncode == 1 and why in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not dest.exists()


def test_sign_model_signs_an_image_published_unsigned_uploading_only_the_new_blobs(registry, tmp_path):
    private, public = keypair(tmp_path, "team")
    other, other_public = keypair(tmp_path, "rotated")
    model = model_folder(tmp_path / "model")
    repo = unique_repo("ms/sign-later")
    uri = f"oci://{registry}/{repo}"
    before = _publish(model, uri, "1.0.0")
    assert "signature_layer" not in before
    # publish --sign-key does not silently move the tag of the unsigned image: it says how to sign it
    r = run_cli("publish", str(model), uri, "--version", "1.0.0", "--sign-key", str(private))
    assert r.returncode == 1 and "already holds this model, unsigned; sign it with 'modelship sign-model" in r.stderr

    r = run_cli("-v", "sign-model", uri, "--version", "1.0.0", "--sign-key", str(private), "--json")
    assert r.returncode == 0, r.stderr
    signed = json.loads(r.stdout)
    assert signed["image_digest"] != before["image_digest"]
    assert signed["ref"] == f"{registry}/{repo}@{signed['image_digest']}"
    sent = int(re.search(r"signed: .* \((\d+) bytes uploaded\)", r.stderr).group(1))
    assert 0 < sent < 16 * 1024  # the signature layer and the new config: no model layer again
    digest, m, _ = manifest(registry, repo, "1.0.0")
    assert digest == signed["image_digest"]
    assert [d["digest"] for d in m["layers"][:-1]] == [d["digest"] for d in before["layers"]]
    _, mp, _ = manifest(registry, repo, "1.0.0-modelpack")
    assert mp["subject"]["digest"] == signed["image_digest"]  # the ModelPack manifest refers to the signed image

    dest = tmp_path / "dest"
    r = run_cli("fetch", uri, str(dest), "--verify-key", str(public))
    assert r.returncode == 0, r.stderr
    ok = reference_verify(dest / SIGNATURE_NAME, public, dest)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    r = run_cli("sign-model", uri, "--version", "1.0.0", "--sign-key", str(other))
    assert r.returncode == 2 and "is already signed; --force replaces its model.sig" in r.stderr
    r = run_cli("sign-model", uri, "--version", "1.0.0", "--sign-key", str(other), "--force")
    assert r.returncode == 0, r.stderr
    resigned = manifest(registry, repo, "1.0.0")[1]
    assert len(resigned["layers"]) == len(m["layers"])  # replaced, not added
    assert run_cli("resolve", uri, "--verify-key", str(other_public)).returncode == 0
    refused = run_cli("resolve", uri, "--verify-key", str(public))
    assert refused.returncode == 1 and "not signed by any of the 1 verify key" in refused.stderr
