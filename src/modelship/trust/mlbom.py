"""The ML-BOM of an image: a CycloneDX 1.6 document made with cyclonedx-python-lib (CycloneDX's own library).

It lists the model as a component of type ``machine-learning-model`` (name, version, the URI it was published
at, its tree digest; each file a ``file`` component with its sha256) and the app's Python dependencies as
``library`` components with ``pkg:pypi`` purls (the app image's label ``io.modelship.app.dependencies``).
The image itself, when named, is the BOM's subject (``metadata.component``, a ``container``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..conventions import APP_DEPENDENCIES_LABEL, parse_dependencies
from ..manifest import Manifest
from .slsa import image_descriptor, public_uri

_PROP = "modelship"  # prefix of our CycloneDX property names (modelship:model:digest, ...)


def model_name(uri: str) -> str:
    """The model's name: the last segment of its URI's path (``az://acct/models/iris`` -> ``iris``)."""
    path = public_uri(uri).split("://", 1)[-1]
    return next((p for p in reversed(path.split("/")) if p), path) or "model"


def ml_bom(
    manifest: Manifest,
    app_labels: Mapping[str, str] | None = None,
    *,
    image_ref: str | None = None,
    signer: str | None = None,
    tool_version: str | None = None,
) -> dict[str, Any]:
    """The CycloneDX 1.6 BOM (as JSON data) of ``manifest``'s model and the app's dependencies (named by the app
    image's ``app_labels``) in the image ``image_ref`` (REGISTRY/REPO@sha256:…); ``signer``: who signed the model."""
    from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, Property, XsUri
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    uri = public_uri(manifest.uri)
    props = [
        Property(name=f"{_PROP}:model:uri", value=uri),
        Property(name=f"{_PROP}:model:digest", value=manifest.digest),
    ]
    if signer:
        props.append(Property(name=f"{_PROP}:model:signer", value=signer))
    files = [
        Component(
            type=ComponentType.FILE,
            name=f.path,
            bom_ref=f"model-file:{f.path}",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=f.sha256)] if f.sha256 else [],
            properties=[Property(name=f"{_PROP}:file:size", value=str(f.size))],
        )
        for f in manifest.files
    ]
    refs = []
    if "://" in uri and not uri.startswith("file:"):
        refs.append(ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(uri)))
    model = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        name=model_name(manifest.uri),
        version=manifest.version,
        bom_ref=f"model:{manifest.digest}",
        external_references=refs,
        properties=props,
        components=files,
    )
    libraries = []
    for name, version in sorted(set(parse_dependencies((app_labels or {}).get(APP_DEPENDENCIES_LABEL)))):
        purl = PackageURL(type="pypi", name=name, version=version)
        libraries.append(
            Component(type=ComponentType.LIBRARY, name=name, version=version, purl=purl, bom_ref=str(purl))
        )
    metadata = BomMetaData()
    if tool_version:
        metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name="modelship", version=tool_version))
    if image_ref is not None:
        image = Component(
            type=ComponentType.CONTAINER,
            name=image_ref.partition("@")[0],
            version=image_ref.partition("@")[2] or None,
            bom_ref=image_ref,
            purl=PackageURL.from_string(image_descriptor(image_ref, "image")["uri"]) if "@" in image_ref else None,
        )
        metadata.component = image
    bom = Bom(components=[model, *libraries], metadata=metadata)
    if metadata.component is not None:
        bom.register_dependency(metadata.component, [model, *libraries])
    return json.loads(JsonV1Dot6(bom).output_as_string())


__all__ = ["ml_bom", "model_name"]
