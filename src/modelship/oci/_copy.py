"""copy(): an image (manifest or index, with every blob) from one repository or registry to another.

The manifests are written as the source holds them, byte for byte, so the digest is the same at both ends.
The writes are the one image writer's (``modelship.oci.write``): HEAD each blob at the destination, mount
the missing ones from the source repository when both are in one registry, else stream them from the source
registry (``RemoteBlob``: hashed on the way, a damaged copy never reaches the destination); then every
manifest by digest, then the tag, verified. A re-run sends nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ModelshipError, NotFoundError, UsageError
from .auth import login
from .modelimage import repository_of
from .reference import Reference
from .registry import INDEX_TYPES, MANIFEST_TYPES, Fetched, RegistryClient
from .write import Blob, Image, Index, RemoteBlob, Writer


@dataclass(frozen=True)
class CopyResult:
    """What ``copy`` wrote: the pinned ``ref`` at the destination, its tag (if any) and what it cost."""

    ref: str  # DST REGISTRY/REPO@DIGEST
    image_digest: str  # the same at the source and the destination
    image: str | None  # DST REGISTRY/REPO:TAG, verified to resolve to image_digest; None for a digest-only copy
    source: str  # SRC REGISTRY/REPO@DIGEST
    media_type: str
    manifests: int  # manifests written (an index and its images)
    blobs: int  # blobs the image needs
    uploaded_bytes: int  # bytes sent (0 when the destination had every blob, or mounted them)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _blob(desc: Any, where: Reference, src: RegistryClient, mount: str | None) -> Blob:
    if not isinstance(desc, dict) or not str(desc.get("digest", "")).startswith("sha256:"):
        raise ModelshipError(f"{where}: a descriptor in its manifest has no sha256 digest")
    if not isinstance(desc.get("size"), int) or desc["size"] < 0:
        raise ModelshipError(f"{where}: blob {str(desc['digest'])[:19]}… has no valid size")
    return Blob(desc, RemoteBlob(src, where.repository, str(desc["digest"]), int(desc["size"])), mount)


def _image(got: Fetched, where: Reference, src: RegistryClient, mount: str | None) -> Image:
    """An image value over the source's manifest bytes (as they are: same bytes, same digest)."""
    m = got.json()
    layers = m.get("layers") or []
    if "config" not in m or not isinstance(layers, list):
        raise ModelshipError(f"{where}: manifest {got.digest[:19]}… has no config or layers")
    return Image(
        got.data,
        _blob(m["config"], where, src, mount),
        tuple(_blob(d, where, src, mount) for d in layers),
        got.media_type,
    )


def _value(got: Fetched, where: Reference, src: RegistryClient, mount: str | None) -> Image | Index:
    if got.media_type in MANIFEST_TYPES:
        return _image(got, where, src, mount)
    if got.media_type not in INDEX_TYPES:
        what = got.media_type or "no media type"
        raise ModelshipError(f"{where} is not an image ({what}; schema 1 is not supported)")
    images = []
    for entry in got.json().get("manifests") or []:
        digest = str((entry or {}).get("digest", ""))
        if not digest.startswith("sha256:"):
            raise ModelshipError(f"{where}: an entry of its index has no sha256 digest")
        child = src.get_manifest(where.repository, digest)  # checked against the digest
        if child.media_type not in MANIFEST_TYPES:
            raise ModelshipError(f"{where}: index entry {digest[:19]}… is {child.media_type}, not an image manifest")
        images.append(_image(child, where, src, mount))
    return Index(got.data, tuple(images), got.media_type)


def send(
    src: RegistryClient,
    where: Reference,
    got: Fetched,
    dst: RegistryClient,
    repository: str,
    *,
    title: str = "",
    quiet: bool = True,
) -> tuple[Image | Index, Writer]:
    """The manifest ``got`` of ``where`` (at ``src``) and every blob under it, written to ``repository`` at
    ``dst`` by digest (no tag): blobs the destination has are skipped, in one registry they are mounted."""
    # one registry: the destination mounts each blob from the source repository, nothing is sent
    mount = where.repository if src.registry == dst.registry and where.repository != repository else None
    value = _value(got, where, src, mount)
    w = Writer(dst, repository, title=title, show=False if quiet else None)
    w.upload(value)
    w.put(value)
    return value, w


def copy(
    src: str,
    dst: str,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float | None = None,
    quiet: bool = True,
    azure_credential: Any = None,
) -> CopyResult:
    """Copy the image ``src`` (``REGISTRY/REPO:TAG`` or ``@sha256:…``, ``oci://`` allowed) to ``dst``.

    ``dst`` is ``REGISTRY/REPO[:TAG]`` (no tag: the source's tag; a source named by its digest is then written
    by digest only) or ``REGISTRY/REPO@sha256:…`` of the same digest. ``username``/``password`` are for
    ``dst``'s registry (and the source's, when it is the same one); otherwise the docker config is used.
    """
    s, d = repository_of(src), repository_of(dst)
    if d.digest and d.tag:
        raise UsageError(f"{dst}: give the destination a tag or a digest, not both")
    # no destination tag: the source's (``latest`` when it names neither), none when it names a digest
    tag = d.tag or (None if d.digest or s.digest else (s.tag or "latest"))
    creds = login(username, password)
    opts: dict[str, Any] = {"timeout": timeout, "azure_credential": azure_credential}
    dst_client = RegistryClient(d.registry, creds, **opts)
    same = s.registry == d.registry
    src_client = dst_client if same else RegistryClient(s.registry, None, **opts)
    try:
        try:
            got = src_client.get_manifest(s.repository, s.reference)
        except NotFoundError:
            raise NotFoundError(
                f"{s}: no such image (tag or digest) to copy; 'modelship ls oci://{s.name}' lists its tags"
            ) from None
        if d.digest and d.digest != got.digest:
            raise UsageError(f"{dst}: {src} is {got.digest}, not that digest; give the destination a tag instead")
        value, w = send(src_client, s, got, dst_client, d.repository, title=f"copy to {d.name}", quiet=quiet)
        if tag:
            w.tag(value, tag)
        elif dst_client.head_manifest(d.repository, value.digest) != value.digest:
            raise ModelshipError(f"{d.name}@{value.digest} is not there after its PUT: another writer? run it again")
    finally:
        dst_client.close()
        if src_client is not dst_client:
            src_client.close()
    return CopyResult(
        ref=f"{d.name}@{value.digest}",
        image_digest=value.digest,
        image=f"{d.name}:{tag}" if tag else None,
        source=f"{s.name}@{value.digest}",
        media_type=value.media_type,
        manifests=len(value.manifests),
        blobs=len({b.digest for b in value.blobs}),
        uploaded_bytes=w.uploaded_bytes,
    )


__all__ = ["CopyResult", "copy", "send"]
