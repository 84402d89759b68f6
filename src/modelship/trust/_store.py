"""Where cosign keeps what it says about an image, shared by signatures (``.sig``) and attestations (``.att``).

- the **tag schema**: one OCI image manifest at ``sha256-<hex>.<kind>`` in the image's repository, one layer
  per signature or attestation, a new one appended to those there (cosign's ``AppendSignatures``), none
  dropped; its config is go-containerregistry's empty image with those layers, minus the clock;
- the **OCI 1.1 referrer**, where the registry answers the referrers API: a manifest with an empty config,
  ``artifactType`` of the kind, ``subject`` the image, holding the one layer (so the same layer gives the
  same referrer).

Every manifest and blob goes through the one image writer (``modelship.oci.write``): blobs first, then the
manifest by digest, then the tag, so a tag never names a manifest whose blobs are not all there. Writing
reads the tag first and re-checks it just before the PUT: two writers at the same instant can still lose
one layer (as with cosign); the error says so and the reader tells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ModelshipError, UsageError
from ..oci.auth import login
from ..oci.reference import Reference, parse_reference
from ..oci.registry import MANIFEST_TYPES, OCI_CONFIG, Fetched, RegistryClient
from ..oci.write import Blob, BytesSource, Image, RemoteBlob, Writer, blob, dumps, image

EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
MAX_LAYERS = 1000  # cosign's maxLayers
_EPOCH = "0001-01-01T00:00:00Z"  # what go-containerregistry's empty image says (no clock in the digest)


def pinned(ref: str, verb: str) -> Reference:
    """``ref`` parsed; UsageError unless it names an image by digest only."""
    r = parse_reference(ref)
    if not r.digest or r.tag:
        raise UsageError(f"{verb} takes an image by digest, REGISTRY/REPO@sha256:…, not {ref!r}")
    return r


def open_client(r: Reference, username: str | None, password: str | None, **opts: Any) -> RegistryClient:
    """A client of ``r``'s registry, logged in as given (or from the docker config)."""
    return RegistryClient(r.registry, login(username, password), **opts)


def kind_tag(digest: str, kind: str) -> str:
    """``sha256-<hex>.<kind>``: the tag cosign stores the ``kind`` (sig, att) of ``digest`` under."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}-{hexdigest}.{kind}"


def read_held(client: RegistryClient, repo: str, tag: str, where: str, noun: str) -> Fetched | None:
    """The manifest at ``tag`` (None when there is none), refused when it is not one cosign reads."""
    if client.head_manifest(repo, tag) is None:
        return None
    held = client.get_manifest(repo, tag)
    m = held.json()
    layers = m.get("layers")
    if held.media_type not in MANIFEST_TYPES or not isinstance(layers, list) or not all(map(_is_descriptor, layers)):
        raise ModelshipError(f"{where} is not {noun} manifest ({held.media_type}); remove that tag first")
    if len(layers) >= MAX_LAYERS:
        raise ModelshipError(f"{where} holds {len(layers)} layers already (cosign reads at most {MAX_LAYERS})")
    return held


def _is_descriptor(d: Any) -> bool:
    return isinstance(d, dict) and isinstance(d.get("digest"), str) and isinstance(d.get("size"), int)


def append(
    client: RegistryClient, repo: str, tag: str, held: Fetched | None, layer: dict[str, Any], data: bytes, verb: str
) -> str:
    """The manifest at ``tag`` with ``layer`` (bytes ``data``) appended, written through the one image writer;
    its digest. ``verb`` names the step in the error when the tag moved meanwhile."""
    old = held.json()["layers"] if held else []
    layers = [Blob(d, RemoteBlob(client, repo, str(d["digest"]), int(d["size"]))) for d in old]
    layers.append(Blob(layer, BytesSource(data)))
    new = layered_image(layers)
    writer = Writer(client, repo)
    writer.upload(new)
    writer.put(new)
    if client.head_manifest(repo, tag) != (held.digest if held else None):
        raise ModelshipError(f"{client.registry}/{repo}:{tag} changed while {verb} (another writer?); run it again")
    writer.tag(new, tag)
    return new.digest


def layered_image(layers: Sequence[Blob]) -> Image:
    """The tag schema's manifest of ``layers``: go-containerregistry's empty image with the layers appended,
    minus the clock (same layers, same digest)."""
    config = {
        "architecture": "",
        "config": {},
        "created": _EPOCH,
        "history": [{"created": _EPOCH} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layers]},
    }
    return image(blob(dumps(config), OCI_CONFIG), list(layers))


def attach(
    client: RegistryClient, repo: str, subject: Fetched, layer: dict[str, Any], data: bytes, artifact_type: str
) -> str | None:
    """``layer`` as an OCI 1.1 referrer of ``subject`` where the registry answers the referrers API; the
    referrer's digest (None: no API)."""
    if client.referrers(repo, subject.digest, artifact_type) is None:
        return None
    ref = image(blob(b"{}", EMPTY_CONFIG), [Blob(layer, BytesSource(data))], artifact_type=artifact_type,
                subject=subject)  # fmt: skip
    if client.head_manifest(repo, ref.digest) is None:
        writer = Writer(client, repo)
        writer.upload(ref)
        writer.put(ref)
    return ref.digest


def candidates(
    client: RegistryClient, r: Reference, kind: str, artifact_type: str, noun: str
) -> list[tuple[str, list[Any]]]:
    """(where, layer descriptors) of every manifest holding the ``kind`` of ``r``: the tag, then the referrers."""
    repo, digest = r.repository, str(r.digest)
    tag = kind_tag(digest, kind)
    out = []
    held = read_held(client, repo, tag, f"{r.name}:{tag}", noun)
    if held is not None:
        out.append((f"{r.name}:{tag}", held.json()["layers"]))
    for entry in client.referrers(repo, digest, artifact_type) or []:
        ref_digest = str(entry.get("digest", ""))
        got = client.get_manifest(repo, ref_digest)
        layers = got.json().get("layers")
        if not got.is_index and isinstance(layers, list):
            out.append((f"{r.name}@{ref_digest}", layers))
    return out


__all__ = ["EMPTY_CONFIG", "append", "attach", "candidates", "kind_tag", "layered_image", "open_client", "pinned",
           "read_held"]  # fmt: skip
