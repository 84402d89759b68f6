"""Image signatures (cosign's format) against the testbed's registry, through the CLI: ``modelship sign`` writes
the ``sha256-<hex>.sig`` tag (distribution 2.8 has no referrers API: the tag path only; the referrers path is
tests/unit/test_image_signatures_units.py against a small server that has the API), and what it writes is judged by
tests/support/cosign_reader.py, a reader written apart from modelship (plain HTTP, cryptography's ECDSA). That
reader also signs as cosign does, and ``modelship verify`` judges it: both directions, with the refusals."""

from __future__ import annotations

import json
import os

import pytest

from support import cosign_reader as reader
from support.cli import run_cli
from support.modelimage import OCI_CONFIG, push_blob, push_manifest, unique_repo
from support.oms import keypair

pytestmark = pytest.mark.docker


def _image(registry: str, repo: str, seed: str) -> str:
    """A small image pushed with plain HTTP calls (nothing of modelship's): its digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = os.urandom(1024)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": OCI_CONFIG, "digest": push_blob(registry, repo, config), "size": len(config)},
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": push_blob(registry, repo, layer),
                "size": len(layer),
            }
        ],
    }
    return push_manifest(registry, repo, seed, manifest)


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
