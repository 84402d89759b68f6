"""inspect(): labels and model of an image, from the local engine or else from its registry."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from .._docker import engine, local_image
from ..conventions import (
    MODEL_DIGEST_LABEL,
    MODEL_MANIFEST_LABEL,
    MODEL_SIGNER_LABEL,
    MODEL_URI_LABEL,
    MODEL_VERSION_LABEL,
)
from ..errors import DockerError, NotFoundError, UsageError
from ..oci.reference import names_registry, parse_reference, pinned, split_tag
from ..oci.remote import remote_image
from . import labels as labels_mod


@dataclass(frozen=True)
class InspectResult:
    """An image's labels, with the model and the app they describe, parsed (docs/architecture.md's glossary).

    ``image`` is the reference as asked for; ``image_digest`` the registry's manifest digest and ``ref`` the
    image pinned by it (both None for a local image never pushed or pulled); ``model["model_digest"]`` the tree
    digest of the model inside; ``app`` what deploy render needs; ``manifest`` the model's ``modelship.json``
    from its label (None without one, or when it does not parse). Of a multi-platform image, ``platform`` and
    ``platforms`` say which image was read and which there are.
    """

    image: str
    ref: str | None
    source: str  # "local" (the engine) or "registry"
    id: str | None  # the image id: its config digest
    image_digest: str | None
    labels: dict[str, str]
    model: dict[str, str | None]
    app: dict[str, Any]
    manifest: dict[str, Any] | None
    platform: str | None = None
    platforms: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` view; ``platform`` and ``platforms`` only for an image of an index."""
        d = asdict(self)
        if self.platforms:
            d["platforms"] = list(self.platforms)
        else:
            del d["platform"], d["platforms"]
        return d


def describe(
    image: str,
    source: str,
    image_id: str | None,
    digest: str | None,
    labels: dict[str, str],
    platform: str | None = None,
    platforms: tuple[str, ...] = (),
) -> InspectResult:
    """The inspect result of ``image`` from its labels (``digest`` the registry's, None if it has none)."""
    manifest = None
    raw = labels.get(MODEL_MANIFEST_LABEL)
    if raw:
        try:
            manifest = json.loads(raw)
        except ValueError:
            manifest = None  # a hand-made or truncated label: report the rest anyway
    return InspectResult(
        image=image,
        ref=pinned(image, digest) if digest else None,
        source=source,
        id=image_id,
        image_digest=digest,
        labels=labels,
        model=model_block(labels),
        app=labels_mod.app_settings(labels),
        manifest=manifest,
        platform=platform,
        platforms=tuple(platforms),
    )


def model_block(labels: dict[str, str]) -> dict[str, str | None]:
    """The model an image's labels name: uri, version, model_digest (the tree digest) and signer (the key
    fingerprint its model.sig was verified against when the image was made; None: not verified)."""
    return {
        "uri": labels.get(MODEL_URI_LABEL),
        "version": labels.get(MODEL_VERSION_LABEL),
        "model_digest": labels.get(MODEL_DIGEST_LABEL),
        "signer": labels.get(MODEL_SIGNER_LABEL),
    }


def _local(ref: str, client) -> InspectResult | None:
    img = local_image(client, ref, lambda why: DockerError(f"cannot inspect {ref}: {why}"))
    if img is None:
        return None
    repo_digests = img.attrs.get("RepoDigests") or []
    digest = split_tag(repo_digests[0])[1] if repo_digests else None  # NAME@DIGEST
    return describe(ref, "local", img.id, digest, dict(img.labels or {}))


def inspect(
    ref: str,
    *,
    username: str | None = None,
    password: str | None = None,
    docker_client=None,
    platform: str | None = None,
) -> InspectResult:
    """Labels and model of an image: the local one if the engine has it, else read from its registry.

    Of a multi-platform image, ``platform`` and ``platforms`` say which image was read and which there are;
    ``platform="linux/arm64"`` picks one (from the registry: the engine holds one platform of a name).
    """
    parse_reference(ref)  # fail early, with a usage error, on a malformed reference
    remote_ok = names_registry(ref)
    if platform is not None and not remote_ok:
        raise UsageError(f"--platform reads an image index in a registry: give the full reference, not {ref!r}")
    if platform is None:  # the engine holds one platform of a name: a platform is read from the index
        try:
            with engine(docker_client) as client:
                found = _local(ref, client)
                if found is not None:
                    return found
        except DockerError:
            if not remote_ok:
                raise  # a local name: the engine was the only place to look
    if not remote_ok:
        # never guess Docker Hub for a name the user may simply have mistyped
        raise NotFoundError(
            f"image {ref} not found locally; to read it from a registry give the full reference "
            "(REGISTRY/NAME:TAG, e.g. myacr.azurecr.io/app:1 or docker.io/library/python:3.11)"
        )
    remote = remote_image(ref, username=username, password=password, platform=platform)
    platforms = remote["platforms"] or ()
    platform_read = remote["platform"] if platforms else None
    return describe(ref, "registry", remote["id"], remote["digest"], remote["labels"], platform_read, platforms)
