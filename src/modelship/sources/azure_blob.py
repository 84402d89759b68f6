"""Azure Blob Storage (az://ACCOUNT/CONTAINER/PREFIX or https://ACCOUNT.blob.core.windows.net/...)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
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
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings, LinearRetry
from urllib3.util.retry import Retry

from ..errors import AuthError, ChecksumError, IntegrityError, ModelshipError, NotFoundError, TransientError
from ..uri import ModelURI, redact
from .base import CONNECT_TIMEOUT, MAX_CONNECTIONS, SHA256_KEY, ProgressFn, RemoteFile, read_timeout

log = logging.getLogger(__name__)

# The service computes a transactional MD5 only for ranges up to 4 MiB: reads of files without chunk digests
# use ranges of this size, checked by the service (validate_content). It is also the SDK's unit of download, so
# one read holds this much in memory.
_MD5_RANGE = 4 * 1024 * 1024

# Our fetch engine retries with backoff per range; keep the SDK's own retries short so faults surface.
_CLIENT_OPTS: dict[str, Any] = {
    "max_single_get_size": _MD5_RANGE,
    "max_chunk_get_size": _MD5_RANGE,
    "max_block_size": 8 * 1024 * 1024,
    "max_single_put_size": 16 * 1024 * 1024,
}


def _client_opts() -> dict[str, Any]:
    # The storage SDK's default retry waits 18 s (±3) before its first retry: one 503 or reset would stall a
    # fetch or publish that long. Two quick SDK retries (one block of a large upload, not the whole file),
    # then modelship's own retries take over with exponential backoff (fetch.retrying, the range loop).
    retry = LinearRetry(backoff=0.5, random_jitter_range=0.4, retry_total=2)  # type: ignore[arg-type]
    return {**_CLIENT_OPTS, "retry_policy": retry, "transport": _transport()}


def _transport() -> RequestsTransport:
    """The SDK's requests transport with a connection pool as large as fetch's parallelism (requests keeps 10).

    Without it, every read beyond the tenth opens and drops a connection of its own (and urllib3 warns about
    each). Retries stay off in urllib3, as the SDK sets them: the SDK's policy and modelship's retry.
    """
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(
        pool_maxsize=MAX_CONNECTIONS, max_retries=Retry(total=False, redirect=False, raise_on_status=False)
    )
    for prefix in ("http://", "https://"):
        session.mount(prefix, adapter)
    return RequestsTransport(
        session=session,
        session_owner=True,
        connection_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout(),
        connection_data_block_size=256 * 1024,  # what the storage SDK gives its own transport (azure-core: 4 KiB)
    )


def _connection_string_parts(cs: str) -> dict[str, str]:
    return {k.strip().lower(): v for k, _, v in (p.partition("=") for p in cs.split(";") if "=" in p)}


def service_client(uri: ModelURI, credential: Any = None) -> tuple[BlobServiceClient, str]:
    """A client for the URI's account and a one-word description of the credential used (for errors).

    Order: explicit credential, AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_SAS_TOKEN or a SAS in the
    URL, AZURE_STORAGE_KEY, DefaultAzureCredential (azure-identity), anonymous.
    """
    endpoint = (
        uri.endpoint or os.environ.get("MODELSHIP_AZURE_ENDPOINT") or f"https://{uri.location}.blob.core.windows.net"
    )
    if credential is not None:
        if isinstance(credential, str) and "=" in credential and ";" in credential:
            return BlobServiceClient.from_connection_string(credential, **_client_opts()), "the given connection string"
        return BlobServiceClient(endpoint, credential=credential, **_client_opts()), "the given credential"
    cs = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if cs:
        parts = _connection_string_parts(cs)
        if "blobendpoint" not in parts and "accountname" not in parts:
            raise AuthError(
                "AZURE_STORAGE_CONNECTION_STRING has neither BlobEndpoint nor AccountName; fix the variable"
            )
        return BlobServiceClient.from_connection_string(cs, **_client_opts()), "AZURE_STORAGE_CONNECTION_STRING"
    sas = os.environ.get("AZURE_STORAGE_SAS_TOKEN") or (uri.query if "sig=" in uri.query else "")
    if sas:
        return BlobServiceClient(endpoint, credential=sas.lstrip("?"), **_client_opts()), "the SAS token"
    key = os.environ.get("AZURE_STORAGE_KEY")
    if key:
        cred = {"account_name": os.environ.get("AZURE_STORAGE_ACCOUNT", uri.location), "account_key": key}
        return BlobServiceClient(endpoint, credential=cred, **_client_opts()), "AZURE_STORAGE_KEY"
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        return BlobServiceClient(endpoint, **_client_opts()), "anonymous access (no AZURE_STORAGE_* variable set)"
    _quiet_identity_log()
    return BlobServiceClient(endpoint, credential=DefaultAzureCredential(), **_client_opts()), "DefaultAzureCredential"


def _quiet_identity_log() -> None:
    """Keep DefaultAzureCredential's failure report out of normal output (``-v`` shows it again).

    On failure it logs a multi-line WARNING listing every credential it tried, once per attempt (three with
    the storage SDK's retries); modelship reports the failure as one error line instead. A level the user
    set on the logger is left alone.
    """
    logger = logging.getLogger("azure.identity")
    if logger.level == logging.NOTSET and logging.getLogger().getEffectiveLevel() >= logging.WARNING:
        logger.setLevel(logging.ERROR)


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

    verified_read_size = _MD5_RANGE
    read_buffer = 2 * _MD5_RANGE  # an answer, and its copy while the SDK joins the pieces it read

    def __init__(self, uri: ModelURI, credential: Any = None):
        self.uri = uri
        self._service, self._cred_desc = service_client(uri, credential)
        self._container: ContainerClient = self._service.get_container_client(uri.container)
        self._where = f"container {uri.container!r} of account {uri.location!r}"

    def _error(self, e: Exception, what: str, reading: bool = False) -> ModelshipError:
        """Map an SDK error to one line that names the thing; never includes the credential.

        ``reading``: the call only reads (list, download), so an SDK crash on a garbled answer is worth a retry.
        """
        if isinstance(e, ModelshipError):
            return e
        code = getattr(e, "error_code", None) or ""
        code = getattr(code, "value", code)  # StorageErrorCode.X → its wire name
        status = getattr(e, "status_code", None)
        if isinstance(e, ResourceModifiedError) or status == 412:
            return IntegrityError(f"{what}: the blob changed while it was being read (ETag no longer matches); re-run")
        if isinstance(e, ResourceNotFoundError) or status == 404:
            if "ContainerNotFound" in str(code):
                return NotFoundError(f"{self._where} not found; check the URI {self.uri.display}")
            return NotFoundError(f"{what}: not found in {self._where}")
        token_cred = hasattr(self._service.credential, "get_token")
        if isinstance(e, ClientAuthenticationError) and getattr(e, "response", None) is None and token_cred:
            # The token credential itself failed (no request reached the service): say so, not "denied".
            return AuthError(
                f"{what}: {self._cred_desc} could not get a token for account {self.uri.location!r}; "
                "give this machine a managed identity, sign in with 'az login', or set "
                "AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_KEY "
                "(run with -v to see why each credential failed)"
            )
        if isinstance(e, ClientAuthenticationError) or status in (401, 403):
            if token_cred:
                # The service's reason for refusing a token (expired, wrong audience) never echoes the token.
                detail = (getattr(e, "additional_info", None) or {}).get("authenticationerrordetail", "")
                reason = f"{code or status}: {redact(str(detail))[:200]}" if detail else f"{code or status}"
                return AuthError(
                    f"{what}: access to {self._where} denied using {self._cred_desc} ({reason}); check that "
                    "the identity's token is for https://storage.azure.com and not expired, and that the identity "
                    "has a Storage Blob Data role on the account"
                )
            return AuthError(
                f"{what}: access to {self._where} denied using {self._cred_desc} ({code or status}); "
                "check the credential and its permissions"
            )
        if isinstance(e, (ServiceRequestError, ServiceResponseError)) or (status and status >= 500) or status == 408:
            return TransientError(
                f"{what}: {e.__class__.__name__} talking to the blob service: {redact(str(e).splitlines()[0])}"
            )
        if isinstance(e, DecodeError) or (isinstance(e, HttpResponseError) and status is None):
            # No usable answer: the connection broke mid-body (IncompleteReadError, or the SDK's own download
            # retries giving up and wrapping it without a status) or the body did not parse. Worth a retry.
            cause = getattr(e, "error", None) or e
            how = "connection reset" if _was_reset(e) else cause.__class__.__name__
            return TransientError(f"{what}: the blob service's answer broke off ({how})")
        if isinstance(e, AzureError) and "md5 mismatch" in str(getattr(e, "message", e)).lower():
            # validate_content: the range's transactional MD5 (computed by the service) does not match what
            # arrived: damaged on the way, read it again.
            return ChecksumError(f"{what}: the bytes failed the service's transactional MD5 (damaged in transit)")
        if code == "Md5Mismatch" or (status == 400 and "contentmd5" in str(getattr(e, "message", "")).lower()):
            # The service checked Content-MD5 (Azurite says InvalidOperation): the upload was damaged on the way.
            return TransientError(f"{what}: the blob service got other bytes than were sent (Content-MD5 mismatch)")
        if isinstance(e, HttpResponseError):
            return ModelshipError(f"{what}: blob service answered {status} {code}")
        if isinstance(e, DeserializationError) or (reading and isinstance(e, (AttributeError, TypeError, ValueError))):
            # A truncated or garbled answer that the SDK could not make sense of (it may even crash on it, e.g.
            # AttributeError in list paging on an empty 200): the exchange failed, not the request.
            return TransientError(f"{what}: the blob service's answer was garbled ({e.__class__.__name__})")
        if isinstance(e, (ConnectionError, TimeoutError, OSError)):
            return TransientError(f"{what}: {e.__class__.__name__}: {redact(str(e))}")
        return ModelshipError(f"{what}: {e.__class__.__name__}: {redact(str(e))}")

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
            raise self._error(e, f"listing {self.uri.display}", reading=True) from None

    def read(self, name: str, offset: int, length: int, etag: str | None, *, validate: bool = False) -> Iterator[bytes]:
        """``validate``: the service sends an MD5 of each range of up to 4 MiB and the SDK checks it."""
        kwargs: dict[str, Any] = {"max_concurrency": 1}
        if validate:
            kwargs["validate_content"] = True
        if etag:
            kwargs.update(etag=etag, match_condition=MatchConditions.IfNotModified)
        # One download per 4 MiB GET, each dropped before the next: the SDK reads a whole answer into memory
        # (twice, while it joins the pieces), and a downloader of several GETs keeps its first one to the end.
        # So a read holds at most one answer (read_buffer), whatever its length.
        end = offset + length
        try:
            for pos in range(offset, end, _MD5_RANGE):
                downloader = self._container.download_blob(
                    name, offset=pos, length=min(_MD5_RANGE, end - pos), **kwargs
                )
                parts = list(downloader.chunks())  # one part: the range is one GET
                del downloader
                while parts:
                    yield parts.pop(0)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"reading {name}", reading=True) from None

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

    def delete(self, names: list[str]) -> None:
        for name in names:
            try:
                self._container.delete_blob(name)
            except ResourceNotFoundError:
                pass
            except Exception as e:  # noqa: BLE001
                raise self._error(e, f"deleting {name}") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._service.close()
