"""OCI repositories: ``oci://REGISTRY/REPO[:TAG|@sha256:…]``, model images as versions (``repos.base.Repository``).

A version is a tag that is a PEP 440 version ("latest": the highest, pre-releases only with ``pre``), or the
tag or digest the URI names. What a version holds comes from the model image's config (checked against its
digest, itself from the manifest, itself checked against the digest asked for or that the tag resolved to):
its ``io.modelship.model.manifest`` label lists every file with its size and sha256, so ``resolve`` and
``lock`` read two small documents and no layer; ``lock`` pins the manifest digest (``Lock.pin``).

``fetch`` streams the model layers (only those holding a file the cache lacks, several at a time; the bytes
from ``stores.oci.BlobStream``), and reads the files out of the tar as it goes: each file is hashed on the way
into a cache temp file and enters the cache only once both its sha256 and its layer's digest matched. A layer
whose bytes do not hash to its digest is read again (damaged on the way) before it is called damaged in the
registry; a layer's bytes are kept under the cache's ``partial/`` until it is in, so a fetch killed half-way
resumes where it was. Tar layers are untrusted input, read by the strict reader (``modelship.oci.tarread``);
this module adds that names stay inside the image's model dir and that sizes match the manifest.

``publish`` pushes a model image (``modelship.oci.modelimage``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.version import InvalidVersion, Version

from .. import settings
from .._fs import CACHE_ADVICE, no_space
from .._workers import for_each
from ..errors import IntegrityError, ModelshipError, NotFoundError, UsageError
from ..manifest import MANIFEST_NAME, FileEntry, Lock, Manifest, Resolution
from ..modeldir import safe_relpath
from ..oci.modelimage import FILEPATH, MODELPACK_SUFFIX, ModelImage, publish_image, read_model_image
from ..oci.modelsig import read_signature, write_signed
from ..oci.reference import Reference, check_tag
from ..oci.tarread import entries, skip_padding
from ..progress import Progress
from ..stores.oci import READ as _READ
from ..stores.oci import BlobStream, OciStore
from .base import Fetched, PublishRequest, PublishResult, SignatureWritten

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..cache import Cache

log = logging.getLogger("modelship")

_MANIFEST_MAX = 16 * 1024 * 1024
_LAYER_WORKERS = 4  # layers at a time when --workers / MODELSHIP_CONCURRENCY leave it open (one stream each)
_GRACE = 0.5  # seconds for the other layer workers to notice a failure before they are left behind
_READS = 3  # reads of a layer whose bytes do not match its digest, before it counts as damaged in the registry


class OciRepository:
    """Model images by tag in one registry repository."""

    def __init__(self, store: OciStore):
        if not isinstance(store, OciStore):
            raise UsageError(
                f"{store.uri.display}: a plugin replaced the oci:// store with one that is not an OciStore"
            )
        self.store, self.display = store, store.display
        self._images: dict[str, ModelImage] = {}  # by manifest digest, for fetch after resolve

    def close(self) -> None:
        self.store.close()

    def resolve(
        self, version: str | None, pre: bool, lock: Lock | None = None, exclude: frozenset[str] = frozenset()
    ) -> Resolution:
        ref, tag = self._pick(version, pre, exclude)
        img = read_model_image(self.store.client, ref)
        self._images[img.digest] = img
        files = []
        for f in img.model.files:
            safe_relpath(f.path, f"{self.display}@{img.digest[:19]}…")
            if f.path == MANIFEST_NAME:
                raise IntegrityError(f"{ref}: its manifest lists a file named {MANIFEST_NAME}, which is modelship's")
            files.append(FileEntry(f.path, f.size, f.sha256, etag=img.digest))
        if not files:
            raise NotFoundError(f"{ref} holds no model files")
        return Resolution(self.display, tag or img.version, tuple(files), pin=img.digest)

    def _pick(self, version: str | None, pre: bool, exclude: frozenset[str]) -> tuple[Reference, str | None]:
        """The reference to read and the version it is (None: read it from the image). ``exclude``: tags "latest"
        must not be (newer ones whose signature did not verify)."""
        r = self.store.ref
        if r.digest:
            if version is not None:
                raise UsageError(f"{self.store.uri.display} names a digest; drop --version")
            return r, None
        if r.tag:
            if version is not None and version != r.tag:
                raise UsageError(f"{self.store.uri.display} names tag {r.tag}; drop --version {version} or the tag")
            return r, r.tag
        if version is not None:
            try:
                check_tag(version)
            except UsageError:
                raise UsageError(f"--version {version!r} cannot be a tag of {self.display}") from None
            if self.store.client.head_manifest(r.repository, version) is None:
                raise NotFoundError(f"version {version!r} not found at {self.display}; available: {self._available()}")
            return r.with_tag(version), version
        tags = self.store.client.list_tags(r.repository)
        versions = []
        for t in tags:
            with contextlib.suppress(InvalidVersion):
                versions.append((Version(t), t))
        if not versions:
            raise NotFoundError(
                f"no model versions at {self.display}: none of its {len(tags)} tag(s) is a PEP 440 version; "
                "publish one with 'modelship publish DIR oci://… --version 1.0.0'"
            )
        versions = [v for v in versions if v[1] not in exclude]
        if not versions:
            raise NotFoundError(f"no other model version at {self.display}")
        final = [v for v in versions if not (v[0].is_prerelease or v[0].is_devrelease)]
        pool = versions if pre or not final else final
        _, tag = max(pool)
        return r.with_tag(tag), tag

    def _available(self) -> str:
        try:
            tags = sorted(t for t in self.store.client.list_tags(self.store.ref.repository) if _is_version(t))
        except ModelshipError:
            return "(the tag list is not readable)"
        return ", ".join(tags[:20]) or "none"

    def fetch(self, res: Resolution, cache: Cache, *, workers: int | None, progress: bool | None) -> Fetched:
        if not res.pin:
            raise ModelshipError(f"{res.uri}: a resolution of an oci:// store carries its manifest digest")
        shas = {f.path: f.sha256 for f in res.files if f.sha256 and cache.get(f.sha256, f.size)}
        wanted = {f.path for f in res.files} - shas.keys()
        if not wanted:
            return Fetched(shas, 0)
        img = self._images.get(res.pin) or read_model_image(self.store.client, self.store.ref.with_digest(res.pin))
        listed = {f.path: f for f in res.files}
        # a single-file layer whose file is cached already is not downloaded again
        layers = [d for d in img.layers if (d.get("annotations") or {}).get(FILEPATH) not in listed.keys() - wanted]
        total = sum(int(d["size"]) for d in layers)
        cancel = threading.Event()
        found: dict[str, str] = {}
        lock = threading.Lock()
        where = f"{self.display}@{img.digest[:19]}…"
        log.info("downloading %d layer(s) (%d bytes) of %s", len(layers), total, where)
        with Progress(total, f"fetch {res.version or self.display}", show=progress) as bar:
            jobs = [
                _LayerJob(self.store, img, desc, listed, wanted, cache, bar.update, cancel, found, lock, where)
                for desc in layers
            ]
            # a failure or Ctrl-C stops the other layers at their next read (modelship._workers)
            for_each(lambda job: job.run(), jobs, workers or _LAYER_WORKERS, cancel, name="modelship-oci", grace=_GRACE)
        missing = sorted(wanted - found.keys())
        if missing:
            raise IntegrityError(
                f"{where}: {missing[0]} is in its manifest but in none of its model layers ({len(missing)} missing); "
                "re-publish the model image"
            )
        return Fetched({**shas, **{p: found[p] for p in wanted}}, sum(j.fetched for j in jobs))

    def _image(self, res: Resolution) -> ModelImage:
        if not res.pin:
            raise ModelshipError(f"{res.uri}: a resolution of an oci:// store carries its manifest digest")
        if res.pin not in self._images:
            self._images[res.pin] = read_model_image(self.store.client, self.store.ref.with_digest(res.pin))
        return self._images[res.pin]

    def signature(self, res: Resolution) -> bytes | None:
        """The ``model.sig`` layer of the model image (``oci.modelsig``)."""
        return read_signature(self.store.client, self._image(res))

    def write_signature(self, res: Resolution, bundle: bytes) -> SignatureWritten:
        """The model image written again with ``bundle`` as its signature layer; the version tag moves to it."""
        if not res.version or self.store.ref.digest:
            raise UsageError(f"{self.display}: give the repository and --version to sign a model image, not a digest")
        img = self._image(res)
        signed = write_signed(self.store.client, img, res.version, bundle, res.version + MODELPACK_SUFFIX)
        name = self.store.ref.name
        return SignatureWritten(
            f"oci://{name}:{res.version}", image_digest=signed.digest, ref=f"{name}@{signed.digest}"
        )

    def publish(self, req: PublishRequest) -> PublishResult:
        login = self.store.credential
        kw: dict[str, Any] = {"image_model_dir": req.image_model_dir} if req.image_model_dir is not None else {}
        if req.sign_key is not None:
            kw.update(sign_key=req.sign_key, sign_cert=req.sign_cert, cert_chain=req.cert_chain)
        if login is not None and login.username is not None:
            kw.update(username=login.username, password=login.password)
        r = publish_image(
            req.model_dir,
            self.store.uri.raw,
            version=req.version,
            force=req.force,
            progress=req.progress,
            quiet=True,
            **kw,
        )
        details = {
            "image_model_dir": r.image_model_dir,
            "layers": [{"digest": d, "size": s, "title": t} for d, s, t in r.layers],
            "modelpack": {  # the ModelPack manifest over the same layers, for strict ModelPack readers
                "image": r.modelpack_image,
                "ref": r.modelpack_ref,
                "image_digest": r.modelpack_digest,
            },
        }
        if r.signature_layer is not None:
            details["signature_layer"] = r.signature_layer
        if r.attestations:
            details["attestations"] = [e.to_dict() for e in r.attestations]
        return PublishResult(
            r.manifest,
            f"oci://{r.image}",
            r.uploaded_bytes,
            r.unchanged,
            image=r.image,
            image_digest=r.image_digest,
            ref=r.ref,
            details=tuple(details.items()),
        )


def _is_version(tag: str) -> bool:
    try:
        Version(tag)
    except InvalidVersion:
        return False
    return True


# ---- one layer ----------------------------------------------------------------------------------------------


class _LayerJob:
    """Stream one model layer: its tar entries checked, its files into cache temps, committed once verified."""

    def __init__(
        self,
        store: OciStore,
        img: ModelImage,
        desc: dict[str, Any],
        listed: dict[str, FileEntry],
        wanted: set[str],
        cache: Cache,
        on_read: Callable[[int], None],
        cancel: threading.Event,
        found: dict[str, str],
        lock: threading.Lock,
        where: str,
    ):
        self.store, self.img, self.desc = store, img, desc
        self.listed, self.wanted, self.cache = listed, wanted, cache
        self.on_read, self.cancel, self.found, self.lock = on_read, cancel, found, lock
        self.digest = str(desc["digest"])
        self.where = f"{where}: layer {self.digest[:19]}…"
        self.base = img.image_model_dir.strip("/")
        self.stream: BlobStream | None = None
        self.fetched = 0  # bytes downloaded, over every read of the layer

    def run(self) -> None:
        """Read the layer; one damaged on the way (its bytes do not hash to its digest) is read again."""
        keep = self.cache.root / "partial" / self.digest.removeprefix("sha256:")
        reads = min(_READS, settings.current().max_attempts)
        for read in range(1, reads + 1):
            self.stream = self.store.blob(self.digest, int(self.desc["size"]), self.on_read, self.cancel, keep)
            try:
                self._read_once()
                self.stream.discard()
                return
            except IntegrityError as e:
                if self.stream.intact():  # the registry sent what the digest says: the layer itself is bad
                    self.stream.discard()
                    raise
                self.stream.discard()
                if read == reads:
                    raise
                self.on_read(-self.stream.pos)
                log.warning("%s was damaged on the way (%s); reading it again (%d/%d)", self.where, e, read + 1, reads)
            finally:
                self.fetched += self.stream.fetched
                self.stream.close()

    def _read_once(self) -> None:
        assert self.stream is not None
        staged: list[tuple[Path, str, str]] = []  # (temp file, path, sha256)
        try:
            for entry in entries(self.stream, self.where):
                if entry.kind == "dir":
                    self._check_dir(entry.name)
                    continue
                rel = self._rel(entry.name)
                if rel == MANIFEST_NAME:
                    self._check_manifest(entry.size)
                    continue
                expected = self.listed.get(rel)
                if expected is None:
                    raise IntegrityError(f"{self.where} holds {rel!r}, which the image's manifest does not list")
                if entry.size != expected.size:
                    raise IntegrityError(
                        f"{self.where}: {rel!r} is {entry.size} bytes in the tar, the manifest says {expected.size}"
                    )
                with self.lock:
                    if rel in self.found or any(p == rel for _, p, _ in staged):
                        raise IntegrityError(f"{self.where}: {rel!r} is in more than one model layer")
                if rel in self.wanted:
                    tmp = self.cache.new_temp()
                    staged.append((tmp, rel, ""))
                    sha = self._copy(entry.size, tmp, rel)
                    staged[-1] = (tmp, rel, sha)
                else:
                    sha = self._hash(entry.size)
                if sha != expected.sha256:
                    raise IntegrityError(
                        f"{self.where}: {rel!r} has sha256 {sha[:16]}…, the manifest says "
                        f"{(expected.sha256 or '')[:16]}…; the layers are not what the image's config says, re-publish"
                    )
                skip_padding(self.stream, entry.size)
            self.stream.finish()
            for tmp, rel, sha in staged:  # the layer's digest matched: its files may enter the cache
                self.cache.put(tmp, sha)
                with self.lock:
                    self.found[rel] = sha
            staged.clear()
        finally:
            for tmp, _, _ in staged:
                tmp.unlink(missing_ok=True)

    def _check_dir(self, name: str) -> None:
        if name == self.base or self.base.startswith(name + "/") or name.startswith(self.base + "/"):
            if name.startswith(self.base + "/"):
                safe_relpath(name[len(self.base) + 1 :], self.where)
            return
        raise IntegrityError(f"{self.where} holds folder {name!r}, outside the model dir /{self.base}")

    def _rel(self, name: str) -> str:
        if not name.startswith(self.base + "/"):
            raise IntegrityError(f"{self.where} holds file {name!r}, outside the model dir /{self.base}")
        return safe_relpath(name[len(self.base) + 1 :], self.where)

    def _check_manifest(self, size: int) -> None:
        """The image's own modelship.json must describe the same model as its config label."""
        assert self.stream is not None
        if size > _MANIFEST_MAX:
            raise IntegrityError(f"{self.where}: its {MANIFEST_NAME} is {size} bytes; that is not a model manifest")
        data = self.stream.read_exact(size)
        try:
            inside = Manifest.from_dict(json.loads(data), f"{self.where} {MANIFEST_NAME}")
        except (ValueError, UsageError):
            raise IntegrityError(f"{self.where}: its {MANIFEST_NAME} is not a valid model manifest") from None
        if inside.digest != self.img.model.digest:
            raise IntegrityError(
                f"{self.where}: its {MANIFEST_NAME} describes model {inside.digest[:19]}…, the image's config "
                f"{self.img.model.digest[:19]}…"
            )
        skip_padding(self.stream, size)

    def _hash(self, size: int) -> str:
        assert self.stream is not None
        h, left = hashlib.sha256(), size
        while left:
            data = self.stream.read(min(_READ, left))
            if not data:
                raise IntegrityError(f"{self.where} ends inside a file")
            h.update(data)
            left -= len(data)
        return h.hexdigest()

    def _copy(self, size: int, tmp: Path, rel: str) -> str:
        assert self.stream is not None
        h, left = hashlib.sha256(), size
        try:
            with open(tmp, "wb") as out:
                while left:
                    data = self.stream.read(min(_READ, left))
                    if not data:
                        raise IntegrityError(f"{self.where} ends inside {rel!r}")
                    h.update(data)
                    out.write(data)
                    left -= len(data)
        except OSError as e:
            if full := no_space(e, f"writing {rel} to {tmp.parent}", CACHE_ADVICE):
                raise full from None
            raise
        return h.hexdigest()


__all__ = ["OciRepository"]
