"""``build --model DIR`` and ``assemble --model DIR`` with ``--verify-key``: DIR's model.sig must verify before any
image work (a refusal is one line, exit 1, no engine or registry touched); the image carries model.sig in its
model dir (the reference ``model_signing verify key`` accepts the folder read back out of it) and the label
io.modelship.model.signer, which ``inspect`` shows. Without a verify key, model.sig is carried, no label."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import uuid

import pytest

import modelship
from modelship.conventions import MODEL_SIGNER_LABEL
from modelship.manifest import MANIFEST_NAME, SIGNATURE_NAME
from modelship.trust import oms
from support.builds import build_cmd, make_app
from support.cli import run_cli
from support.oci import build_app_image, push_image
from support.oms import flip_byte, keypair, model_folder, reference_verify

pytestmark = pytest.mark.docker
MODEL_DIR = "/opt/modelship/model"
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent"}  # past the check, a build would stop here instead


def _fingerprint(public) -> str:
    return oms.fingerprint(oms.load_public_keys([public])[0])


@pytest.fixture
def signed(tmp_path):
    """(DEST of ``fetch --verify-key``, the team's private key, its public key)."""
    private, public = keypair(tmp_path, "team")
    store = tmp_path / "store" / "iris"
    modelship.publish(
        model_folder(tmp_path / "model"), store.as_uri(), version="1.0.0", sign_key=private, progress=False
    )
    dest = tmp_path / "dest"
    modelship.fetch(store.as_uri(), dest, verify_keys=[public], progress=False)
    assert (dest / SIGNATURE_NAME).is_file()
    return dest, private, public


def _model_dir_of(client, image: str, out) -> None:
    """The image's model dir, copied out through the engine (no tool of the image's needed)."""
    cid = client.api.create_container(image, command=["true"], entrypoint=[])["Id"]
    try:
        stream, _ = client.api.get_archive(cid, MODEL_DIR)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            tar.extractall(out, filter="data")
    finally:
        client.api.remove_container(cid, force=True)


def test_build_verifies_and_the_image_carries_the_signature_and_its_signer(
    tmp_path, signed, docker_client, base_image, image_tags
):
    dest, _, public = signed
    app = make_app(tmp_path / "app", requirements="")
    tag = f"modelship-test/signed-{uuid.uuid4().hex[:10]}:1"
    image_tags.append(tag)
    r = run_cli(*build_cmd(app, dest, tag, base_image, "--verify-key", str(public), "--quiet", "--json")[1:])
    assert r.returncode == 0, r.stderr
    built = json.loads(r.stdout)
    assert built["labels"][MODEL_SIGNER_LABEL] == _fingerprint(public)
    assert built["model"]["signer"] == _fingerprint(public)

    _model_dir_of(docker_client, tag, tmp_path / "out")
    inside = tmp_path / "out" / "model"
    assert (inside / SIGNATURE_NAME).read_bytes() == (dest / SIGNATURE_NAME).read_bytes()
    ok = reference_verify(inside / SIGNATURE_NAME, public, inside, ignore_unsigned=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # model.sig is not a model file: the manifest in the image lists what fetch installed, no more
    listed = [f["path"] for f in json.loads((inside / MANIFEST_NAME).read_text())["files"]]
    assert sorted(listed) == ["a-c.json", "a/b.bin", "model.onnx"]

    r = run_cli("inspect", tag, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"]["signer"] == _fingerprint(public)
    r = run_cli("inspect", tag)
    assert f"  signer: {_fingerprint(public)} (model.sig verified when the image was made)" in r.stdout.splitlines()

    # without a verify key: model.sig still goes in (it is DEST's), but nothing was checked: no signer label
    plain = f"modelship-test/signed-{uuid.uuid4().hex[:10]}:1"
    image_tags.append(plain)
    r = run_cli(*build_cmd(app, dest, plain, base_image, "--quiet", "--json")[1:])
    assert r.returncode == 0, r.stderr
    assert MODEL_SIGNER_LABEL not in json.loads(r.stdout)["labels"]
    _model_dir_of(docker_client, plain, tmp_path / "plain")
    assert (tmp_path / "plain" / "model" / SIGNATURE_NAME).read_bytes() == (dest / SIGNATURE_NAME).read_bytes()
    r = run_cli("inspect", plain, "--json")
    assert json.loads(r.stdout)["model"]["signer"] is None


def test_build_refusals_are_one_line_before_the_engine_is_used(tmp_path, signed):
    dest, _, public = signed
    _, other = keypair(tmp_path, "other")
    app = make_app(tmp_path / "app", requirements="")

    def refused(model, *keys) -> str:
        flags = [x for k in keys for x in ("--verify-key", str(k))]
        r = run_cli(*build_cmd(app, model, "x/y:1", "b")[1:], *flags, env=NO_ENGINE)
        # one error line (a folder without modelship.json also gets its warning that it is hashed here)
        lines = [line for line in r.stderr.splitlines() if "hashing 3 file(s) as an unversioned model" not in line]
        assert (r.returncode, len(lines)) == (1, 1), r.stderr
        return lines[0]

    assert refused(dest, other).startswith(f"modelship: error: {dest / SIGNATURE_NAME}: not signed by any of the 1")
    # a copy without modelship.json (hashed here) with one byte flipped: signed by the team, not these bytes
    copy = tmp_path / "copy"
    shutil.copytree(dest, copy)
    (copy / MANIFEST_NAME).unlink()
    flip_byte(copy / "model.onnx")
    assert "file model.onnx has sha256" in refused(copy, public)
    unsigned = model_folder(tmp_path / "unsigned")
    assert refused(unsigned, public).endswith(
        "the model folder is unsigned; fetch it with --verify-key (DEST gets model.sig)"
    )
    # the registry builder checks first too: no registry is contacted (nothing listens on port 1)
    registry = ["--builder", "registry", "--base-image", "127.0.0.1:1/base:1", "--verify-key", str(public)]
    r = run_cli(*build_cmd(app, unsigned, "127.0.0.1:1/x:1", "b")[1:], *registry)
    assert r.returncode == 1 and r.stderr.splitlines()[-1].endswith(
        "the model folder is unsigned; fetch it with --verify-key (DEST gets model.sig)"
    ), r.stderr
    # MODELSHIP_VERIFY_KEYS as for the other verbs
    r = run_cli(*build_cmd(app, unsigned, "x/y:1", "b")[1:], env={**NO_ENGINE, "MODELSHIP_VERIFY_KEYS": str(public)})
    assert r.returncode == 1 and "is unsigned" in r.stderr
    # the signed folder passes the check and stops at the missing engine: the check was the only thing above
    r = run_cli(*build_cmd(app, dest, "x/y:1", "b")[1:], "--verify-key", str(public), env=NO_ENGINE)
    assert r.returncode == 1 and "not reachable" in r.stderr.splitlines()[-1]


@pytest.fixture(scope="module")
def app_image(docker_client, base_image, registry) -> str:
    tag = build_app_image(docker_client, base_image, f"{registry}/sig-test/app-{uuid.uuid4().hex[:8]}:app")
    push_image(docker_client, tag)
    yield tag
    docker_client.images.remove(tag, force=True)


def test_assemble_verifies_and_labels_the_signer(tmp_path, signed, app_image, docker_client, image_tags, monkeypatch):
    dest, _, public = signed
    target = app_image.rsplit(":", 1)[0] + ":signed"
    r = run_cli("assemble", app_image, "--model", str(dest), "--tag", target, "--verify-key", str(public), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"]["signer"] == _fingerprint(public)
    r = run_cli("inspect", out["ref"], "--json")
    assert json.loads(r.stdout)["model"]["signer"] == _fingerprint(public)
    image_tags.append(out["ref"])
    docker_client.images.pull(out["ref"])
    _model_dir_of(docker_client, out["ref"], tmp_path / "out")
    inside = tmp_path / "out" / "model"
    ok = reference_verify(inside / SIGNATURE_NAME, public, inside, ignore_unsigned=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    _, other = keypair(tmp_path, "other")
    argv = ["assemble", "127.0.0.1:1/app:1", "--model", str(dest), "--tag", "127.0.0.1:1/app:m"]
    r = run_cli(*argv, "--verify-key", str(other))
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and "not signed by any of the 1" in r.stderr
    r = run_cli(*argv, "--verify-key", str(public))  # verified: it goes on to the registry, which is not there
    assert r.returncode == 1 and "127.0.0.1:1" in r.stderr and "signed" not in r.stderr
