"""ls(): a repository's tags, each with its manifest digest and, for a model image, its model version and digest.

A model image is one ``modelship publish DIR oci://…`` wrote (``artifactType`` is ModelPack's) or an app image
``assemble`` put a model on: both carry the ``io.modelship.model.version``/``.digest`` annotations on their
manifest, so one manifest GET per tag is enough (no config read). PEP 440 versions come first, newest first,
then the other tags by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from packaging.version import InvalidVersion, Version

from ..conventions import MODEL_DIGEST_LABEL, MODEL_VERSION_LABEL
from ..errors import NotFoundError, UsageError
from .auth import login
from .modelimage import repository_of
from .registry import MANIFEST_TYPES, RegistryClient


@dataclass(frozen=True)
class ListedImage:
    """One tag of a repository."""

    image: str  # REGISTRY/REPO:TAG
    ref: str  # REGISTRY/REPO@sha256:…
    image_digest: str
    media_type: str
    version: str | None  # the model version, for a model image
    model_digest: str | None  # the model's tree digest, for a model image

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ordered(tags: list[str]) -> list[str]:
    versions, others = [], []
    for t in tags:
        try:
            versions.append((Version(t), t))
        except InvalidVersion:
            others.append(t)
    return [t for _, t in sorted(versions, key=lambda x: x[0], reverse=True)] + sorted(others)


def ls(
    repository: str,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float | None = None,
    azure_credential: Any = None,
) -> list[ListedImage]:
    """The tags of ``repository`` (``oci://REGISTRY/REPO`` or ``REGISTRY/REPO``), newest version first."""
    r = repository_of(repository)
    if r.tag or r.digest:
        raise UsageError(f"ls {repository}: give the repository, REGISTRY/REPO, without a tag or digest")
    out = []
    with RegistryClient(r.registry, login(username, password), timeout=timeout, azure_credential=azure_credential) as c:
        for tag in _ordered(c.list_tags(r.repository)):
            try:
                got = c.get_manifest(r.repository, tag)
            except NotFoundError:
                continue  # deleted between the listing and the read
            ann = (got.json().get("annotations") or {}) if got.media_type in MANIFEST_TYPES or got.is_index else {}
            version, model_digest = ann.get(MODEL_VERSION_LABEL), ann.get(MODEL_DIGEST_LABEL)
            out.append(
                ListedImage(
                    image=f"{r.name}:{tag}",
                    ref=f"{r.name}@{got.digest}",
                    image_digest=got.digest,
                    media_type=got.media_type,
                    version=str(version) if model_digest and version else None,
                    model_digest=str(model_digest) if model_digest else None,
                )
            )
    return out


__all__ = ["ListedImage", "ls"]
