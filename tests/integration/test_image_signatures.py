"""Image signatures (cosign's format) against the testbed's registry, through the CLI: ``modelship sign`` writes
the ``sha256-<hex>.sig`` tag (distribution 2.8 has no referrers API: the tag path only; the referrers path is
tests/unit/test_image_signatures_units.py against a small server that has the API), and what it writes is judged by
tests/support/cosign_reader.py, a reader written apart from modelship (plain HTTP, cryptography's ECDSA). That
reader also signs as cosign does, and ``modelship verify`` judges it: both directions, with the refusals."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from support import cosign_reader as reader
from support.cli import run_cli
from support.engine import build_from_files
from support.modelimage import file_member, push_plain_image, tar_layer, unique_repo
from support.models import make_model
from support.oci import tag_digest
from support.oms import keypair

pytestmark = pytest.mark.docker


def _image(registry: str, repo: str, seed: str) -> str:
    """A small image pushed with plain HTTP calls (nothing of modelship's): its digest."""
    return push_plain_image(
        registry, repo, seed, {"architecture": "amd64", "os": "linux", "seed": seed}, os.urandom(1024)
    )


@pytest.fixture
def keys(tmp_path):
    return keypair(tmp_path, "team"), keypair(tmp_path, "other")


def _verify(ref: str, public) -> tuple[int, str]:
    r = run_cli("verify", ref, "--key", str(public))
    return r.returncode, r.stderr if r.returncode else r.stdout


def test_signed_twice_by_one_key_once_by_another_all_read_by_the_independent_reader(registry, keys):
    (team, team_pub), (other, other_pub) = keys
    repo = unique_repo("sign/app")
    digest = _image(registry, repo, "v1")
    ref = f"{registry}/{repo}@{digest}"
    assert reader.read_signatures(registry, repo, digest) == []
    code, err = _verify(ref, team_pub)
    assert code == 1 and "not signed" in err and err.count("\n") == 1

    first = run_cli("sign", ref, "--key", str(team), "--json")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["signature"] == f"{registry}/{repo}:{reader.sig_tag(digest)}" and out["referrer"] is None
    assert reader.verified_by(registry, repo, digest, team_pub) == 1

    again = json.loads(run_cli("sign", ref, "--key", str(team), "--json").stdout)
    assert again["unchanged"] and again["signature_digest"] == out["signature_digest"]
    assert len(reader.read_signatures(registry, repo, digest)) == 1

    assert run_cli("sign", ref, "--key", str(other)).returncode == 0
    found = reader.read_signatures(registry, repo, digest)
    assert len(found) == 2  # appended: the first signature is kept
    assert reader.verified_by(registry, repo, digest, team_pub) == 1
    assert reader.verified_by(registry, repo, digest, other_pub) == 1
    for public in (team_pub, other_pub):
        code, text = _verify(ref, public)
        assert code == 0 and text.startswith(f"verified {ref}: signed by sha256:"), text


def test_a_signature_written_as_cosign_does_is_verified_and_forgeries_are_refused(registry, keys):
    (team, team_pub), (other, other_pub) = keys
    repo = unique_repo("sign/app")
    digest, elsewhere = _image(registry, repo, "v1"), _image(registry, repo, "v2")
    ref = f"{registry}/{repo}@{digest}"

    reader.write_signature(registry, repo, digest, team)
    code, text = _verify(ref, team_pub)
    assert code == 0 and "signed by sha256:" in text, text
    code, text = _verify(ref, other_pub)
    assert code == 1 and "none of its 1 signature(s) is by the given key(s)" in text and text.count("\n") == 1

    # a valid signature by the team's key, of another digest, put at this digest's tag
    reader.write_signature(registry, repo, elsewhere, team, claimed_digest=digest)
    code, text = _verify(f"{registry}/{repo}@{elsewhere}", team_pub)
    assert code == 1 and f"for another image ({digest[:19]}…)" in text and text.count("\n") == 1

    # modelship appends to what the other writer left, and the reader accepts both
    assert run_cli("sign", ref, "--key", str(other)).returncode == 0
    assert reader.verified_by(registry, repo, digest, team_pub) == 1
    assert reader.verified_by(registry, repo, digest, other_pub) == 1


def _app(registry: str, repo: str) -> str:
    """An app image with one (tar) layer, pushed with plain HTTP: REGISTRY/REPO:app."""
    layer = tar_layer([file_member("app/main.py", b"print('app')\n")])
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer)]},
    }
    push_plain_image(registry, repo, "app", config, layer)
    return f"{registry}/{repo}:app"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_assemble_and_promote_with_sign_key_sign_the_digest_before_the_tag_moves(registry, keys, tmp_path):
    (team, team_pub), (other, other_pub) = keys
    repo = unique_repo("sign/iris")
    app = _app(registry, repo)
    model = make_model(tmp_path / "model", {"weights.bin": 4096, "config.json": b"{}"}, uri="az://a/m", version="1.0")
    argv = ["assemble", app, "--model", str(model), "--tag", f"{registry}/{repo}:candidate", "--json"]
    first = run_cli(*argv, "--sign-key", str(team))
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    digest = out["image_digest"]
    assert out["image_signature"]["signature"] == f"{registry}/{repo}:{reader.sig_tag(digest)}"
    assert tag_digest(registry, repo, "candidate") == digest
    assert reader.verified_by(registry, repo, digest, team_pub) == 1
    again = json.loads(run_cli(*argv, "--sign-key", str(team)).stdout)
    assert again["unchanged"] and again["image_signature"]["unchanged"]
    assert len(reader.read_signatures(registry, repo, digest)) == 1

    promoted = run_cli("promote", out["ref"], "--tag", "stable", "--sign-key", str(other), "--json")
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout)["image_signature"]["signer"].startswith("sha256:")
    assert tag_digest(registry, repo, "stable") == digest
    assert reader.verified_by(registry, repo, digest, team_pub) == 1
    assert reader.verified_by(registry, repo, digest, other_pub) == 1
    code, text = _verify(out["ref"], other_pub)
    assert code == 0, text

    # a sign key that is no key: refused before anything is written, the tag stays where it was
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello\n")
    refused = run_cli("promote", out["ref"], "--tag", "broken", "--sign-key", str(not_a_key))
    assert refused.returncode == 2 and "not a PEM private key" in refused.stderr
    assert tag_digest(registry, repo, "broken") is None


def test_push_with_sign_key_signs_what_the_engine_pushed(registry, keys, docker_client):
    (team, team_pub), _ = keys
    repo = unique_repo("sign/pushed")
    tag = build_from_files(
        docker_client, f"{registry}/{repo}:1", {"Dockerfile": "FROM scratch\nCOPY x /x\n", "x": repo}
    )
    try:
        r = run_cli("push", tag, "--sign-key", str(team), "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["image_signature"]["signature"] == f"{registry}/{repo}:{reader.sig_tag(out['image_digest'])}"
        assert reader.verified_by(registry, repo, out["image_digest"], team_pub) == 1
        code, text = _verify(out["ref"], team_pub)
        assert code == 0, text
    finally:
        docker_client.images.remove(tag, force=True)
