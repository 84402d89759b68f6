"""The split shape, locally: ``--modelship-model-image REF`` mounts a model image's content read-only at the
app's model dir, so the pair that will be deployed is the pair that is tested.

The Docker engine (20.10 here) has no image mounts (``--mount type=image`` came with Engine 28), so the
engine itself unpacks the model image into a named volume: it pulls the model image (only the layers it
lacks), and creating a container of it with an empty volume at the model's folder makes the engine copy
that folder into the volume (its "copy-up" of image content into a new volume). That container never runs
and is removed at once. The app container mounts the volume read-only at its model dir. The bytes the app
sees are the model image's, as the engine unpacked them; the copy is the init-container shape of
``deploy render --mount init-container``, not the image volume's zero-copy mount, and costs one copy of the
model on the engine's disk.

The image checks then compare the mounted files with the model image's manifest: the model image's
``io.modelship.model.*`` labels stand in for the app image's (see ``with_model``).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from modelship._docker import short_reason
from modelship.conventions import MODEL, MODEL_DIR_LABEL, MODEL_MANIFEST_LABEL

from .errors import SetupError
from .reaper import LABEL_SESSION, STALE_AFTER_S, is_stale

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image

    from .images import ImageInfo

MODEL_LABELS = f"{MODEL}."
DIR_LABEL = MODEL_DIR_LABEL
MANIFEST_LABEL = MODEL_MANIFEST_LABEL


@dataclass(frozen=True)
class ModelVolume:
    """A model image unpacked by the engine into a volume, ready to be mounted read-only."""

    ref: str
    image_id: str
    volume: str
    image_model_dir: str  # the model's folder inside the model image
    labels: dict[str, str]  # the model image's io.modelship.model.* labels


def prepare(client: docker.DockerClient, ref: str, pull: bool, labels: dict[str, str]) -> ModelVolume:
    """Pull ``ref`` if it is not local (or ``pull``), check it is a model image, unpack it into a volume."""
    import docker.errors
    from docker.utils import parse_repository_tag

    try:
        image = None if pull else _local(client, ref)
        if image is None:
            repo, tag = parse_repository_tag(ref)
            client.images.pull(repo, tag=tag)
            image = client.images.get(ref)
    except docker.errors.DockerException as e:
        raise SetupError(
            f"could not pull model image {ref} ({short_reason(e)}): check the name and 'docker login'"
        ) from None
    model_labels = {k: v for k, v in (image.labels or {}).items() if k.startswith(MODEL_LABELS)}
    image_model_dir = model_labels.get(DIR_LABEL)
    if not image_model_dir or MANIFEST_LABEL not in model_labels:
        raise SetupError(
            f"{ref} is not a model image (no {DIR_LABEL} and {MANIFEST_LABEL} labels): publish one with "
            "'modelship publish DIR oci://REGISTRY/REPO --version V'"
        )
    try:
        json.loads(model_labels[MANIFEST_LABEL])
    except ValueError:
        raise SetupError(f"model image {ref}: its {MANIFEST_LABEL} label is not JSON") from None
    name = f"modelship-model-{labels.get(LABEL_SESSION, 'run')}-{uuid.uuid4().hex[:8]}"
    try:
        client.volumes.create(name=name, labels=labels)
        # the engine fills an empty volume with the image's content at the mount point when the container
        # is created; nothing runs (a data-only model image has nothing to run), the container goes at once
        helper = client.containers.create(
            image.id,
            command=["/modelship-model-image-is-never-run"],
            volumes={name: {"bind": image_model_dir, "mode": "ro"}},
            labels=labels,
            network_disabled=True,
        )
        helper.remove(force=True)
    except docker.errors.DockerException as e:
        remove(client, name)
        raise SetupError(f"could not unpack model image {ref} into a volume ({short_reason(e)})") from None
    return ModelVolume(ref, image.id, name, image_model_dir, model_labels)


def _local(client: docker.DockerClient, ref: str) -> Image | None:
    import docker.errors

    with contextlib.suppress(docker.errors.ImageNotFound):
        return client.images.get(ref)
    return None


def with_model(app: ImageInfo, model: ModelVolume) -> ImageInfo:
    """The image the checks judge: the app's, with the model image's model labels (what it will run with)."""
    labels = {k: v for k, v in app.labels.items() if not k.startswith(MODEL_LABELS)}
    return replace(app, labels={**labels, **model.labels}, history_loader=app.history_loader)


def remove(client: docker.DockerClient, name: str) -> None:
    """Remove the volume (after the containers using it); an engine gone away leaves it to the next reaper."""
    import docker.errors

    with contextlib.suppress(docker.errors.DockerException):
        client.api.remove_volume(name, force=True)


def reap_stale(client: docker.DockerClient, now: float, stale_after: float = STALE_AFTER_S) -> list[str]:
    """Model volumes left behind by killed runs (same rule as their containers: owner gone, or too old)."""
    import docker.errors

    removed = []
    try:
        volumes = client.api.volumes(filters={"label": LABEL_SESSION}).get("Volumes") or []
    except docker.errors.DockerException:
        return []
    for v in volumes:
        labels = v.get("Labels") or {}
        if is_stale(labels, now, stale_after):
            with contextlib.suppress(docker.errors.APIError):  # in use by a live container, or gone meanwhile
                client.api.remove_volume(v["Name"])
                removed.append(v["Name"])
    return removed


__all__ = ["ModelVolume", "prepare", "reap_stale", "remove", "with_model"]
