"""``oci://REGISTRY/REPO[:TAG|@sha256:…]``: a registry as a model store, model images as versions.

A version is a tag that is a PEP 440 version ("latest": the highest, pre-releases only with ``pre``), or the
tag or digest the URI names. What a version holds comes from the model image's config (checked against its
digest, itself from the manifest, itself checked against the digest asked for or that the tag resolved to):
its ``io.modelship.model.manifest`` label lists every file with its size and sha256, so ``resolve`` and
``lock`` read two small documents and no layer; ``lock`` pins the manifest digest (``Lock.pin``).

``fetch`` streams the model layers (only those holding a file the cache lacks, several at a time), hashes
each blob as it arrives and compares it with its digest, and reads the files out of the tar as it goes:
each file is hashed on the way into a cache temp file and enters the cache only once both its sha256 and
its layer's digest matched. A connection that breaks resumes with a ``Range`` request from where it was.

Tar layers are untrusted input, read by the strict reader (``modelship.oci.tarread``) rather than ``tarfile``;
this module adds that names stay inside the image's model dir and that sizes match the manifest.

Credentials are push's: the docker config (``auths``, ``credHelpers``, ``credsStore``), or ACR's Entra ID
exchange (modelship.oci.auth); a ``modelship.oci.auth.Credentials`` passed as credential wins.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from .. import _retry
from .._fs import CACHE_ADVICE, no_space
from ..cache import Cache
from ..errors import IntegrityError, ModelshipError, NotFoundError, TransientError, UsageError
from ..manifest import MANIFEST_NAME, FileEntry, Manifest, Resolution
from ..modeldir import safe_relpath
from ..oci.auth import Credentials
from ..oci.modelimage import FILEPATH, ModelImage, read_model_image, repository_of
from ..oci.reference import Reference, check_tag
from ..oci.registry import RegistryClient
from ..oci.tarread import entries, skip_padding
from ..progress import Progress
from ..uri import ModelURI
from .base import ProgressFn, RemoteFile

log = logging.getLogger("modelship")

_READ = 1 << 20
_MANIFEST_MAX = 16 * 1024 * 1024
_LAYER_WORKERS = 4  # layers at a time when --workers / MODELSHIP_CONCURRENCY leave it open (one stream each)
_GRACE = 0.5  # seconds for the other layer workers to notice a failure before they are left behind


class _Stopped(Exception):
    """Another layer failed or the fetch was interrupted: this worker stops."""


# ---- the store ----------------------------------------------------------------------------------------------


class OciStore:
    """A repository of model images (``stores.base.ArchiveStore``): resolves tags, unpacks model layers."""

    def __init__(self, uri: ModelURI, credential: Any = None):
        self.uri = uri
        self.ref = repository_of(uri.raw)
        self.display = f"oci://{self.ref.name}"
        if credential is not None and not isinstance(credential, Credentials):
            raise UsageError("an oci:// store takes modelship.oci.auth.Credentials (or the docker config)")
        self._credential = credential
        self._client: RegistryClient | None = None
        self._images: dict[str, ModelImage] = {}  # by manifest digest, for fetch_files after resolve

    @property
    def client(self) -> RegistryClient:
        if self._client is None:
            self._client = RegistryClient(self.ref.registry, self._credential)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- resolve

    def resolve_version(self, version: str | None, pre: bool) -> Resolution:
        ref, tag = self._pick(version, pre)
        img = read_model_image(self.client, ref)
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

    def _pick(self, version: str | None, pre: bool) -> tuple[Reference, str | None]:
        """The reference to read and the version it is (None: read it from the image)."""
        r = self.ref
        if r.digest:
            if version is not None:
                raise UsageError(f"{self.uri.display} names a digest; drop --version")
            return r, None
        if r.tag:
            if version is not None and version != r.tag:
                raise UsageError(f"{self.uri.display} names tag {r.tag}; drop --version {version} or the tag")
            return r, r.tag
        if version is not None:
            try:
                check_tag(version)
            except UsageError:
                raise UsageError(f"--version {version!r} cannot be a tag of {self.display}") from None
            if self.client.head_manifest(r.repository, version) is None:
                raise NotFoundError(f"version {version!r} not found at {self.display}; available: {self._available()}")
            return r.with_tag(version), version
        tags = self.client.list_tags(r.repository)
        versions = []
        for t in tags:
            with contextlib.suppress(InvalidVersion):
                versions.append((Version(t), t))
        if not versions:
            raise NotFoundError(
                f"no model versions at {self.display}: none of its {len(tags)} tag(s) is a PEP 440 version; "
                "publish one with 'modelship publish DIR oci://… --version 1.0.0'"
            )
        final = [v for v in versions if not (v[0].is_prerelease or v[0].is_devrelease)]
        pool = versions if pre or not final else final
        _, tag = max(pool)
        return r.with_tag(tag), tag

    def _available(self) -> str:
        try:
            tags = sorted(t for t in self.client.list_tags(self.ref.repository) if _is_version(t))
        except ModelshipError:
            return "(the tag list is not readable)"
        return ", ".join(tags[:20]) or "none"

    # -- fetch

    def fetch_files(
        self, res: Resolution, files: list[FileEntry], cache: Cache, *, workers: int | None, progress: bool | None
    ) -> tuple[dict[str, str], int]:
        if not res.pin:
            raise ModelshipError(f"{res.uri}: a resolution of an oci:// store carries its manifest digest")
        img = self._images.get(res.pin) or read_model_image(self.client, self.ref.with_digest(res.pin))
        listed = {f.path: f for f in res.files}
        wanted = {f.path for f in files}
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
                _LayerJob(self.client, img, desc, listed, wanted, cache, bar.update, cancel, found, lock, where)
                for desc in layers
            ]
            _run(jobs, max(1, min(workers or _LAYER_WORKERS, len(jobs))), cancel)
        missing = sorted(wanted - found.keys())
        if missing:
            raise IntegrityError(
                f"{where}: {missing[0]} is in its manifest but in none of its model layers ({len(missing)} missing); "
                "re-publish the model image"
            )
        return {p: found[p] for p in wanted}, sum(j.stream.pos for j in jobs if j.stream is not None)

    # -- the rest of the Source protocol: an oci:// store is written by publish, as images

    def list(self, prefix: str) -> Iterator[RemoteFile]:
        raise UsageError(f"{self.display}: files of model images are read by resolve and fetch, not listed")

    def read(self, name: str, offset: int, length: int, etag: str | None) -> Iterator[bytes]:
        raise UsageError(f"{self.display}: files of model images are read out of their layers by fetch")

    def write(self, name: str, path: Path, *, sha256: str, md5: bytes, progress: ProgressFn | None = None) -> None:
        raise UsageError(f"{self.display}: publish a model image with 'modelship publish DIR {self.display}'")

    def write_bytes(self, name: str, data: bytes) -> None:
        self.write(name, Path(), sha256="", md5=b"")

    def delete(self, names: list[str]) -> None:
        self.write("", Path(), sha256="", md5=b"")


def _is_version(tag: str) -> bool:
    try:
        Version(tag)
    except InvalidVersion:
        return False
    return True


def _run(jobs: list[_LayerJob], workers: int, cancel: threading.Event) -> None:
    """The jobs on daemon threads, ``workers`` at a time: a failure or Ctrl-C stops the others at their next
    read, and a thread stuck in a stalled read cannot hold up the exit (as in the download engine)."""
    pending = list(jobs)
    lock, errors, done = threading.Lock(), [], threading.Event()
    left = [len(jobs)]

    def worker() -> None:
        while not cancel.is_set():
            with lock:
                if not pending:
                    return
                job = pending.pop(0)
            try:
                job.run()
            except _Stopped:
                return
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                errors.append(e)
                cancel.set()
                done.set()
                return
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()

    threads = [threading.Thread(target=worker, name=f"modelship-oci-{i}", daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    try:
        while not done.wait(0.2):
            if not any(t.is_alive() for t in threads):
                break
    except BaseException:
        cancel.set()
        _join(threads)
        raise
    if errors:
        _join(threads)
        raise errors[0]
    if left[0]:
        raise ModelshipError("layer downloads stopped before finishing; re-run")


def _join(threads: list[threading.Thread]) -> None:
    deadline = time.monotonic() + _GRACE
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


# ---- one layer ----------------------------------------------------------------------------------------------


class _BlobStream:
    """A blob, read in order from its registry: hashed as it comes, never past its size, resumed with a
    ``Range`` request after a broken connection (the project's retry policy), stopped when ``cancel`` is set."""

    def __init__(
        self,
        client: RegistryClient,
        repository: str,
        digest: str,
        size: int,
        on_read: Callable[[int], None],
        cancel: threading.Event,
    ):
        self.client, self.repository, self.digest, self.size = client, repository, digest, size
        self.on_read, self.cancel = on_read, cancel
        self.pos, self.hash, self._resp, self._failures = 0, hashlib.sha256(), None, 0

    def _open(self) -> None:
        resp = self.client.open_blob(self.repository, self.digest, self.pos)
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) != self.size - self.pos:
            resp.close()
            raise IntegrityError(
                f"registry {self.client.registry}: layer {self.digest[:19]}… of {self.repository} is "
                f"{int(length) + self.pos} bytes, its descriptor says {self.size}; the registry's copy is damaged"
            )
        self._resp = resp

    def close(self) -> None:
        if self._resp is not None:
            with contextlib.suppress(Exception):
                self._resp.close()
            self._resp = None

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; ``b""`` only at the end of the blob."""
        import urllib3.exceptions

        n = min(n, self.size - self.pos)
        if n <= 0:
            return b""
        while True:
            if self.cancel.is_set():
                self.close()
                raise _Stopped
            why: Exception | None = None
            try:
                if self._resp is None:
                    self._open()
                assert self._resp is not None
                data = self._resp.raw.read(n, decode_content=False)
                if not data:
                    why = TransientError(f"connection closed at byte {self.pos} of {self.size}")
            except TransientError as e:
                why, data = e, b""
            except (urllib3.exceptions.HTTPError, OSError) as e:
                why, data = TransientError(f"{e.__class__.__name__} at byte {self.pos} of {self.size}"), b""
            if why is None:
                self.hash.update(data)
                self.pos += len(data)
                self.on_read(len(data))
                return data
            self.close()
            self._failures += 1
            if self._failures > _retry.max_retries():
                raise TransientError(
                    f"layer {self.digest[:19]}… of {self.client.registry}/{self.repository}: gave up after "
                    f"{self._failures - 1} retries: {why}"
                ) from None
            log.info("layer %s…: %s; resuming from byte %d", self.digest[:19], why, self.pos)
            if self.cancel.wait(_retry.backoff(self._failures)):
                raise _Stopped

    def read_exact(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            data = self.read(n - got)
            if not data:
                raise IntegrityError(
                    f"layer {self.digest[:19]}… of {self.repository} ends inside a tar entry (at byte {self.pos})"
                )
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def finish(self) -> None:
        """Read what is left (tar padding), then check the size and the digest."""
        while self.read(_READ):
            pass
        extra = b""
        if self._resp is not None:
            with contextlib.suppress(Exception):
                extra = self._resp.raw.read(1, decode_content=False)
        self.close()
        if extra:
            raise IntegrityError(
                f"registry {self.client.registry}: layer {self.digest[:19]}… of {self.repository} is longer "
                f"than its descriptor's {self.size} bytes; the registry's copy is damaged"
            )
        got = "sha256:" + self.hash.hexdigest()
        if got != self.digest:
            raise IntegrityError(
                f"registry {self.client.registry}: layer {self.digest[:19]}… of {self.repository} does not match "
                f"its digest (the bytes hash to {got[:19]}…); the registry's copy is damaged, re-publish the model"
            )


class _LayerJob:
    """Stream one model layer: its tar entries checked, its files into cache temps, committed once verified."""

    def __init__(
        self,
        client: RegistryClient,
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
        self.client, self.img, self.desc = client, img, desc
        self.listed, self.wanted, self.cache = listed, wanted, cache
        self.on_read, self.cancel, self.found, self.lock = on_read, cancel, found, lock
        self.digest = str(desc["digest"])
        self.where = f"{where}: layer {self.digest[:19]}…"
        self.base = img.image_model_dir.strip("/")
        self.stream: _BlobStream | None = None

    def run(self) -> None:
        self.stream = _BlobStream(
            self.client, self.img.ref.repository, self.digest, int(self.desc["size"]), self.on_read, self.cancel
        )
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
            self.stream.close()
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


__all__ = ["OciStore"]
