"""`modelship ls` and `modelship copy` against two real registries (the testbed's and one of the test's own):
a published model image listed with its version, a copy to the other registry with the same digest (judged by
skopeo, which nobody here wrote), 0 bytes the second time, a copy within one registry mounted, an index copied
whole, and a missing source tag as one line."""

from __future__ import annotations

import hashlib
import json

import pytest

from modelship.oci._copy import copy
from support.cli import run_cli
from support.modelimage import OCI_CONFIG, model_files, push_blob, push_manifest, unique_repo
from support.oci import image_problems, registry_process, run, tag_digest

pytestmark = pytest.mark.docker
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


@pytest.fixture(scope="module")
def second(tmp_path_factory):
    """Another registry: host:port (no auth)."""
    with registry_process(tmp_path_factory.mktemp("second-registry")) as addr:
        yield addr


@pytest.fixture(scope="module")
def published(tmp_path_factory, registry):
    """Versions 1.0.0, 1.10.0 and 2.0.0rc1 published by the CLI, and a tag that is no model: (repo, {tag: json})."""
    repo = unique_repo("copy/models")
    out = {}
    for version in ("1.0.0", "1.10.0", "2.0.0rc1"):
        root = tmp_path_factory.mktemp(f"model-{version}")
        model_files(root, version, big_mb=2)
        proc = run_cli("publish", str(root), f"oci://{registry}/{repo}", "--version", version, "--json")
        assert proc.returncode == 0, proc.stderr
        out[version] = json.loads(proc.stdout)
    config = push_blob(registry, repo, b"{}")
    plain = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": 2},
        "layers": [],
    }
    out["plain"] = {"image_digest": push_manifest(registry, repo, "plain", plain)}
    return repo, out


def _ls(uri: str) -> list[dict]:
    proc = run_cli("ls", uri, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["images"]


def test_ls_lists_versions_newest_first_with_their_model(registry, published):
    repo, pub = published
    images = _ls(f"oci://{registry}/{repo}")
    tags = [i["image"].rsplit(":", 1)[1] for i in images]
    # PEP 440 order (1.10.0 > 1.0.0, the rc the newest), then the other tags by name
    assert tags == ["2.0.0rc1", "1.10.0", "1.0.0", "1.0.0-modelpack", "1.10.0-modelpack", "2.0.0rc1-modelpack", "plain"]
    by_tag = dict(zip(tags, images, strict=True))
    for version in ("1.0.0", "1.10.0", "2.0.0rc1"):
        i = by_tag[version]
        assert i["version"] == version and i["model_digest"] == pub[version]["model_digest"], i
        assert i["image_digest"] == pub[version]["image_digest"] == tag_digest(registry, repo, version)
        assert i["ref"] == f"{registry}/{repo}@{i['image_digest']}"
    assert by_tag["plain"]["version"] is None and by_tag["plain"]["model_digest"] is None
    assert by_tag["plain"]["image_digest"] == pub["plain"]["image_digest"]
    human = run_cli("ls", f"{registry}/{repo}")
    assert human.returncode == 0 and f"1.10.0  {pub['1.10.0']['image_digest']}  model 1.10.0" in human.stdout


def test_copy_to_another_registry_keeps_the_digest_and_a_rerun_uploads_nothing(registry, second, published):
    repo, pub = published
    digest = pub["1.10.0"]["image_digest"]
    proc = run_cli("copy", f"{registry}/{repo}:1.10.0", f"{second}/mirror/models", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["image_digest"] == digest and r["ref"] == f"{second}/mirror/models@{digest}"
    assert r["image"] == f"{second}/mirror/models:1.10.0" and tag_digest(second, "mirror/models", "1.10.0") == digest
    assert r["uploaded_bytes"] > 2 * 1024 * 1024  # the layers went up
    assert image_problems(second, "mirror/models", "1.10.0") == []
    # judged by skopeo: the bytes it reads at the destination are the source's digest
    raw = run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{second}/mirror/models:1.10.0").stdout
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == digest
    info = json.loads(run("skopeo", "inspect", "--tls-verify=false", f"docker://{second}/mirror/models:1.10.0").stdout)
    assert info["Digest"] == digest
    # the copy is listed as the model version it is
    [listed] = _ls(f"oci://{second}/mirror/models")
    assert listed["version"] == "1.10.0" and listed["model_digest"] == pub["1.10.0"]["model_digest"]
    again = run_cli("copy", f"{registry}/{repo}:1.10.0", f"{second}/mirror/models", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["uploaded_bytes"] == 0
    human = run_cli("copy", f"{registry}/{repo}@{digest}", f"{second}/mirror/models:stable")
    assert human.returncode == 0 and human.stdout == f"{second}/mirror/models@{digest}\n", human.stdout
    assert tag_digest(second, "mirror/models", "stable") == digest


def test_copy_within_one_registry_mounts_every_blob(registry, published):
    repo, pub = published
    other = unique_repo("copy/mounted")
    r = copy(f"{registry}/{repo}:1.0.0", f"{registry}/{other}:prod")
    assert r.image_digest == pub["1.0.0"]["image_digest"] and r.uploaded_bytes == 0  # mounted, nothing sent
    assert tag_digest(registry, other, "prod") == r.image_digest
    assert image_problems(registry, other, "prod") == []


def test_an_index_copies_whole(registry, second):
    repo = unique_repo("copy/index")
    entries = []
    for arch in ("amd64", "arm64"):
        config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
        cdigest = push_blob(registry, repo, config.encode())
        layer = hashlib.sha256(arch.encode()).digest() * 4096
        ldigest = push_blob(registry, repo, layer)
        m = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cdigest, "size": len(config)},
            "layers": [{"mediaType": LAYER, "digest": ldigest, "size": len(layer)}],
        }
        d = push_manifest(registry, repo, f"{arch}-only", m)
        platform = {"os": "linux", "architecture": arch}
        entries.append({"mediaType": OCI_MANIFEST, "digest": d, "size": len(json.dumps(m)), "platform": platform})
    idx = push_manifest(registry, repo, "multi", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    r = copy(f"{registry}/{repo}:multi", f"{second}/{repo}")
    assert r.image_digest == idx and r.manifests == 3 and r.blobs == 4
    assert tag_digest(second, repo, "multi") == idx
    assert image_problems(second, repo, "multi") == []
    for e in entries:  # each image by its digest, byte-identical
        assert tag_digest(second, repo, e["digest"]) == e["digest"]
    raw = run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{second}/{repo}:multi").stdout
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == idx


def test_a_missing_source_tag_is_one_line_and_writes_nothing(registry, second, published):
    repo, _ = published
    proc = run_cli("copy", f"{registry}/{repo}:9.9.9", f"{second}/missing/x")
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr
    assert "9.9.9" in proc.stderr and "no such image" in proc.stderr and "modelship ls" in proc.stderr
    assert tag_digest(second, "missing/x", "9.9.9") is None
