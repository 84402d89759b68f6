"""The Repository interface: versions of a model above a byte store, and what a publish returns.

A repository resolves a version (a pinned one, or the latest complete PEP 440 version), puts the files of a
resolution into the cache verified, and publishes a model folder as a new version. Two kinds exist:
``repos.folder`` (``PREFIX/<version>/`` files and a publish marker, over any ``stores.base.Source``) and
``repos.oci`` (tags of model images, files in tar layers). The scheme table (``modelship.stores``) picks one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..manifest import FileEntry, Lock, Manifest, Resolution

if TYPE_CHECKING:
    from ..cache import Cache


@dataclass(frozen=True)
class Fetched:
    """What ``Repository.fetch`` did: every file's sha256 (by path), the bytes downloaded, the connections used."""

    shas: dict[str, str]
    downloaded_bytes: int
    connections: int = 0


@dataclass(frozen=True)
class PublishRequest:
    """What ``Repository.publish`` uploads: ``model_dir`` as ``version``, replacing one that exists only with
    ``force``. ``workers``: files uploaded at once (None: the default); ``progress``: the progress bar (None: on a
    terminal); ``image_model_dir``: the model's folder in a model image (oci:// only); ``sign_key``: a PEM EC
    private key, the version gets an OMS signature (``trust.oms``) beside its files; ``sign_cert`` (and
    ``cert_chain``): its certificate (and the ones up to the root), carried in the signature (``trust.certs``)."""

    model_dir: Path
    version: str
    force: bool = False
    workers: int | None = None
    progress: bool | None = None
    image_model_dir: str | None = None
    sign_key: Path | None = None
    sign_cert: Path | None = None
    cert_chain: tuple[Path, ...] = ()


@dataclass(frozen=True)
class PublishResult:
    """What ``publish`` put into a store: the version's manifest (its files and tree digest) and where it is.

    For ``oci://`` also the model image (docs/architecture.md's glossary): ``image`` (``REGISTRY/REPO:<version>``),
    ``image_digest`` (its manifest digest) and ``ref``, the image pinned by that digest
    (``REGISTRY/REPO@sha256:…``: what to deploy, test and lock).
    """

    manifest: Manifest
    location: str  # the version's place: URI/<version>, or oci://REGISTRY/REPO:<version>
    uploaded_bytes: int
    unchanged: bool = False  # the store already held exactly this version: nothing was written
    image: str | None = None
    image_digest: str | None = None
    ref: str | None = None
    details: tuple[tuple[str, Any], ...] = ()  # what only this kind of store has (ModelPack manifest, layers)

    @property
    def uri(self) -> str:
        return self.manifest.uri

    @property
    def version(self) -> str | None:
        return self.manifest.version

    @property
    def files(self) -> tuple[FileEntry, ...]:
        return self.manifest.files

    @property
    def model_digest(self) -> str:
        return self.manifest.digest

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` view: the manifest (``model_digest`` its tree digest), then what was published."""
        out = {k: v for k, v in self.manifest.to_dict().items() if k != "digest"}
        out.update(model_digest=self.manifest.digest, location=self.location)
        out.update(uploaded_bytes=self.uploaded_bytes, unchanged=self.unchanged)
        if self.image is not None:
            out.update(image=self.image, image_digest=self.image_digest, ref=self.ref)
        out.update(dict(self.details))
        return out


@dataclass(frozen=True)
class SignatureWritten:
    """Where ``Repository.write_signature`` put a signature; for ``oci://``, the signed model image (it is a new
    image: ``image_digest``, ``ref`` pinned by it) that the version tag now names."""

    location: str
    image_digest: str | None = None
    ref: str | None = None


class Repository(Protocol):
    """Versions of a model at one URI. Errors are modelship.errors; a repository is closed after use."""

    display: str  # the URI without secrets

    def resolve(
        self, version: str | None, pre: bool, lock: Lock | None = None, exclude: frozenset[str] = frozenset()
    ) -> Resolution:
        """The pinned ``version``, or the latest complete one (pre-releases only with ``pre``). With the ``lock``
        being fetched, a credential that may read but not list still resolves: to what the lock names.
        ``exclude``: versions "latest" must not be (newer ones whose signature did not verify)."""
        ...

    def fetch(self, res: Resolution, cache: Cache, *, workers: int | None, progress: bool | None) -> Fetched:
        """Make every file of ``res`` present and verified in ``cache``."""
        ...

    def publish(self, req: PublishRequest) -> PublishResult:
        """Upload ``req.model_dir`` as ``req.version``; a version that exists is replaced only with ``req.force``."""
        ...

    def signature(self, res: Resolution) -> bytes | None:
        """The OMS signature (``model.sig``) published beside ``res``'s files; None when it has none."""
        ...

    def write_signature(self, res: Resolution, bundle: bytes) -> SignatureWritten:
        """Put ``bundle`` as ``res``'s ``model.sig`` (replacing one); returns where it went."""
        ...

    def close(self) -> None: ...


__all__ = ["Fetched", "PublishRequest", "PublishResult", "Repository", "SignatureWritten"]
