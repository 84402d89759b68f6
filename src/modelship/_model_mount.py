"""The split shape in Kubernetes: the app image runs, the model image is mounted at the app's model dir.

Three ways, for ``modelship deploy render --model-image MODEL@sha256:… --mount …``:

- ``image-volume`` (the default): an ``image`` volume (KEP-4639) with the model image, mounted read-only at
  the app's model dir, ``subPath`` the model's folder inside the image. Needs Kubernetes 1.33 or newer (image
  volumes are beta there, and subPath on them arrived in 1.33), with the ``ImageVolume`` feature gate on
  before 1.35 (on by default from 1.35), and a runtime that mounts images (containerd 2.1+, CRI-O 1.31+).
  Nodes cache the model's layers like any image's, across apps.
- ``init-container``: for older clusters. An init container of the model image copies the model into an
  ``emptyDir``, mounted read-only in the app. The model image must be able to run ``sh`` and ``cp``: a model
  image published by ``modelship publish`` is data only, so this needs one assembled onto a small base
  (``modelship assemble BASE@sha256:… --model DIR --tag …``).
- ``kserve``: a KServe ``InferenceService`` whose predictor is the app image with ``STORAGE_URI`` set, so
  KServe provides the model at ``/mnt/models`` (``MODELSHIP_MODEL_DIR`` points there). KServe reads
  ``/models`` of the model image (``publish --image-dir /models``). A data-only image gets
  ``oci+native://`` (KServe 0.20+: an image volume, no sidecar); one that can run a shell gets ``oci://``
  (KServe's modelcar: a sidecar that links its ``/models``).

Both references stay pinned by digest: what was smoke-tested together is what runs together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .conventions import MODEL_DIGEST_ANNOTATION, MODEL_IMAGE_ANNOTATION
from .errors import UsageError

MOUNTS = ("image-volume", "init-container", "kserve")
VOLUME = "model"
KSERVE_MODEL_DIR = "/models"  # where KServe's modelcars (and oci+native's default subPath) keep the model
KSERVE_MOUNT = "/mnt/models"
_COPY_TO = "/modelship-model"


@dataclass(frozen=True)
class ModelMount:
    """What the manifests need from the model image, and where the app wants the model."""

    ref: str  # REGISTRY/REPO@sha256:…
    image_model_dir: str  # the model's folder inside the model image
    app_dir: str  # the app's model dir (MODELSHIP_MODEL_DIR)
    data_only: bool
    size: int  # bytes of model files
    model_digest: str
    version: str | None


def model_mount(model_image: str, app_dir: str) -> ModelMount:
    """Read the model image from its registry (it must be one: one line if not) for ``app_dir``."""
    from .oci.modelimage import model_image as read

    img = read(model_image)
    if img.ref.digest is None:
        raise UsageError(f"model image {model_image!r} is not pinned by digest; pass REPO@sha256:<64 hex>")
    return ModelMount(
        ref=img.pinned,
        image_model_dir=img.image_model_dir,
        app_dir=app_dir,
        data_only=img.data_only,
        size=sum(f.size for f in img.model.files),
        model_digest=img.model.digest,
        version=img.version,
    )


def notes(m: ModelMount, mount: str) -> list[str]:
    """What the cluster must offer for this shape: printed by the CLI and written into the manifests."""
    if mount == "image-volume":
        return [
            "the model is an image volume: Kubernetes >= 1.33 (subPath on image volumes), with the ImageVolume "
            "feature gate on before 1.35 (on by default from 1.35), and containerd >= 2.1 or CRI-O >= 1.31 on "
            "the nodes"
        ]
    if mount == "init-container":
        return ["the model is copied into an emptyDir by an init container of the model image: any Kubernetes"]
    if m.data_only:
        return [
            "KServe >= 0.20 mounts the data-only model image as an image volume (storage URI oci+native://): "
            "Kubernetes >= 1.33 with the ImageVolume feature gate before 1.35"
        ]
    return [
        "KServe runs the model image as a modelcar (storage URI oci://): enable modelcars in inferenceservice-config"
    ]


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def _annotate(doc: dict[str, Any], m: ModelMount) -> None:
    ann = doc.setdefault("metadata", {}).setdefault("annotations", {}) or {}
    doc["metadata"]["annotations"] = ann
    ann[MODEL_IMAGE_ANNOTATION] = m.ref
    ann[MODEL_DIGEST_ANNOTATION] = m.model_digest


def _mount_in(container: dict[str, Any], m: ModelMount, sub_path: str | None) -> None:
    mounts = [v for v in container.get("volumeMounts") or [] if v.get("mountPath") != m.app_dir]
    entry: dict[str, Any] = {"name": VOLUME, "mountPath": m.app_dir, "readOnly": True}
    if sub_path:
        entry["subPath"] = sub_path
    container["volumeMounts"] = [*mounts, entry]


def _volumes(pod: dict[str, Any], volume: dict[str, Any]) -> None:
    if any(v.get("name") == VOLUME for v in pod.get("volumes") or []):
        raise UsageError(f"the Deployment template already has a volume named {VOLUME!r}; rename it")
    pod["volumes"] = [*(pod.get("volumes") or []), volume]


def image_volume(deployment: dict[str, Any], container: dict[str, Any], m: ModelMount) -> None:
    """The model image as a read-only image volume at the app's model dir."""
    pod = _pod(deployment)
    _volumes(pod, {"name": VOLUME, "image": {"reference": m.ref, "pullPolicy": "IfNotPresent"}})
    _mount_in(container, m, m.image_model_dir.strip("/"))
    _annotate(deployment["spec"]["template"], m)


def init_container(deployment: dict[str, Any], container: dict[str, Any], m: ModelMount) -> None:
    """An init container of the model image copies the model into an emptyDir, mounted read-only in the app."""
    if m.data_only:
        raise UsageError(
            f"model image {m.ref} is data only (nothing in it can copy files), so it cannot be an init container: "
            "use --mount image-volume (Kubernetes >= 1.33), or assemble the model onto a base with a shell "
            "('modelship assemble BASE@sha256:… --model DIR --tag …')"
        )
    pod = _pod(deployment)
    size_mi = m.size // (1024 * 1024) + 64  # the model and some room
    _volumes(pod, {"name": VOLUME, "emptyDir": {"sizeLimit": f"{size_mi}Mi"}})
    copier = {
        "name": "model",
        "image": m.ref,
        "imagePullPolicy": "IfNotPresent",
        # "$0"/"$1": the paths are arguments, not text spliced into the shell line
        "command": ["sh", "-c", 'cp -R "$0"/. "$1"/', m.image_model_dir, _COPY_TO],
        "volumeMounts": [{"name": VOLUME, "mountPath": _COPY_TO}],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        "securityContext": dict(container.get("securityContext") or {}),
    }
    pod["initContainers"] = [*(c for c in pod.get("initContainers") or [] if c.get("name") != "model"), copier]
    _mount_in(container, m, None)
    _annotate(deployment["spec"]["template"], m)


def inference_service(
    deployment: dict[str, Any], container: dict[str, Any], m: ModelMount, name: str, replicas: int
) -> dict[str, Any]:
    """A KServe InferenceService running the app container with the model image as its storage URI."""
    if m.image_model_dir.rstrip("/") != KSERVE_MODEL_DIR:
        raise UsageError(
            f"model image {m.ref} keeps the model in {m.image_model_dir}; KServe reads {KSERVE_MODEL_DIR} of a model "
            f"image: publish it with --image-dir {KSERVE_MODEL_DIR}"
        )
    scheme = "oci+native" if m.data_only else "oci"
    app = {k: v for k, v in container.items() if k not in ("volumeMounts", "lifecycle")}
    app["name"] = "kserve-container"
    env = [e for e in app.get("env") or [] if e.get("name") not in ("STORAGE_URI", "MODELSHIP_MODEL_DIR")]
    app["env"] = [
        *env,
        {"name": "STORAGE_URI", "value": f"{scheme}://{m.ref}"},
        {"name": "MODELSHIP_MODEL_DIR", "value": KSERVE_MOUNT},
    ]
    app["ports"] = [{k: v for k, v in p.items() if k != "name"} for p in app.get("ports") or []][:1]
    pod = _pod(deployment)
    predictor: dict[str, Any] = {"minReplicas": replicas, "containers": [app]}
    for key in ("securityContext", "automountServiceAccountToken", "terminationGracePeriodSeconds"):
        if key in pod:
            predictor[key] = pod[key]
    labels = dict(deployment.get("metadata", {}).get("labels") or {})
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "serving.kserve.io/deploymentMode": "RawDeployment",
                MODEL_IMAGE_ANNOTATION: m.ref,
                MODEL_DIGEST_ANNOTATION: m.model_digest,
            },
        },
        "spec": {"predictor": predictor},
    }


def check_mount(mount: str, model_image: str | None) -> None:
    if mount not in MOUNTS:
        raise UsageError(f"--mount {mount!r}: choose one of {', '.join(MOUNTS)}")
    if model_image is None and mount != "image-volume":
        raise UsageError(f"--mount {mount} is for the split shape: give --model-image MODEL@sha256:…")


__all__ = [
    "MOUNTS",
    "ModelMount",
    "check_mount",
    "image_volume",
    "inference_service",
    "init_container",
    "model_mount",
    "notes",
]
