"""The one image writer: an image value (config + layers + manifest, or an index of them) written to a
repository -- the shape of go-containerregistry's ``mutate`` (pure values) and ``remote.Write`` (one writer).

:func:`image` and :func:`index` build the values: deterministic JSON (:func:`dumps`), so the same inputs give
the same digest on any machine. A :class:`Writer` then makes the steps every image write takes, in the order
that keeps a tag on complete images only:

1. :meth:`Writer.upload`: HEAD every blob, several at a time; mount the missing ones from ``mount_from``
   when the registry will, else upload them, largest first; the first failure cancels the rest (their
   readers stop at the next block, their retry waits end).
2. :meth:`Writer.put`: every manifest by its digest (an index's images before the index).
3. :meth:`Writer.tag`: the manifest under a tag, then a HEAD that the tag resolves to it.

:func:`write` is the three in one call: e.g. a signature at ``sha256-<hex>.sig`` is
``write(client, repository, image(config, [payload]), f"sha256-{hex}.sig")``. Assemble and the model image
build their values and hand them here; promote only tags.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._workers import Cancelled, for_each
from ..errors import IntegrityError, TransientError
from ..progress import Progress
from .registry import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, BlobSource, RegistryClient, sha256_digest

UPLOADS = 3  # blobs checked and uploaded at once


def dumps(value: Any) -> bytes:
    """The one JSON form of everything modelship writes to a registry: sorted keys, no spaces (same value ⇒
    same bytes ⇒ same digest)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# ---- values -------------------------------------------------------------------------------------------------


class BytesSource:
    """A blob held in memory (a config, a small payload)."""

    def __init__(self, data: bytes):
        self.data, self.size = data, len(data)

    def open(self, offset: int) -> io.BytesIO:
        return io.BytesIO(self.data[offset:])


@dataclass(frozen=True)
class Blob:
    """A blob an image needs: its descriptor (as the manifest lists it), where its bytes come from, and a
    repository of the same registry it may be mounted from instead."""

    descriptor: dict[str, Any]
    source: BlobSource = field(compare=False)
    mount_from: str | None = None

    @property
    def digest(self) -> str:
        return str(self.descriptor["digest"])

    @property
    def size(self) -> int:
        return int(self.descriptor["size"])


def blob(data: bytes, media_type: str = OCI_CONFIG) -> Blob:
    """A blob of bytes in memory (a config), described as ``{mediaType, digest, size}``."""
    desc = {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}
    return Blob(desc, BytesSource(data))


@dataclass(frozen=True)
class _Written:
    """A manifest or index as written: its bytes, and its digest from them."""

    data: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)


@dataclass(frozen=True)
class Image(_Written):
    """One image manifest (``data``) with its blobs."""

    config: Blob
    layers: tuple[Blob, ...]
    media_type: str = OCI_MANIFEST

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)

    @property
    def manifests(self) -> tuple[Image, ...]:
        return (self,)


@dataclass(frozen=True)
class Index(_Written):
    """An image index (``data``) with its images."""

    images: tuple[Image, ...]
    media_type: str = OCI_INDEX

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return tuple(b for i in self.images for b in i.blobs)

    @property
    def manifests(self) -> tuple[Image | Index, ...]:
        return (*self.images, self)


def image(
    config: Blob,
    layers: Sequence[Blob],
    *,
    annotations: dict[str, str] | None = None,
    artifact_type: str | None = None,
    subject: Document | None = None,
) -> Image:
    """An OCI image manifest over ``config`` and ``layers``; ``subject`` makes it a referrer of that image."""
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor,
        "layers": [b.descriptor for b in layers],
    }
    if artifact_type is not None:
        manifest["artifactType"] = artifact_type
    if subject is not None:
        manifest["subject"] = descriptor(subject)
    if annotations is not None:
        manifest["annotations"] = annotations
    return Image(dumps(manifest), config, tuple(layers))


def index(images: Sequence[tuple[Image, dict[str, Any] | None]], *, annotations: dict[str, str]) -> Index:
    """An OCI image index of ``(image, platform)`` pairs."""
    entries = [{**descriptor(i), **({"platform": p} if p else {})} for i, p in images]
    data = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries, "annotations": annotations})
    return Index(data, tuple(i for i, _ in images))


def descriptor(item: Document) -> dict[str, Any]:
    """``{mediaType, digest, size}`` of a manifest."""
    return {"mediaType": item.media_type, "digest": item.digest, "size": len(item.data)}


# ---- sources that count, stop, and check -------------------------------------------------------------------


class _Counted:
    """A source whose readers count into the writer's bar and stop once the writer is cancelled."""

    def __init__(self, source: BlobSource, bar: Progress, cancel: threading.Event):
        self.source, self.size, self.bar, self.cancel = source, source.size, bar, cancel

    def open(self, offset: int) -> Any:
        reader, bar, cancel = self.source.open(offset), self.bar, self.cancel

        class _Reader:
            def read(self, n: int = -1) -> bytes:
                if cancel.is_set():  # another upload failed, or the run was interrupted: stop at this block
                    raise Cancelled
                data = reader.read(n)
                bar.update(len(data))
                return data

        return _Reader()


class RemoteBlob:
    """A blob of another repository (maybe of another registry), streamed into the one being written.

    Its bytes are hashed on the way and the last block is held back until they match the digest: the target
    registry never receives a damaged copy, and the error names the registry that served it. A first mismatch
    is read again (damaged in transit); a second is the source's copy.
    """

    def __init__(self, client: RegistryClient, repository: str, digest: str, size: int):
        self.client, self.repository, self.digest, self.size = client, repository, digest, size
        self.damaged = 0

    def open(self, offset: int) -> Any:
        # a resumed upload still hashes the whole blob: the part before ``offset`` is read and not sent
        resp = self.client.open_blob(self.repository, self.digest)
        return _Checked(self, resp, offset)


class _Checked:
    def __init__(self, blob: RemoteBlob, resp: Any, skip: int):
        self.blob, self.resp, self.pos, self.hash = blob, resp, 0, hashlib.sha256()
        while self.pos < skip:
            if not self._read(min(1 << 20, skip - self.pos)):
                break

    def _read(self, n: int) -> bytes:
        b = self.blob
        where = f"registry {b.client.registry}: layer {b.digest[:19]}… of {b.repository}"
        data = self.resp.raw.read(n) if self.pos < b.size else b""
        if not data:
            self.resp.close()  # back to the pool
            if self.pos < b.size:
                raise TransientError(f"{where} ended at byte {self.pos} of {b.size}")
            return b""
        self.hash.update(data)
        self.pos += len(data)
        if self.pos == b.size and "sha256:" + self.hash.hexdigest() != b.digest:
            self.resp.close()
            b.damaged += 1
            if b.damaged > 1:
                raise IntegrityError(
                    f"{where} does not match its digest (the bytes hash to sha256:{self.hash.hexdigest()[:12]}…), "
                    "read twice: that registry's copy is damaged; push the app image there again"
                )
            raise TransientError(f"{where} arrived damaged; reading it again")
        return data

    def read(self, n: int = -1) -> bytes:
        return self._read(n if n is not None and n >= 0 else 1 << 20)


# ---- the writer ---------------------------------------------------------------------------------------------


class Document(Protocol):
    """What :meth:`Writer.tag` writes: manifest bytes and their media type (an Image, an Index, a Fetched)."""

    data: bytes
    media_type: str

    @property
    def digest(self) -> str: ...


class Writer:
    """Writes images to one repository (see the module doc); ``sent`` holds the bytes sent per blob."""

    def __init__(self, client: RegistryClient, repository: str, *, title: str = "", show: bool | None = False) -> None:
        self.client, self.repository, self.title, self.show = client, repository, title, show
        self.sent: dict[str, int] = {}

    @property
    def uploaded_bytes(self) -> int:
        return sum(self.sent.values())

    def upload(self, *items: Image | Index) -> int:
        """Every blob of ``items`` the repository lacks, mounted or uploaded; returns the bytes sent."""
        blobs = list({b.digest: b for item in items for b in item.blobs}.values())
        client, repo = self.client, self.repository
        held: dict[str, bool] = {}

        def check(b: Blob) -> None:
            held[b.digest] = client.blob_size(repo, b.digest) is not None

        for_each(check, blobs, UPLOADS, name="modelship-head")
        missing = sorted((b for b in blobs if not held[b.digest]), key=lambda b: -b.size)
        # copies from another repository may be mounted instead: the bar counts only what is surely sent
        total = sum(b.size for b in missing if not isinstance(b.source, RemoteBlob))
        before = self.uploaded_bytes

        def push(b: Blob) -> None:
            source = _Counted(b.source, bar, client.cancel)
            self.sent[b.digest] = client.push_blob(
                repo, b.digest, b.size, source, mount_from=b.mount_from, check_first=False
            )

        # the first failure (or Ctrl-C) sets the client's cancel: the other uploads stop at their next block
        # or retry wait
        with Progress(total or None, self.title, show=self.show) as bar:
            for_each(push, missing, UPLOADS, client.cancel, name="modelship-upload")
        return self.uploaded_bytes - before

    def put(self, *items: Image | Index) -> None:
        """Each manifest of ``items`` under its digest (an index's images first)."""
        seen: set[str] = set()
        for item in items:
            for m in item.manifests:
                if m.digest not in seen:
                    seen.add(m.digest)
                    self.client.put_manifest(self.repository, m.digest, m.data, m.media_type)

    def tag(self, item: Document, tag: str) -> None:
        """``item`` under ``tag``, then checked: the tag must resolve to its digest."""
        self.client.put_manifest(self.repository, tag, item.data, item.media_type)
        held = self.client.head_manifest(self.repository, tag)
        if held != item.digest:
            raise IntegrityError(
                f"{self.client.registry}/{self.repository}:{tag} resolves to {held} after the PUT, not "
                f"{item.digest}: another writer? run it again"
            )


def write(
    client: RegistryClient,
    repository: str,
    item: Image | Index,
    tag: str,
    *,
    title: str = "",
    show: bool | None = False,
) -> Writer:
    """Upload, put and tag one image (or index): the whole write in one call."""
    w = Writer(client, repository, title=title, show=show)
    w.upload(item)
    w.put(item)
    w.tag(item, tag)
    return w


__all__ = ["UPLOADS", "Blob", "BytesSource", "Image", "Index", "RemoteBlob", "Writer", "blob", "dumps", "image",
           "index", "write"]  # fmt: skip
