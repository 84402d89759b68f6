"""deploy render --image APP@sha256 --model-image MODEL@sha256 [--mount image-volume|init-container|kserve]:
manifests validated against the Kubernetes 1.33 and 1.35 schemas (and the newest shipped) with
kubernetes-validate --strict, references pinned by digest, the model where the app reads it, probes as for
the baked shape; the init container's own command run by the Docker engine on the real model image; bad
input as one line. (``kubectl --dry-run=client`` needs an API server even for that: not used offline.)"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate.utils as kv
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelship import cli, fetch
from modelship.deploy import render
from modelship.errors import ModelshipError, UsageError
from modelship.oci.modelimage import publish_image
from support.kyverno import images, policy_errors, verified_by
from support.modelimage import MODEL_DIR, model_files, tree_sha256s, unique_repo
from support.oci import build_app_image, push_image

KUBE_VALIDATE = Path(sys.executable).with_name("kubernetes-validate")
# 1.33: image volumes with subPath (beta, feature gate); 1.35: on by default; and the newest schema shipped
KUBE_VERSIONS = ["1.33.0", "1.35.0", kv.latest_version()]
APP = f"myregistry.azurecr.io/iris-service@sha256:{'ab' * 32}"
APP_ARGS = {"port": 8000, "ready_path": "/health/ready", "live_path": "/health/live"}


def _validate(paths: list[Path], version: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(KUBE_VALIDATE), "--strict", "-k", version, *map(str, paths)], capture_output=True, text=True, check=False
    )


def _doc(path: Path, kind: str) -> dict:
    return next(d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == kind)


@pytest.fixture(scope="module")
def model_images(tmp_path_factory, registry):
    """A data-only model image (default dir) and one for KServe (--image-dir /models), by digest."""
    root = tmp_path_factory.mktemp("m")
    model_files(root, "1.0.0", big_mb=1)
    os.environ.setdefault("MODELSHIP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    repo = f"{registry}/{unique_repo('md/model')}"
    plain = publish_image(root, f"oci://{repo}", version="1.0.0", quiet=True)
    kserve = publish_image(root, f"oci://{repo}-kserve", version="1.0.0", image_model_dir="/models", quiet=True)
    return plain, kserve


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_image_volume_manifests_pass_the_kubernetes_schemas(tmp_path, model_images, version):
    plain, _ = model_images
    notes: list[str] = []
    paths = render(
        APP, tmp_path / "k8s", model_image=plain.ref, image_model_dir=MODEL_DIR, on_note=notes.append, **APP_ARGS
    )
    proc = _validate(paths, version)
    assert proc.returncode == 0 and proc.stdout.count("passed") == 2, proc.stdout + proc.stderr
    assert any("1.33" in n and "ImageVolume" in n and "1.35" in n for n in notes)


def test_image_volume_mounts_the_model_image_read_only_at_the_app_model_dir(tmp_path, model_images):
    plain, _ = model_images
    paths = render(APP, tmp_path / "k8s", model_image=plain.ref, image_model_dir="/srv/model", **APP_ARGS)
    dep = _doc(paths[0], "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "model"]
    assert volume == {"name": "model", "image": {"reference": plain.ref, "pullPolicy": "IfNotPresent"}}
    (container,) = pod["containers"]
    assert container["image"] == APP  # the app image is not rebuilt: only its digest, as tested
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "model"]
    assert mount == {"name": "model", "mountPath": "/srv/model", "readOnly": True, "subPath": MODEL_DIR.lstrip("/")}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert dep["spec"]["template"]["metadata"]["annotations"]["io.modelship.model.digest"] == plain.manifest.digest
    assert "# Needs: " in paths[0].read_text().splitlines()[1]


def test_strict_validation_catches_a_misspelt_image_volume_field(tmp_path, model_images):
    plain, _ = model_images
    paths = render(APP, tmp_path / "k8s", model_image=plain.ref, image_model_dir=MODEL_DIR, **APP_ARGS)
    dep = _doc(paths[0], "Deployment")
    for v in dep["spec"]["template"]["spec"]["volumes"]:
        if v["name"] == "model":
            v["image"]["pullpolicy"] = v["image"].pop("pullPolicy")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(dep))
    assert _validate([bad], KUBE_VERSIONS[-1]).returncode != 0  # the validator above is not vacuous


@pytest.mark.parametrize("mount", ["image-volume", "kserve"])
def test_the_kyverno_policy_requires_the_signature_on_the_model_image_too(tmp_path, model_images, mount):
    plain, kserve = model_images
    model = plain if mount == "image-volume" else kserve
    private = ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path / "team.pub"
    pub.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    paths = render(APP, tmp_path / "k8s", model_image=model.ref, mount=mount, image_model_dir=MODEL_DIR,
                   policy="kyverno", key=pub, **APP_ARGS)  # fmt: skip
    *manifests, policy_file = paths
    assert policy_file.name == "clusterpolicy-kyverno.yaml"
    policy = _doc(policy_file, "ClusterPolicy")
    assert policy_errors(policy) == []
    app_entry, model_entry = policy["spec"]["rules"][0]["verifyImages"]
    assert verified_by(policy, APP) == [app_entry]
    assert verified_by(policy, model.ref) == [model_entry]  # named by repository: the registry's host:port
    if mount == "image-volume":
        proc = _validate(manifests, "1.35.0")
        assert proc.returncode == 0 and proc.stdout.count("passed") == 2, proc.stdout + proc.stderr
        dep = _doc(manifests[0], "Deployment")
        extractors = policy["spec"]["rules"][0]["imageExtractors"]["Deployment"]
        assert set(images(dep, extractors).values()) == {APP, model.ref}


def test_init_container_refuses_a_data_only_model_image_in_one_line(tmp_path, model_images, capsys):
    plain, _ = model_images
    args = ["deploy", "render", "--image", APP, "--model-image", plain.ref, "--mount", "init-container"]
    assert cli.main([*args, "--out", str(tmp_path / "k8s"), "--model-dir", MODEL_DIR, "--port", "8000",
                     "--ready-path", "/r", "--live-path", "/l"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data only" in err and "--mount image-volume" in err
    assert not (tmp_path / "k8s").exists()


@pytest.fixture(scope="module")
def modelcar(tmp_path_factory, registry, docker_client, base_image):
    """A model image that can run a shell: the model assembled onto a base image (the testbed's Debian one)."""
    from modelship.oci._assemble import assemble

    root = tmp_path_factory.mktemp("car")
    model_files(root / "src", "2.0.0", big_mb=1)
    repo = f"{registry}/{unique_repo('md/car')}"
    published = publish_image(root / "src", f"oci://{repo}", version="2.0.0", quiet=True)
    fetch(f"oci://{repo}", root / "fetched", progress=False)
    docker_client.images.get(base_image).tag(f"{repo}-base", "1")
    try:
        push_image(docker_client, f"{repo}-base:1")
    finally:
        docker_client.images.remove(f"{repo}-base:1")
    car = assemble(f"{repo}-base:1", root / "fetched", f"{repo}-car:2.0.0", quiet=True)
    return car, published, root / "src"


def test_init_container_copies_the_model_with_the_model_image_itself(tmp_path, modelcar, docker_client):
    car, published, src = modelcar
    paths = render(APP, tmp_path / "k8s", model_image=car.ref, mount="init-container", image_model_dir=MODEL_DIR,
                   **APP_ARGS)  # fmt: skip
    for version in KUBE_VERSIONS[:1] + KUBE_VERSIONS[-1:]:
        proc = _validate(paths, version)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # the init container's securityContext is the app's, copied: written out again, never as a YAML alias
    assert not re.search(r"[&*]id\d+", paths[0].read_text()), paths[0].read_text()
    pod = _doc(paths[0], "Deployment")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["securityContext"]["capabilities"] == pod["containers"][0]["securityContext"]["capabilities"]
    assert init["image"] == car.ref and [v["name"] for v in pod["volumes"]].count("model") == 1
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model"]
    assert mount == {"name": "model", "mountPath": MODEL_DIR, "readOnly": True}
    # the init container's own command, run by the engine on the model image, as the pod's user would
    out = tmp_path / "emptydir"
    out.mkdir()
    out.chmod(0o777)  # an emptyDir is writable by the pod's user
    docker_client.images.pull(car.ref)
    try:
        docker_client.containers.run(
            car.ref, command=init["command"], user="10001:10001", remove=True,
            volumes={str(out): {"bind": init["volumeMounts"][0]["mountPath"], "mode": "rw"}},
        )  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(car.ref, force=True)
    assert tree_sha256s(out) == tree_sha256s(src)
    assert [x.digest for x in car.layers] == [d for d, _, _ in published.layers]  # the same blobs, again


def test_kserve_inference_service_reads_the_model_image_from_mnt_models(tmp_path, model_images):
    _, kserve = model_images
    notes: list[str] = []
    paths = render(APP, tmp_path / "k8s", model_image=kserve.ref, mount="kserve", name="iris", replicas=2,
                   image_model_dir=MODEL_DIR, on_note=notes.append, **APP_ARGS)  # fmt: skip
    assert [p.name for p in paths] == ["inferenceservice.yaml"]
    isvc = _doc(paths[0], "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["metadata"]["name"] == "iris"
    (container,) = isvc["spec"]["predictor"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["image"] == APP and container["name"] == "kserve-container"
    assert env["STORAGE_URI"] == f"oci+native://{kserve.ref}"  # data only: an image volume, no sidecar
    assert env["MODELSHIP_MODEL_DIR"] == "/mnt/models"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert any("0.20" in n for n in notes)
    # no KServe CRD schema offline: the predictor's pod part is checked as a Pod against Kubernetes' own
    predictor = {k: v for k, v in isvc["spec"]["predictor"].items() if k != "minReplicas"}
    pod = tmp_path / "pod.yaml"
    pod.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": predictor}))
    proc = _validate([pod], KUBE_VERSIONS[-1])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kserve_needs_the_model_in_models_and_says_so(tmp_path, model_images):
    plain, _ = model_images
    with pytest.raises(UsageError, match=r"--image-dir /models"):
        render(APP, tmp_path / "k8s", model_image=plain.ref, mount="kserve", image_model_dir=MODEL_DIR, **APP_ARGS)


def test_the_app_model_dir_comes_from_the_app_image(tmp_path, model_images, registry, docker_client, base_image):
    plain, _ = model_images
    tag = build_app_image(docker_client, base_image, f"{registry}/{unique_repo('md/app')}:1")
    try:
        digest = push_image(docker_client, tag)
    finally:
        docker_client.images.remove(tag, force=True)
    app = f"{tag.rsplit(':', 1)[0]}@{digest}"
    paths = render(app, tmp_path / "k8s", model_image=plain.ref, **APP_ARGS)
    pod = _doc(paths[0], "Deployment")["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model"]
    assert mount["mountPath"] == MODEL_DIR  # an app image without the label: modelship's convention


def test_bad_model_images_are_one_line(tmp_path, model_images, registry, capsys):
    plain, _ = model_images
    base = ["deploy", "render", "--image", APP, "--out", str(tmp_path / "k8s"), "--model-dir", MODEL_DIR,
            "--port", "8000", "--ready-path", "/r", "--live-path", "/l"]  # fmt: skip
    cases = [
        (["--model-image", plain.image], 2, "not pinned by digest"),
        (["--mount", "kserve"], 2, "--model-image"),
        (["--model-image", plain.ref, "--mount", "nfs"], 2, "invalid choice"),
        (["--model-image", f"{plain.image.rsplit(':', 1)[0]}@sha256:{'0' * 64}"], 1, "not found"),
        (["--model-image", f"127.0.0.1:9/x@sha256:{'0' * 64}"], 1, "not reachable"),
    ]
    for extra, code, words in cases:
        assert cli.main([*base, *extra]) == code, extra
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, (extra, err)
    assert not (tmp_path / "k8s").exists()
    with pytest.raises(ModelshipError, match="is not a model image"):
        render(APP, tmp_path / "k8s", model_image=plain.ref.replace(plain.image_digest, plain.modelpack_digest),
               image_model_dir=MODEL_DIR, **APP_ARGS)  # fmt: skip
