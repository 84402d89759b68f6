"""``oci://REGISTRY/REPO[:TAG|@sha256:…]``: the bytes of a registry repository, for ``repos.oci``.

``OciStore`` holds the connection (credentials as push's: ``--username``/``--password-stdin``, a
``modelship.oci.auth.Credentials``, else the docker config or ACR's Entra ID exchange) and reads blobs:
a ``BlobStream`` reads one blob in order, hashes it as it comes, never reads past its size, and resumes with a
``Range`` request after a broken connection (the retries are ``modelship._retry``'s). Given a file to keep
the bytes in, it appends them there as they arrive, and a later stream of the same blob (after a kill) reads
that file first and asks the registry only for the rest; the digest still covers every byte.

What a version is (tags, model images, layers) is ``repos.oci``'s.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._fs import NO_SPACE
from .._retry import Budget
from .._workers import Cancelled
from ..errors import IntegrityError, TransientError, UsageError
from ..oci.auth import Credentials
from ..oci.modelimage import repository_of
from ..oci.registry import RegistryClient
from ..uri import ModelURI
from .base import Login

log = logging.getLogger("modelship")

READ = 1 << 20


class OciStore:
    """A repository of a registry: its client (opened on first use) and its blobs."""

    takes_login = True  # --username/--password-stdin (stores.base.Login)

    def __init__(self, uri: ModelURI, credential: Any = None):
        self.uri = uri
        self.ref = repository_of(uri.raw)
        self.display = f"oci://{self.ref.name}"
        if isinstance(credential, Login):
            credential = Credentials(credential.username, credential.password)
        if credential is not None and not isinstance(credential, Credentials):
            raise UsageError("an oci:// store takes modelship.oci.auth.Credentials (or the docker config)")
        self.credential: Credentials | None = credential
        self._client: RegistryClient | None = None

    @property
    def client(self) -> RegistryClient:
        if self._client is None:
            self._client = RegistryClient(self.ref.registry, self.credential)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def blob(
        self,
        digest: str,
        size: int,
        on_read: Callable[[int], None],
        cancel: threading.Event,
        keep: Path | None = None,
    ) -> BlobStream:
        """A stream of blob ``digest`` of this repository (``keep``: where its bytes are kept for a resume)."""
        return BlobStream(self.client, self.ref.repository, digest, size, on_read, cancel, keep)


class BlobStream:
    """A blob, read in order from its registry (see the module doc); ``fetched`` counts the bytes downloaded."""

    def __init__(
        self,
        client: RegistryClient,
        repository: str,
        digest: str,
        size: int,
        on_read: Callable[[int], None],
        cancel: threading.Event,
        keep: Path | None = None,
    ):
        self.client, self.repository, self.digest, self.size = client, repository, digest, size
        self.on_read, self.cancel = on_read, cancel
        self.pos, self.fetched, self.hash, self._resp = 0, 0, hashlib.sha256(), None
        self.what = f"layer {digest[:19]}… of {client.registry}/{repository}"
        self._budget = Budget(f"reading {self.what}")
        self._keep, self._fd, self._kept = keep, -1, 0
        if keep is not None:
            self._open_keep(keep)

    def _open_keep(self, keep: Path) -> None:
        """The file the bytes are kept in, locked (another process reading the same blob keeps none)."""
        try:
            keep.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(keep, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            self._keep = None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            kept = os.fstat(fd).st_size
            if kept > self.size:  # not this blob's bytes
                os.ftruncate(fd, 0)
                kept = 0
        except OSError:
            os.close(fd)
            self._keep = None
            return
        self._fd, self._kept = fd, kept
        if kept:
            log.info("%s: %d of %d bytes are here from an earlier fetch; resuming", self.what, kept, self.size)

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
        """Close the connection and the kept file (whose bytes stay for a resume)."""
        if self._resp is not None:
            with contextlib.suppress(Exception):
                self._resp.close()
            self._resp = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        """Close, and forget the kept bytes (the blob is in the cache now, or they were damaged)."""
        self.close()
        if self._keep is not None:
            self._keep.unlink(missing_ok=True)

    def _local(self, n: int) -> bytes:
        data = os.pread(self._fd, min(n, self._kept - self.pos), self.pos)
        if not data:  # the file shrank under us: read the rest from the registry
            self._kept = self.pos
        return data

    def _remote(self, n: int) -> bytes:
        import urllib3.exceptions

        try:
            if self._resp is None:
                self._open()
            assert self._resp is not None
            raw = self._resp.raw
            # read1 (urllib3 2) hands over what has arrived, so that the kept file follows the download closely
            read = raw.read1 if hasattr(raw, "read1") else raw.read
            data: bytes = read(n, decode_content=False)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise TransientError(
                f"{self.what}: {e.__class__.__name__} at byte {self.pos} of {self.size}", reason="connection broken"
            ) from None
        if not data:
            raise TransientError(
                f"{self.what}: connection closed at byte {self.pos} of {self.size}", reason="connection closed early"
            )
        if self._fd >= 0:
            self._append(data)
        self.fetched += len(data)
        return data

    def _append(self, data: bytes) -> None:
        try:
            os.pwrite(self._fd, data, self.pos)
            self._kept = self.pos + len(data)
        except OSError as e:  # keeping bytes for a resume is a help, never a reason to fail the fetch
            if e.errno not in (*NO_SPACE, errno.EIO):
                raise
            log.info("%s: not keeping its bytes for a resume (%s)", self.what, e.strerror)
            os.close(self._fd)
            self._fd = -1
            if self._keep is not None:
                self._keep.unlink(missing_ok=True)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; ``b""`` only at the end of the blob."""
        n = min(n, self.size - self.pos)
        if n <= 0:
            return b""
        while True:
            if self.cancel.is_set():
                self.close()
                raise Cancelled
            try:
                data = self._local(n) if self._fd >= 0 and self.pos < self._kept else b""
                data = data or self._remote(n)
            except TransientError as e:
                if self._resp is not None:
                    with contextlib.suppress(Exception):
                        self._resp.close()
                    self._resp = None
                wait = self._budget.retry(e)  # raises the give-up error once retries or time run out
                log.info("%s; resuming from byte %d", e, self.pos)
                if self.cancel.wait(wait):
                    raise Cancelled from None
                continue
            self._budget.progress()
            self.hash.update(data)
            self.pos += len(data)
            self.on_read(len(data))
            return data

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

    def intact(self) -> bool:
        """Whether the blob's bytes hash to its digest (what is left is read first)."""
        while self.read(READ):
            pass
        return "sha256:" + self.hash.hexdigest() == self.digest

    def finish(self) -> None:
        """Read what is left (tar padding), then check the size and the digest."""
        while self.read(READ):
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


__all__ = ["READ", "BlobStream", "OciStore"]
