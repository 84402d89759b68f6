"""publish DIR oci://REGISTRY/REPO --version V against the real registry, judged by readers nobody here wrote:
the Docker engine pulls the model image (and docker cp shows its files), podman pulls it and mounts it,
skopeo inspects and copies it, containerd (the engine's own, through ctr) pulls, unpacks and mounts it
read-only as an image volume does, and modelpack-client (a strict CNCF ModelPack reader) pulls its ModelPack
manifest. Also: the blobs an app image assembled from the same model shares, 0 bytes the second time,
a version tag never moved without --force, and bad input as one line."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from modelship.errors import ModelshipError, UsageError
from modelship.oci.modelimage import ARTIFACT_TYPE, MODELPACK_CONFIG, publish_image
from support.cli import run_cli
from support.modelimage import MODEL_DIR, ctr_mounted, model_files, sha256s, tree_sha256s, unique_repo
from support.oci import blob, build_app_image, manifest, push_image, registry_process, run, tag_digest

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def published(tmp_path_factory, registry):
    """One model published once for the readers' tests: (result, model folder, its files)."""
    root = tmp_path_factory.mktemp("model")
    files = model_files(root, "1.0.0")
    repo = unique_repo("mi/readers")
    os.environ.setdefault("MODELSHIP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    r = publish_image(root, f"oci://{registry}/{repo}", version="1.0.0", quiet=True)
    return r, root, files


def test_the_model_image_is_an_oci_image_with_modelpack_artifact_type_and_the_assemble_layers(published, registry):
    r, _root, files = published
    reg, repo = r.image.split("/", 1)[0], r.image.split("/", 1)[1].rsplit(":", 1)[0]
    digest, m, media_type = manifest(reg, repo, "1.0.0")
    assert digest == r.image_digest and media_type == "application/vnd.oci.image.manifest.v1+json"
    assert m["artifactType"] == ARTIFACT_TYPE == "application/vnd.cncf.model.manifest.v1+json"
    assert m["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert [d["mediaType"] for d in m["layers"]] == ["application/vnd.oci.image.layer.v1.tar"] * 2
    assert m["layers"][0]["annotations"]["org.cncf.model.filepath"] == "weights.bin"
    assert m["annotations"]["org.opencontainers.image.version"] == "1.0.0"
    config = json.loads(blob(reg, repo, m["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == [d["digest"] for d in m["layers"]]  # uncompressed: diff_id == digest
    labels = config["config"]["Labels"]
    assert labels["io.modelship.model.dir"] == MODEL_DIR and labels["io.modelship.model.version"] == "1.0.0"
    assert json.loads(labels["io.modelship.model.manifest"])["digest"] == r.manifest.digest
    assert {f.path: f.sha256 for f in r.manifest.files} == sha256s(files)
    # each layer's bytes are a tar of the files under the model dir, nothing else
    with tarfile.open(fileobj=io.BytesIO(blob(reg, repo, m["layers"][0]["digest"]))) as tar:
        assert [x.name for x in tar.getmembers() if x.isfile()] == [f"{MODEL_DIR[1:]}/weights.bin"]


def test_docker_pulls_the_model_image_and_its_files_are_the_model(published, docker_client):
    r, _root, files = published
    docker_client.images.pull(r.ref)
    # data only: created, never started (a command is needed to create; it is never run)
    container = docker_client.containers.create(r.ref, command=["/modelship-model-image-never-runs"])
    try:
        stream, _ = docker_client.api.get_archive(container.id, MODEL_DIR)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            got = {
                x.name.split("/", 1)[1]: hashlib.sha256(tar.extractfile(x).read()).hexdigest()
                for x in tar.getmembers()
                if x.isfile() and not x.name.endswith("modelship.json")
            }
    finally:
        container.remove(force=True)
        with contextlib.suppress(Exception):
            docker_client.images.remove(r.ref, force=True)
    assert got == sha256s(files)


def test_podman_pulls_and_mounts_the_model_image(published):
    r, _root, files = published
    run("podman", "pull", "--tls-verify=false", r.ref)
    try:
        mount = Path(run("podman", "image", "mount", r.ref).stdout.strip())
        assert tree_sha256s(mount / MODEL_DIR.lstrip("/")) == sha256s(files)
        assert oct((mount / MODEL_DIR.lstrip("/") / "weights.bin").stat().st_mode & 0o777) == "0o444"
    finally:
        run("podman", "image", "unmount", r.ref, check=False)
        run("podman", "rmi", "-f", r.ref, check=False)


def test_skopeo_inspects_and_copies_the_model_image_digests_intact(published, tmp_path):
    r, _root, _files = published
    info = json.loads(run("skopeo", "inspect", "--tls-verify=false", f"docker://{r.image}").stdout)
    assert info["Digest"] == r.image_digest and info["Labels"]["io.modelship.model.digest"] == r.manifest.digest
    assert "1.0.0-modelpack" in info["RepoTags"]
    # skopeo 1.9 would gzip the uncompressed layers for an OCI layout (new digests): --preserve-digests keeps them
    src, dst = f"docker://{r.ref}", f"oci:{tmp_path / 'layout'}:m"
    run("skopeo", "copy", "--preserve-digests", "--src-tls-verify=false", src, dst)
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    copied = index["manifests"][0]["digest"]
    assert copied == r.image_digest  # skopeo kept the manifest byte for byte
    for d, _size, _title in r.layers:
        data = (tmp_path / "layout" / "blobs" / "sha256" / d.split(":", 1)[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == d


def test_containerd_pulls_unpacks_and_mounts_it_read_only_like_an_image_volume(published, tmp_path):
    r, _root, files = published
    with ctr_mounted(r.image, tmp_path / "mnt") as mnt:
        model = mnt / MODEL_DIR.lstrip("/")
        assert tree_sha256s(model) == sha256s(files)
        with pytest.raises(OSError):  # read-only, as the kubelet mounts an image volume
            (model / "new-file").write_bytes(b"x")


def test_a_strict_modelpack_reader_pulls_its_modelpack_manifest(published, registry, tmp_path):
    from modelpack_client import InvalidModelPackError, ModelPackClient

    r, _root, files = published
    client = ModelPackClient(insecure=True)
    got = client.pull(r.modelpack_image, tmp_path / "out")
    assert got.manifest["config"]["mediaType"] == MODELPACK_CONFIG
    assert got.manifest["subject"]["digest"] == r.image_digest  # a referrer of the model image
    assert got.config["modelfs"]["diffIds"] == [d for d, _, _ in r.layers]  # the very same blobs
    assert tree_sha256s(tmp_path / "out" / MODEL_DIR.lstrip("/")) == sha256s(files)
    with pytest.raises(InvalidModelPackError, match="ModelPack config"):
        client.pull(r.image, tmp_path / "out2")  # the image itself has an image config: runtimes need that


def test_publishing_again_uploads_nothing_and_any_copy_of_the_model_gives_the_same_digest(
    tmp_path, registry, monkeypatch
):
    files_root = tmp_path / "a"
    model_files(files_root, "2.0.0")
    uri = f"oci://{registry}/{unique_repo('mi/again')}"
    first = publish_image(files_root, uri, version="2.0.0", quiet=True)
    assert first.uploaded_bytes > 17 * 1024 * 1024 and not first.unchanged
    # another machine: another folder (other mtimes and modes), another cache, same files
    other = tmp_path / "b"
    shutil.copytree(files_root, other)
    os.utime(other / "weights.bin", (1, 1))
    (other / "config.json").chmod(0o600)
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "other-cache"))
    proc = run_cli("publish", str(other), uri, "--version", "2.0.0", "--json")
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["image_digest"] == first.image_digest and again["uploaded_bytes"] == 0 and again["unchanged"]


def test_a_version_tag_is_never_moved_without_force(tmp_path, registry):
    root = tmp_path / "m"
    model_files(root, "3.0.0")
    repo = unique_repo("mi/force")
    uri = f"oci://{registry}/{repo}"
    first = publish_image(root, uri, version="3.0.0", quiet=True)
    (root / "config.json").write_text('{"v": "changed"}')
    proc = run_cli("publish", str(root), uri, "--version", "3.0.0")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "already exists" in proc.stderr and "--force" in proc.stderr
    assert tag_digest(registry, repo, "3.0.0") == first.image_digest  # untouched
    with pytest.raises(ModelshipError, match="already exists"):
        publish_image(root, uri, version="3.0.0", quiet=True)
    moved = publish_image(root, uri, version="3.0.0", force=True, quiet=True)
    assert moved.image_digest != first.image_digest and tag_digest(registry, repo, "3.0.0") == moved.image_digest
    assert moved.uploaded_bytes < 64 * 1024  # only the small-files layer and the configs changed


def test_the_model_image_and_an_app_image_assembled_from_the_same_model_share_every_layer(
    tmp_path, registry, docker_client, base_image, monkeypatch
):
    from modelship import fetch
    from modelship.oci._assemble import assemble

    root = tmp_path / "m"
    model_files(root, "4.0.0")
    repo = unique_repo("mi/shared")
    r = publish_image(root, f"oci://{registry}/{repo}", version="4.0.0", quiet=True)
    fetched = fetch(f"oci://{registry}/{repo}", tmp_path / "dest", progress=False)
    assert fetched.version == "4.0.0"
    app = build_app_image(docker_client, base_image, f"{registry}/{repo}-app:app")
    try:
        push_image(docker_client, app)
        monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")  # assemble needs no engine
        assembled = assemble(app, tmp_path / "dest", f"{registry}/{repo}-app:m", quiet=True)
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(app, force=True)
    assert [x.digest for x in assembled.layers] == [d for d, _, _ in r.layers]


def test_publish_bad_input_is_one_line_and_writes_nothing(tmp_path, registry):
    root = tmp_path / "m"
    model_files(root, "1.0.0", big_mb=1)
    repo = unique_repo("mi/bad")
    uri = f"oci://{registry}/{repo}"
    cases = [
        (["--version", "nightly"], 2, "PEP 440"),
        (["--version", "1.0.0+local"], 2, "invalid tag"),
    ]
    for extra, code, words in cases:
        proc = run_cli("publish", str(root), uri, *extra)
        assert proc.returncode == code and words in proc.stderr and proc.stderr.count("\n") == 1, (extra, proc.stderr)
    proc = run_cli("publish", str(root), uri + ":1.0.0", "--version", "1.0.0")
    assert proc.returncode == 2 and "--version" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    proc = run_cli("publish", str(tmp_path / "nope"), uri, "--version", "1.0.0")
    assert proc.returncode == 2 and "not a folder" in proc.stderr, proc.stderr
    assert tag_digest(registry, repo, "1.0.0") is None
    with pytest.raises(UsageError, match=r"model dir in the image"):
        publish_image(root, uri, version="1.0.0", image_model_dir="models", quiet=True)


def test_publish_to_a_registry_that_is_down_or_denies_is_one_line(tmp_path, registry):
    root = tmp_path / "m"
    model_files(root, "1.0.0", big_mb=1)
    down = run_cli("publish", str(root), "oci://127.0.0.1:9/models/x", "--version", "1.0.0")
    assert down.returncode == 1 and down.stderr.count("\n") == 1, down.stderr
    assert "not reachable" in down.stderr and "127.0.0.1:9" in down.stderr
    import bcrypt

    hashed = bcrypt.hashpw(b"right-password", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"ci:{hashed}\n")
    auth = f"auth: {{htpasswd: {{realm: test, path: {tmp_path / 'htpasswd'}}}}}\n"
    with registry_process(tmp_path / "reg", auth) as secured:
        denied = run_cli(
            "publish", str(root), f"oci://{secured}/models/x", "--version", "1.0.0",
            env={"DOCKER_CONFIG": str(tmp_path / "no-docker-config")},
        )  # fmt: skip
    assert denied.returncode == 1 and denied.stderr.count("\n") == 1, denied.stderr
    assert "wants credentials" in denied.stderr and "docker login" in denied.stderr


def test_a_library_publish_prints_nothing_and_the_cli_says_it_once(tmp_path, registry, capfd, monkeypatch):
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache"))
    model_files(tmp_path / "m", "1.0.0", big_mb=1)
    uri = f"oci://{registry}/{unique_repo('mi/quiet')}"
    r = publish_image(tmp_path / "m", uri, version="1.0.0")  # defaults, as a user's script calls it
    assert r.uploaded_bytes > 0 and capfd.readouterr() == ("", "")
    out = run_cli("publish", str(tmp_path / "m"), uri, "--version", "1.0.0", "--no-progress")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.count("\n") == 1 and out.stdout.rstrip().endswith(r.image_digest)  # once, on stdout
