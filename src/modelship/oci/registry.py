"""The distribution API (the OCI distribution spec) of one registry: blobs, manifests, tags, referrers.

What comes from maintained libraries, and what is written here and why:

- **requests** carries the HTTP (one keep-alive session, 1 MiB send blocks: ``modelship.oci.transport``);
  auth is ``modelship.oci.auth`` (docker config through docker-py, tokens, ACR's exchange).
- Written here: blob HEAD, cross-repository mount, chunked uploads that resume from the registry's ``Range``
  and, after a failed or timed-out commit, HEAD the blob before uploading again; manifests by digest-checked
  bytes; the tag list; the referrers of a digest. oras-py (``oras`` on PyPI) was the candidate library and
  lacks what this needs: its uploads read a whole file from disk into memory (ours stream a tar that exists
  nowhere), its chunked upload does not resume, it has no mount, no ``credHelpers``/``credsStore``, no ACR
  exchange, and it re-serialises manifests (the digest is then not ours to fix).

Every step is retried by the project's one policy through :meth:`Transport.call`; nothing here loops on its
own. Errors are ModelshipErrors with one line naming the registry, the repository and what to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import requests
import urllib3

from .._retry import Budget
from ..errors import IntegrityError, ModelshipError, TransientError
from .transport import CHUNK, Reauth, Transport, error_codes

log = logging.getLogger("modelship")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
# a Docker v2 layer is the same bytes as its OCI counterpart: what an OCI manifest reusing it calls it
DOCKER_TO_OCI_LAYER = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    ),
}
ALL_MANIFEST_TYPES = MANIFEST_TYPES + INDEX_TYPES

MANIFEST_MAX = 4 * 1024 * 1024  # the OCI distribution spec's recommended limit


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Limited:
    """At most ``n`` bytes of ``reader``, with a length (so the body is sent with Content-Length)."""

    def __init__(self, reader: Any, n: int):
        self._r, self._left, self.sent = reader, n, 0

    def __len__(self) -> int:
        return self._left

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        data = self._r.read(self._left if size is None or size < 0 else min(size, self._left))
        self._left -= len(data)
        self.sent += len(data)
        return data


class BlobSource(Protocol):
    """Where a blob's bytes come from: ``open(offset)`` reads from ``offset`` to the end."""

    size: int

    def open(self, offset: int) -> Any: ...


@dataclass(frozen=True)
class Fetched:
    """A manifest as the registry holds it: its bytes, their digest and media type."""

    digest: str
    media_type: str
    data: bytes

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.data)
        except ValueError:
            raise ModelshipError(f"manifest {self.digest[:19]}… is not JSON") from None
        if not isinstance(value, dict):
            raise ModelshipError(f"manifest {self.digest[:19]}… is not a JSON object")
        return value

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


class _NoRetryWait(Budget):
    """The project's budget, except that a token renewed mid-upload is retried at once (nothing failed)."""

    def retry(self, e: Exception, *, progressed: bool = False) -> float:
        wait = super().retry(e, progressed=progressed)
        return 0.0 if isinstance(e, Reauth) else wait


class RegistryClient(Transport):
    """One registry's blobs, manifests and tags, over one :class:`Transport` (session, auth, retries)."""

    def __enter__(self) -> RegistryClient:
        return self

    # -- blobs

    def blob_size(self, repository: str, digest: str, *, retry: bool = True) -> int | None:
        """The size of a blob the repository holds, or None."""

        def head() -> int | None:
            resp = self.request(
                "HEAD", f"/v2/{repository}/blobs/{digest}", scopes=[f"repository:{repository}:pull"], what="blob HEAD"
            )
            if resp.status_code == 404:
                return None
            if resp.status_code != 200:
                raise self.error(resp, f"HEAD of blob {digest[:19]}…", repository)
            return int(resp.headers.get("Content-Length") or -1)

        return self.call("blob HEAD", head) if retry else head()

    def _push_scopes(self, repository: str, *also: str) -> list[str]:
        return [f"repository:{repository}:pull,push", *also]

    def _start(self, repository: str, digest: str, mount_from: str | None) -> str | None:
        """A new upload session's URL; with ``mount_from``, None when the registry mounted the blob instead."""
        query = f"?mount={quote(digest)}&from={quote(mount_from)}" if mount_from else ""
        scopes = self._push_scopes(repository, *([f"repository:{mount_from}:pull"] if mount_from else []))
        resp = self.request(
            "POST", f"/v2/{repository}/blobs/uploads/{query}", scopes=scopes, what="blob upload start",
            headers={"Content-Length": "0"},
        )  # fmt: skip
        if resp.status_code == 201 and mount_from:
            return None
        if resp.status_code != 202 or not resp.headers.get("Location"):
            raise self.error(resp, f"upload of blob {digest[:19]}…", repository)
        return self.full(resp.headers["Location"])

    def _status(self, session: str, repository: str) -> tuple[str | None, int]:
        """(session URL, bytes the registry holds) of an upload in progress; (None, 0) when it is gone."""
        resp = self.request("GET", session, scopes=self._push_scopes(repository), what="upload status")
        if resp.status_code in (200, 204):
            got = re.fullmatch(r"(?:bytes=)?0-(\d+)", resp.headers.get("Range", "").strip())
            end = int(got.group(1)) + 1 if got else 0
            # distribution says "0-0" for an empty upload
            return self.full(resp.headers.get("Location") or session), 0 if end == 1 else end
        if resp.status_code in (400, 404, 416):
            return None, 0  # the registry dropped the session (distribution does after a cut PATCH)
        raise self.error(resp, "upload status", repository)

    def push_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        source: BlobSource,
        *,
        mount_from: str | None = None,
        check_first: bool = True,
    ) -> int:
        """Make the repository hold the blob; returns the bytes sent (0 when it was there or got mounted).

        Chunked (POST, PATCH with Content-Range, PUT ?digest=), one PUT for blobs up to ``chunk_size``. After a
        failure the blob is HEADed first (a commit that timed out may have gone through), then the upload
        resumes where the registry's status says, or starts again when the registry dropped the session.
        """
        if check_first and self.blob_size(repository, digest) is not None:
            return 0
        session = self.call("blob upload start", lambda: self._start(repository, digest, mount_from))
        if mount_from and session is None:
            return 0
        upload = _Upload(self, repository, digest, size, source, session)
        short = f"{digest[:19]}…"

        def give_up(_what: str, retries: int, e: Exception) -> Exception:
            return TransientError(
                f"upload of blob {short} to {self.registry}/{repository} failed {retries + 1} times, last: {e}"
            )

        def on_retry(_what: str, _attempt: int, _wait: float, e: Exception) -> None:
            log.info("upload of %s to %s failed (%s); checking what the registry has", short, self.registry, e)

        budget = _NoRetryWait(f"upload of blob {short}", give_up=give_up)
        upload.budget = budget
        return self.call(f"upload of blob {short}", upload.attempt, budget=budget, on_retry=on_retry)

    def open_blob(self, repository: str, digest: str, offset: int = 0) -> requests.Response:
        """A streamed GET of a blob (from ``offset``)."""

        def get() -> requests.Response:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            resp = self.request(
                "GET", f"/v2/{repository}/blobs/{digest}", scopes=[f"repository:{repository}:pull"],
                what="blob GET", headers=headers, stream=True,
            )  # fmt: skip
            if resp.status_code not in (200, 206) or (offset and resp.status_code != 206):
                err = self.error(resp, f"blob {digest[:19]}…", repository)
                resp.close()
                raise err
            return resp

        return self.call("blob GET", get)

    def get_blob(self, repository: str, digest: str, limit: int = 64 * 1024 * 1024) -> bytes:
        """A small blob (a config), checked against its digest. A body cut or damaged on the way is read again
        (within the retry policy); bytes that still do not match are an IntegrityError."""
        damaged, name = [0], f"blob {digest[:19]}… of {self.registry}/{repository}"

        def get() -> bytes:
            resp = self.request(
                "GET", f"/v2/{repository}/blobs/{digest}", scopes=[f"repository:{repository}:pull"],
                what="blob GET", stream=True,
            )  # fmt: skip
            with resp:
                if resp.status_code != 200:
                    raise self.error(resp, f"blob {digest[:19]}…", repository)
                try:
                    data = resp.raw.read(limit + 1, decode_content=True)
                except (OSError, urllib3.exceptions.HTTPError) as e:
                    raise TransientError(f"{name}: the read was cut") from e
            if len(data) > limit:
                raise ModelshipError(f"{name} is larger than {limit} bytes")
            if sha256_digest(data) != digest:
                damaged[0] += 1
                where = f"registry {self.registry}: blob {digest} of {repository}"
                if damaged[0] > 1:
                    raise IntegrityError(f"{where} does not match its digest, read twice")
                raise TransientError(f"{where} arrived damaged; reading it again")
            return data

        return self.call("blob GET", get)

    def blob_json(self, repository: str, digest: str) -> dict[str, Any]:
        try:
            value = json.loads(self.get_blob(repository, digest))
        except ValueError:
            raise ModelshipError(f"blob {digest[:19]}… of {self.registry}/{repository} is not JSON") from None
        return value if isinstance(value, dict) else {}

    # -- manifests

    def get_manifest(self, repository: str, reference: str, accept: tuple[str, ...] = ALL_MANIFEST_TYPES) -> Fetched:
        """The manifest (or index) of a tag or digest; a digest is checked against the bytes."""

        def get() -> Fetched:
            resp = self.request(
                "GET", f"/v2/{repository}/manifests/{reference}", scopes=[f"repository:{repository}:pull"],
                what=f"manifest {reference}", headers={"Accept": ", ".join(accept)},
            )  # fmt: skip
            if resp.status_code != 200:
                raise self.error(resp, f"manifest {_short(reference)}", repository)
            data = resp.content
            if len(data) > MANIFEST_MAX:
                raise ModelshipError(f"manifest {reference} of {self.registry}/{repository} is over 4 MiB")
            digest = sha256_digest(data)
            if reference.startswith("sha256:") and digest != reference:
                raise IntegrityError(
                    f"registry {self.registry} returned a manifest that does not match {_short(reference)}"
                )
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            try:
                declared = json.loads(data).get("mediaType")
            except (ValueError, AttributeError):
                declared = None
            if declared in ALL_MANIFEST_TYPES:
                media_type = declared
            return Fetched(digest, media_type, data)

        return self.call("manifest GET", get)

    def head_manifest(self, repository: str, reference: str) -> str | None:
        """The digest a tag (or digest) resolves to now, or None when there is none."""

        def head() -> str | None:
            resp = self.request(
                "HEAD", f"/v2/{repository}/manifests/{reference}", scopes=[f"repository:{repository}:pull"],
                what=f"manifest {reference}", headers={"Accept": ", ".join(ALL_MANIFEST_TYPES)},
            )  # fmt: skip
            if resp.status_code == 404:
                return None
            if resp.status_code != 200:
                raise self.error(resp, f"manifest {_short(reference)}", repository)
            digest = resp.headers.get("Docker-Content-Digest")
            return digest or self.get_manifest(repository, reference).digest

        return self.call("manifest HEAD", head)

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or its digest; returns its digest, checked against what the registry says."""
        digest = sha256_digest(data)

        def put() -> str:
            resp = self.request(
                "PUT", f"/v2/{repository}/manifests/{reference}", scopes=self._push_scopes(repository),
                what=f"manifest PUT {reference}", headers={"Content-Type": media_type}, data=data,
            )  # fmt: skip
            if resp.status_code not in (200, 201, 202):
                codes, _ = error_codes(resp)
                if "DIGEST_INVALID" in codes and reference.startswith("sha256:"):
                    raise TransientError(f"registry {self.registry} received a damaged manifest")
                raise self.error(resp, f"manifest {_short(reference)}", repository)
            held = resp.headers.get("Docker-Content-Digest")
            if held and held != digest:  # damaged on the way, stored as received: send it again
                raise TransientError(f"registry {self.registry} stored {held[:19]}… for manifest {digest[:19]}…")
            return digest

        return self.call("manifest PUT", put)

    def list_tags(self, repository: str, *, limit: int = 100_000) -> list[str]:
        """Every tag of the repository (following the ``Link`` pages); [] for a repository with none."""

        def page(url: str) -> tuple[list[str], str | None]:
            resp = self.request("GET", url, scopes=[f"repository:{repository}:pull"], what="tag list")
            if resp.status_code != 200:
                raise self.error(resp, "tag list", repository)
            try:
                tags = resp.json().get("tags") or []
            except (ValueError, AttributeError):
                raise ModelshipError(
                    f"registry {self.registry} sent a tag list of {repository} that is not JSON"
                ) from None
            nxt = re.search(r"<([^>]+)>", resp.headers.get("Link", ""))
            return [str(t) for t in tags], (nxt.group(1) if nxt else None)

        out: list[str] = []
        url: str | None = f"/v2/{repository}/tags/list?n=1000"
        while url and len(out) < limit:
            tags, url = self.call("tag list", lambda u=url: page(u))
            out.extend(tags)
        return out

    def referrers(self, repository: str, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]] | None:
        """Descriptors of the manifests whose ``subject`` is ``digest`` (OCI 1.1 referrers API), filtered by
        ``artifact_type``; None when the registry has no referrers API (then the ``sha256-<hex>`` tag schema
        is where signatures and attestations are found)."""

        def get() -> list[dict[str, Any]] | None:
            query = f"?artifactType={quote(artifact_type)}" if artifact_type else ""
            resp = self.request(
                "GET", f"/v2/{repository}/referrers/{digest}{query}", scopes=[f"repository:{repository}:pull"],
                what=f"referrers of {_short(digest)}", headers={"Accept": OCI_INDEX},
            )  # fmt: skip
            if resp.status_code == 404 and resp.headers.get("Content-Type", "").split(";")[0].strip() != OCI_INDEX:
                return None
            if resp.status_code != 200:
                raise self.error(resp, f"referrers of {_short(digest)}", repository)
            try:
                entries = resp.json().get("manifests") or []
            except (ValueError, AttributeError):
                raise ModelshipError(f"registry {self.registry} sent referrers that are not JSON") from None
            found = [e for e in entries if isinstance(e, dict)]
            if artifact_type and "artifactType" not in resp.headers.get("OCI-Filters-Applied", ""):
                found = [e for e in found if e.get("artifactType") == artifact_type]  # the registry did not filter
            return found

        return self.call("referrers", get)


class _Upload:
    """One blob upload's state across the attempts :meth:`RegistryClient.push_blob` makes (through ``call``)."""

    def __init__(
        self, client: RegistryClient, repository: str, digest: str, size: int, source: BlobSource, session: str | None
    ):
        self.client, self.repository, self.digest, self.size, self.source = client, repository, digest, size, source
        self.session, self.offset, self.sent, self.tries = session, 0, 0, 0
        self.budget: Budget | None = None

    def attempt(self) -> int:
        """One try: after a failure, the registry may hold the blob already, or part of the session."""
        c, repository, digest = self.client, self.repository, self.digest
        self.tries += 1
        if self.tries > 1:
            try:
                if c.blob_size(repository, digest, retry=False) is not None:
                    return self.sent  # the commit went through before its answer was lost
            except TransientError:
                pass  # the upload status (or the next try) will find out
            if self.session is not None:
                self.session, self.offset = c._status(self.session, repository)
        if self.session is None:
            self.session, self.offset = c._start(repository, digest, None), 0
        before = self.sent
        try:
            return self._send()
        except TransientError:
            if self.sent > before and self.budget is not None:
                self.budget.progress()  # bytes moved: a failure after minutes of progress is no stall
            raise

    def _send(self) -> int:
        c, repository, digest, size = self.client, self.repository, self.digest, self.size
        scopes = c._push_scopes(repository)
        assert self.session is not None
        if self.offset == 0 and size <= c.chunk_size:
            body = _Limited(self.source.open(0), size)
            try:
                resp = c.request(
                    "PUT", _with_digest(self.session, digest), scopes=scopes, what="blob upload",
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                    data=body, replayable=False,
                )  # fmt: skip
            finally:
                self.sent += body.sent
        else:
            reader = self.source.open(self.offset)
            while self.offset < size:
                n = min(c.chunk_size, size - self.offset)
                body = _Limited(reader, n)
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{self.offset}-{self.offset + n - 1}",
                    "Content-Length": str(n),
                }
                try:
                    resp = c.request(
                        "PATCH", self.session, scopes=scopes, what="blob upload", headers=headers, data=body,
                        replayable=False,
                    )  # fmt: skip
                finally:
                    self.sent += body.sent
                if resp.status_code != 202:
                    raise c.error(resp, f"upload of blob {digest[:19]}…", repository)
                self.session = c.full(resp.headers.get("Location") or self.session)
                self.offset += n
            resp = c.request(
                "PUT", _with_digest(self.session, digest), scopes=scopes, what="blob commit",
                headers={"Content-Length": "0"},
            )  # fmt: skip
        if resp.status_code in (200, 201, 204):
            return self.sent
        codes, _ = error_codes(resp)
        if resp.status_code in (400, 416) and any(c in codes for c in ("DIGEST_INVALID", "SIZE_INVALID")):
            # bytes damaged on the way (the files were checked as they were read): start over
            self.session = None
            raise TransientError(f"registry {c.registry} received a damaged upload of {digest[:19]}…")
        if resp.status_code in (400, 404, 416) and any(c.startswith("BLOB_UPLOAD") for c in codes):
            self.session = None
            raise TransientError(f"registry {c.registry} dropped the upload session of {digest[:19]}…")
        raise c.error(resp, f"upload of blob {digest[:19]}…", repository)


def _short(reference: str) -> str:
    return reference[:19] + "…" if reference.startswith("sha256:") else reference


def _with_digest(session: str, digest: str) -> str:
    return session + ("&" if "?" in session else "?") + "digest=" + quote(digest)


__all__ = [
    "ALL_MANIFEST_TYPES",
    "CHUNK",
    "DOCKER_MANIFEST",
    "DOCKER_TO_OCI_LAYER",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "BlobSource",
    "Fetched",
    "RegistryClient",
    "sha256_digest",
]
