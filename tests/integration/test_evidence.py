"""``--sign-key`` on assemble and on model-image publish attests the new digest's SLSA provenance and ML-BOM,
against the testbed's registry. What is written is read back by tests/support/attestation_reader.py (cosign's
layout, its own PAE and ECDSA check) and the predicates are judged by tests/support/predicates.py (in-toto's
provenance protobuf, CycloneDX's strict 1.6 validator): none of it is modelship's code."""

from __future__ import annotations

import hashlib
import json

import pytest

from modelship.manifest import Manifest
from support import attestation_reader as reader
from support import cosign_reader
from support.cli import run_cli
from support.modelimage import file_member, push_plain_image, tar_layer, unique_repo
from support.models import make_model
from support.oci import tag_digest
from support.oms import keypair
from support.predicates import bom_error, check_provenance

pytestmark = pytest.mark.docker

SLSA, BOM = "https://slsa.dev/provenance/v1", "https://cyclonedx.org/bom"


def _app(registry: str, repo: str) -> str:
    """An app image whose config says which Python packages it installed (as both build paths write it)."""
    layer = tar_layer([file_member("app/main.py", b"print('app')\n")])
    labels = {"io.modelship.app.dependencies": "flask==3.0.3,numpy==2.1.0"}
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    return push_plain_image(registry, repo, "app", config, layer)


def _predicates(registry: str, repo: str, digest: str, public) -> dict[str, list[dict]]:
    """The predicates at the image's .att tag that verify for ``digest`` with ``public``, by type."""
    out: dict[str, list[dict]] = {}
    for found in reader.read_attestations(registry, repo, digest):
        assert reader.accepts(found, public, digest), found.annotations
        out.setdefault(found.statement["predicateType"], []).append(found.statement["predicate"])
    return out


def test_assemble_with_sign_key_attests_provenance_and_ml_bom_of_the_new_digest(registry, tmp_path):
    team, team_pub = keypair(tmp_path, "team")
    repo = unique_repo("evidence/iris")
    app_digest = _app(registry, repo)
    model = make_model(
        tmp_path / "model", {"weights.bin": 4096, "config.json": b"{}"}, uri="az://acct/m/iris", version="1.0"
    )
    manifest = Manifest.load(model / "modelship.json")
    argv = ["assemble", f"{registry}/{repo}:app", "--model", str(model), "--tag", f"{registry}/{repo}:candidate"]
    first = run_cli(*argv, "--sign-key", str(team), "--json")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    digest = out["image_digest"]
    assert tag_digest(registry, repo, "candidate") == digest
    assert [(a["predicate_type"], a["unchanged"]) for a in out["attestations"]] == [(SLSA, False), (BOM, False)]

    found = _predicates(registry, repo, digest, team_pub)
    assert set(found) == {SLSA, BOM} and all(len(v) == 1 for v in found.values())
    provenance, bom = found[SLSA][0], found[BOM][0]
    check_provenance(provenance)
    deps = {d["name"]: d for d in provenance["buildDefinition"]["resolvedDependencies"]}
    assert deps["app image"]["digest"] == {"sha256": app_digest.split(":")[1]}
    assert deps["model"]["digest"] == {"sha256": manifest.digest.split(":")[1]}
    assert deps["model"]["uri"] == "az://acct/m/iris" and deps["model"]["annotations"] == {"version": "1.0"}
    assert provenance["buildDefinition"]["externalParameters"]["tag"] == f"{registry}/{repo}:candidate"

    assert bom_error(bom) is None
    (ml,) = [c for c in bom["components"] if c["type"] == "machine-learning-model"]
    hashes = {c["name"]: c["hashes"][0]["content"] for c in ml["components"]}
    assert hashes == {f.path: f.sha256 for f in manifest.files}
    libraries = sorted(c["purl"] for c in bom["components"] if c["type"] == "library")
    assert libraries == ["pkg:pypi/flask@3.0.3", "pkg:pypi/numpy@2.1.0"]
    assert bom["metadata"]["component"]["version"] == digest

    verified = run_cli(
        "verify", out["ref"], "--key", str(team_pub), "--attestation", "slsa", "--attestation", "cyclonedx"
    )
    assert verified.returncode == 0, verified.stderr

    # the same run again: same digest, the evidence by this key is kept as it is, nothing appended
    again = run_cli(*argv, "--sign-key", str(team), "--json")
    assert again.returncode == 0, again.stderr
    assert [a["unchanged"] for a in json.loads(again.stdout)["attestations"]] == [True, True]
    assert len(reader.read_attestations(registry, repo, digest)) == 2

    # without a key: no attestation of the next image
    plain = run_cli(*argv[:-1], f"{registry}/{repo}:plain", "--json")
    assert plain.returncode == 0 and json.loads(plain.stdout)["attestations"] == []


def test_model_image_publish_with_sign_key_attests_the_model_image(registry, tmp_path):
    team, team_pub = keypair(tmp_path, "team")
    repo = unique_repo("evidence/model")
    model = make_model(tmp_path / "model", {"weights.bin": 2048}, uri="file:///x", version="1")
    # the pipeline's source (as Azure Pipelines sets it), a token in its URI: the commit goes in, the token not
    commit = "0123456789abcdef0123456789abcdef01234567"
    source = {"BUILD_SOURCEVERSION": commit, "BUILD_REPOSITORY_URI": "https://ci:s3cr3t@dev.azure.com/o/p/_git/iris"}
    published = run_cli(
        "publish", str(model), f"oci://{registry}/{repo}", "--version", "2.0", "--sign-key", str(team), "--json",
        env={**source, "BUILD_SOURCEBRANCH": ""},
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    out = json.loads(published.stdout)
    digest = out["image_digest"]
    found = _predicates(registry, repo, digest, team_pub)
    assert set(found) == {SLSA, BOM}
    provenance, bom = found[SLSA][0], found[BOM][0]
    check_provenance(provenance)
    assert provenance["buildDefinition"]["buildType"].endswith("/publish/v1")
    model_dep, source_dep = provenance["buildDefinition"]["resolvedDependencies"]
    assert source_dep == {
        "name": "source",
        "uri": "git+https://dev.azure.com/o/p/_git/iris",
        "digest": {"gitCommit": commit},
    }
    assert "s3cr3t" not in json.dumps(provenance)
    assert model_dep["uri"] == f"oci://{registry}/{repo}" and model_dep["annotations"]["signer"].startswith("sha256:")
    assert bom_error(bom) is None
    assert [c["name"] for c in bom["components"]] == [repo.rsplit("/", 1)[-1]]
    assert [a["predicate_type"] for a in out["attestations"]] == [SLSA, BOM]
    # and the image's cosign signature by the same key, which promote --require-key checks
    assert cosign_reader.verified_by(registry, repo, digest, team_pub) == 1
