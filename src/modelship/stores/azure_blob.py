"""Azure Blob Storage (az://ACCOUNT/CONTAINER/PREFIX or https://ACCOUNT.blob.core.windows.net/...): the store, its
reads, writes and error mapping. Which credential and client a URI gets is ``stores._azure_auth``."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    DeserializationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient, ContentSettings

from .. import errors
from ..uri import ModelURI, redact
from ._azure_auth import BLOCK, MD5_RANGE, endpoint_shown, service_client
from .base import SHA256_KEY, ProgressFn, RemoteFile, timed_out

_ENV_HINT = "set AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_KEY"


def _was_reset(e: BaseException) -> bool:
    """Whether a connection reset is behind an SDK error (it wraps the socket's error a few levels deep)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen or len(seen) > 20:
            continue
        seen.add(id(x))
        if isinstance(x, ConnectionResetError) or "reset by peer" in str(x).lower():
            return True
        todo += [getattr(x, "error", None), getattr(x, "inner_exception", None), x.__cause__, x.__context__]
        todo += [a for a in getattr(x, "args", ()) if isinstance(a, BaseException)]
    return False


class AzureBlobSource:
    """A blob container, addressed by the URI's account and container."""

    verified_read_size = MD5_RANGE
    read_buffer = 2 * BLOCK  # a streamed read holds a block or two
    verified_read_buffer = 2 * MD5_RANGE  # a checked read holds its answer, and its copy while the SDK joins it

    def __init__(self, uri: ModelURI, credential: Any = None):
        self.uri = uri
        self._client = service_client(uri, credential)
        self._service, self._cred_desc = self._client.service, self._client.desc
        self._container: ContainerClient = self._service.get_container_client(uri.container)
        self._where = f"container {uri.container!r} of account {uri.location!r}"
        self._store = f"the blob service at {endpoint_shown(self._service.url)}"

    def _error(self, e: Exception, what: str, idempotent: bool = False) -> errors.ModelshipError:
        """Map an SDK error to one line that names the thing; never includes the credential.

        ``idempotent``: the call can be made again as it is (list, download, delete), so an SDK crash on a garbled
        answer is worth a retry.
        """
        if isinstance(e, errors.ModelshipError):
            return e
        code = getattr(e, "error_code", None) or ""
        code = getattr(code, "value", code)  # StorageErrorCode.X → its wire name
        status = getattr(e, "status_code", None)
        if isinstance(e, ResourceModifiedError) or status == 412:
            return errors.IntegrityError(
                f"{what}: the blob changed while it was being read (ETag no longer matches); re-run",
                kind=errors.IntegrityError.CHANGED,
            )
        if isinstance(e, ResourceNotFoundError) or status == 404:
            if "ContainerNotFound" in str(code):
                return errors.ContainerNotFoundError(
                    self._where, f"{self._where} not found; check the URI {self.uri.display}"
                )
            return errors.NotFoundError(f"{what}: not found in {self._where}")
        token_cred = hasattr(self._service.credential, "get_token")
        if isinstance(e, ClientAuthenticationError) and getattr(e, "response", None) is None and token_cred:
            # The token credential itself failed (no request reached the service): say so, not "denied".
            return errors.AuthError(
                f"{what}: {self._cred_desc} could not get a token for account {self.uri.location!r}; "
                "give this machine a managed identity, sign in with 'az login', or set "
                "AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_KEY "
                "(run with -v to see why each credential failed)"
            )
        if e.__class__.__name__ == "AzureSigningError":  # azure.storage.blob._shared: not public
            # Raised before any request: the SDK could not sign with the key it was given.
            return errors.AuthError(f"{what}: {self._cred_desc} holds no usable account key (it cannot sign requests)")
        if isinstance(e, ClientAuthenticationError) or status in (401, 403):
            detail = str((getattr(e, "additional_info", None) or {}).get("authenticationerrordetail", "") or "")
            expiry = self._client.sas_expiry
            expired = expiry is not None and expiry <= _dt.datetime.now(_dt.timezone.utc)
            # Azure says why in AuthenticationErrorDetail ("Signature not valid in the specified time frame",
            # "Signed expiry time ..."); Azurite says nothing, so the token's own se= decides there.
            if self._client.sas and (expired or re.search(r"(?i)expir|time frame", detail)):
                when = f" at {expiry.isoformat().replace('+00:00', 'Z')}" if expiry else ""
                return errors.AuthError(
                    f"{what}: the SAS token of {self._cred_desc} expired{when}; make a new one (a later 'se=' expiry)"
                )
            if self._client.anonymous:
                return errors.AuthError(
                    f"{what}: no credentials found for account {self.uri.location!r}, and anonymous access to "
                    f"{self._where} was denied; {_ENV_HINT} ({self._client.anonymous})"
                )
            if token_cred:
                # The service's reason for refusing a token (expired, wrong audience) never echoes the token.
                reason = f"{code or status}: {redact(detail)[:200]}" if detail else f"{code or status}"
                return errors.AuthError(
                    f"{what}: access to {self._where} denied using {self._cred_desc} ({reason}); check that "
                    "the identity's token is for https://storage.azure.com and not expired, and that the identity "
                    "has a Storage Blob Data role on the account"
                )
            reason = f"{code or status}: {redact(detail)[:200]}" if detail else f"{code or status}"
            return errors.AuthError(
                f"{what}: access to {self._where} denied using {self._cred_desc} ({reason}); "
                "check the credential and its permissions"
            )
        if timed_out(e):
            return errors.StallError(what, self._store)
        if isinstance(e, (ServiceRequestError, ServiceResponseError)) or (status and status >= 500) or status == 408:
            return errors.TransientError(
                f"{what}: {e.__class__.__name__} talking to the blob service: {redact(str(e).splitlines()[0])}",
                reason=f"HTTP {status}" if status else None,  # else the retry line tells the cause by its type
            )
        if isinstance(e, DecodeError) or (isinstance(e, HttpResponseError) and status is None):
            # No usable answer: the connection broke mid-body (IncompleteReadError, or the SDK's own download
            # retries giving up and wrapping it without a status) or the body did not parse. Worth a retry.
            cause = getattr(e, "error", None) or e
            how = "connection reset" if _was_reset(e) else cause.__class__.__name__
            reset = how == "connection reset"
            return errors.TransientError(
                f"{what}: the blob service's answer broke off ({how})",
                reason="connection reset" if reset else "connection closed",
            )
        if isinstance(e, AzureError) and "md5 mismatch" in str(getattr(e, "message", e)).lower():
            # validate_content: the range's transactional MD5 (computed by the service) does not match what
            # arrived: damaged on the way, read it again.
            return errors.ChecksumError(
                f"{what}: the bytes failed the service's transactional MD5 (damaged in transit)"
            )
        if code == "Md5Mismatch" or (status == 400 and "contentmd5" in str(getattr(e, "message", "")).lower()):
            # The service checked Content-MD5 (Azurite says InvalidOperation): the upload was damaged on the way.
            return errors.TransientError(
                f"{what}: the blob service got other bytes than were sent (Content-MD5 mismatch)",
                reason="damaged upload: the store's checksum failed",
            )
        if isinstance(e, HttpResponseError):
            return errors.ModelshipError(f"{what}: blob service answered {status} {code}")
        if isinstance(e, DeserializationError) or (
            idempotent and isinstance(e, (AttributeError, TypeError, ValueError))
        ):
            # A truncated or garbled answer that the SDK could not make sense of (it may even crash on it, e.g.
            # AttributeError in list paging on an empty 200): the exchange failed, not the request.
            return errors.TransientError(
                f"{what}: the blob service's answer was garbled ({e.__class__.__name__})", reason="garbled answer"
            )
        if isinstance(e, (ConnectionError, TimeoutError, OSError)):
            return errors.TransientError(f"{what}: {e.__class__.__name__}: {redact(str(e))}")
        return errors.ModelshipError(f"{what}: {e.__class__.__name__}: {redact(str(e))}")

    def list(self, prefix: str) -> Iterator[RemoteFile]:
        try:
            for b in self._container.list_blobs(name_starts_with=prefix or None, include=["metadata"]):
                md5 = b.content_settings.content_md5 if b.content_settings else None
                meta = dict(b.metadata or {})
                yield RemoteFile(
                    name=b.name,
                    size=int(b.size),
                    etag=b.etag,
                    md5=bytes(md5).hex() if md5 else None,
                    sha256=meta.get(SHA256_KEY),
                    last_modified=b.last_modified,
                    metadata=meta,
                )
        except Exception as e:  # noqa: BLE001 - every SDK failure is mapped to one line
            raise self._error(e, f"listing {self.uri.display}", idempotent=True) from None

    def read(self, name: str, offset: int, length: int, etag: str | None, *, validate: bool = False) -> Iterator[bytes]:
        """``validate``: the service sends an MD5 of each range of up to 4 MiB and the SDK checks it."""
        try:
            yield from (self._read_checked if validate else self._read_streamed)(name, offset, length, etag)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"reading {name}", idempotent=True) from None

    def _read_streamed(self, name: str, offset: int, length: int, etag: str | None) -> Iterator[bytes]:
        """One GET for the range, its body streamed as it arrives.

        Through the SDK's own pipeline (its credentials, signing, retries and redacted logging), but not its
        downloader, which reads each answer whole into memory and joins the pieces it read: streamed, a
        connection holds a block, and the client and Azurite do less than half the work per byte (measured on
        loopback: 256 MB over 12 connections in 0.5 s against 1.3 s). ``decompress=False``: the stored bytes,
        which the digests are of, even for a blob stored with a Content-Encoding.
        """
        headers = {"If-Match": etag} if etag else {}
        blob = self._container.get_blob_client(name)
        got = 0
        for block in blob._client.blob.download(  # the generated client (not public): see the docstring
            range=f"bytes={offset}-{offset + length - 1}", headers=headers, decompress=False
        ):
            got += len(block)
            yield block
        if got < length:  # the downloader would have noticed; a stream that just ends must not pass as whole
            raise errors.TransientError(f"reading {name}: connection closed after {got} of {length} bytes")

    def _read_checked(self, name: str, offset: int, length: int, etag: str | None) -> Iterator[bytes]:
        """GETs of at most 4 MiB with the service's transactional MD5, which the SDK checks."""
        kwargs: dict[str, Any] = {"max_concurrency": 1, "validate_content": True}
        if etag:
            kwargs.update(etag=etag, match_condition=MatchConditions.IfNotModified)
        # One download per 4 MiB GET, each dropped before the next: the SDK reads a whole answer into memory
        # (twice, while it joins the pieces), and a downloader of several GETs keeps its first one to the end.
        # So a read holds at most one answer (verified_read_buffer), whatever its length.
        end = offset + length
        for pos in range(offset, end, MD5_RANGE):
            downloader = self._container.download_blob(name, offset=pos, length=min(MD5_RANGE, end - pos), **kwargs)
            parts = list(downloader.chunks())  # one part: the range is one GET
            del downloader
            while parts:
                yield parts.pop(0)

    def write(self, name: str, path: Path, *, sha256: str, md5: bytes, progress: ProgressFn | None = None) -> None:
        size = path.stat().st_size
        hook = None
        if progress:
            sent = [0]

            def hook(resp: Any) -> None:
                current = resp.context.get("upload_stream_current")
                if current is not None and current > sent[0]:
                    progress(current - sent[0])
                    sent[0] = current

        try:
            with open(path, "rb") as f:
                # content_md5 goes into Put Block List as x-ms-blob-content-md5, so chunked uploads get it too.
                self._container.upload_blob(
                    name,
                    f,
                    length=size,
                    overwrite=True,
                    max_concurrency=4,
                    metadata={SHA256_KEY: sha256},
                    content_settings=ContentSettings(content_md5=bytearray(md5)),
                    # A Content-MD5 on every request (each block of a chunked upload too), checked by the service:
                    # without it a block damaged on the way is committed, and the version is broken for good.
                    validate_content=True,
                    raw_response_hook=hook,
                )
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"uploading {name}") from None

    def create_container(self) -> None:
        try:
            self._container.create_container()
        except ResourceExistsError:
            pass
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"creating {self._where}") from None

    def write_bytes(self, name: str, data: bytes) -> None:
        try:
            # Small files (markers, the manifest) are checked by the service too: a damaged manifest would
            # make the whole version unreadable.
            md5 = hashlib.md5(data).digest()  # noqa: S324 - a transport checksum
            self._container.upload_blob(
                name,
                data,
                overwrite=True,
                content_settings=ContentSettings(content_md5=bytearray(md5)),
                validate_content=True,
            )
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"uploading {name}") from None

    def create_bytes(self, name: str, data: bytes, *, replacing: str | None = None) -> bool:
        """Write a small blob only if it does not exist (If-None-Match: *), or with ``replacing``, only if it is
        still the blob of that ETag (If-Match); False when another writer got there first."""
        md5 = hashlib.md5(data).digest()  # noqa: S324 - a transport checksum
        if replacing is None:
            condition: dict[str, Any] = {"overwrite": False}
        else:
            condition = {"overwrite": True, "etag": replacing, "match_condition": MatchConditions.IfNotModified}
        try:
            self._container.upload_blob(
                name,
                data,
                content_settings=ContentSettings(content_md5=bytearray(md5)),
                validate_content=True,
                **condition,
            )
        except (ResourceExistsError, ResourceModifiedError):
            return False
        except Exception as e:  # noqa: BLE001
            if getattr(e, "status_code", None) in (409, 412):
                return False
            raise self._error(e, f"uploading {name}") from None
        return True

    def delete(self, names: list[str]) -> None:
        for name in names:
            try:
                self._container.delete_blob(name)
            except ResourceNotFoundError:
                pass
            except Exception as e:  # noqa: BLE001
                raise self._error(e, f"deleting {name}", idempotent=True) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._service.close()
