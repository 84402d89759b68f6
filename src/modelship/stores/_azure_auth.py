"""Azure Blob Storage clients: the credential a URI gets (explicit, connection string, SAS, account key,
DefaultAzureCredential, anonymous), checked for its account and form before the first request, and the SDK's
options (transport, pool, retries). The store itself is ``stores.azure_blob``."""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient, LinearRetry
from urllib3.util.retry import Retry

from .. import settings
from ..errors import AuthError
from ..logs import quiet_azure_identity
from ..uri import ModelURI
from .base import CONNECT_TIMEOUT, MAX_CONNECTIONS, read_timeout, sdk_retries

# The service computes a transactional MD5 only for ranges up to 4 MiB: reads of files without chunk digests
# use ranges of this size, checked by the service (validate_content). It is also the SDK's unit of download, so
# one read holds this much in memory.
MD5_RANGE = 4 * 1024 * 1024
BLOCK = 256 * 1024  # what the SDK's transport reads from a streamed answer at once (its connection_data_block_size)

# Our fetch engine retries with backoff per range; keep the SDK's own retries short so faults surface.
_CLIENT_OPTS: dict[str, Any] = {
    "max_single_get_size": MD5_RANGE,
    "max_chunk_get_size": MD5_RANGE,
    "max_block_size": 8 * 1024 * 1024,
    "max_single_put_size": 16 * 1024 * 1024,
}


def _client_opts() -> dict[str, Any]:
    # The storage SDK's default retry waits 18 s (±3) before its first retry: one 503 or reset would stall a
    # fetch or publish that long. Two quick SDK retries (one block of a large upload, not the whole file),
    # then modelship's own retries take over with exponential backoff (_retry.retrying, the range loop of _download).
    # No SDK retry after a broken or silent answer (retry_read=0): each would cost a whole read timeout more
    # per attempt, outside modelship's retry budget.
    retry = LinearRetry(backoff=0.5, random_jitter_range=0.4, retry_total=sdk_retries(), retry_read=0)  # type: ignore[arg-type]
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
        connection_data_block_size=BLOCK,  # what the storage SDK gives its own transport (azure-core: 4 KiB)
    )


def _connection_string_parts(cs: str) -> dict[str, str]:
    return {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in cs.split(";") if "=" in p)}


_AZURE_HOST = re.compile(r"([a-z0-9]{3,24})\.blob\.", re.IGNORECASE)


def endpoint_account(url: str) -> str | None:
    """The storage account an endpoint serves: ACCOUNT of ``https://ACCOUNT.blob.<cloud suffix>``, else the first
    path segment, as in an emulator's ``http://127.0.0.1:10000/devstoreaccount1``."""
    parts = urlsplit(url)
    m = _AZURE_HOST.match(parts.hostname or "")
    if m:
        return m.group(1).lower()
    return parts.path.strip("/").split("/", 1)[0].lower() or None


def endpoint_shown(url: str) -> str:
    """An endpoint as it may appear in messages: no query (a SAS), no userinfo."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path.rstrip('/')}"


def _check_key(key: str, desc: str) -> None:
    """An account key is base64: say so now, instead of an empty "denied" after the SDK fails to sign."""
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise AuthError(
            f"the account key in {desc} is not valid base64 ({len(key)} characters); copy it again from the "
            "storage account's Access keys"
        ) from None


def _check_sas(sas: str, desc: str) -> _dt.datetime | None:
    """A SAS token has at least ``sv`` and ``sig``; returns its expiry (``se``), to say "expired" when refused."""
    params = dict(parse_qsl(sas.lstrip("?"), keep_blank_values=True))
    missing = [k for k in ("sv", "sig") if not params.get(k)]
    if missing:
        raise AuthError(
            f"{desc} is not a SAS token (no {' or '.join(k + '=' for k in missing)} parameter); give the whole "
            "token as the portal or 'az storage ... generate-sas' prints it"
        )
    try:
        expiry = _dt.datetime.fromisoformat(params.get("se", "").replace("Z", "+00:00"))
    except ValueError:
        return None
    return expiry if expiry.tzinfo else expiry.replace(tzinfo=_dt.timezone.utc)


@dataclass
class _Client:
    service: BlobServiceClient
    desc: str  # the credential, in a few words, for messages
    anonymous: str = ""  # why no credential could be used: anonymous access
    sas: bool = False
    sas_expiry: _dt.datetime | None = None


def _same_account(uri: ModelURI, account: str | None, desc: str, override: str) -> None:
    """The credential must be for the account the URI names (or, with MODELSHIP_AZURE_ENDPOINT, the one that
    endpoint serves): otherwise another account's blobs would be read, and the URI recorded in locks and labels
    would name an account they never came from."""
    expected = endpoint_account(override) if override else uri.location.lower()
    if not account or not expected or account.lower() == expected:
        return
    if override:
        raise AuthError(
            f"MODELSHIP_AZURE_ENDPOINT serves account {expected!r} but {desc} is for account {account!r}; "
            "give a credential for that account, or point MODELSHIP_AZURE_ENDPOINT at the account's endpoint"
        )
    raise AuthError(
        f"{uri.display} names account {uri.location!r} but {desc} is for account {account!r}; use "
        f"az://{account}/..., give a credential for {uri.location!r}, or, to serve az://{uri.location}/ from "
        "another endpoint on purpose, set MODELSHIP_AZURE_ENDPOINT (e.g. http://127.0.0.1:10000/devstoreaccount1)"
    )


def service_client(uri: ModelURI, credential: Any = None) -> _Client:
    """A client for the URI's account and a few words on the credential used (for errors).

    Order: explicit credential, AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_SAS_TOKEN or a SAS in the
    URL, AZURE_STORAGE_KEY, DefaultAzureCredential (azure-identity; https only), anonymous. A credential for
    another account than the URI names is refused, unless MODELSHIP_AZURE_ENDPOINT routes the URI on purpose.
    """
    override = "" if uri.endpoint else settings.current().azure_endpoint
    endpoint = uri.endpoint or override or f"https://{uri.location}.blob.core.windows.net"
    opts = _client_opts()
    cs, cs_desc = os.environ.get("AZURE_STORAGE_CONNECTION_STRING"), "AZURE_STORAGE_CONNECTION_STRING"
    if credential is not None:
        if not (isinstance(credential, str) and "=" in credential and ";" in credential):
            return _Client(BlobServiceClient(endpoint, credential=credential, **opts), "the given credential")
        cs, cs_desc = credential, "the given connection string"
    if cs:
        parts = _connection_string_parts(cs)
        dev = parts.get("usedevelopmentstorage", "").lower() == "true"
        if "blobendpoint" not in parts and "accountname" not in parts and not dev:
            raise AuthError(f"{cs_desc} has neither BlobEndpoint nor AccountName; fix the variable")
        account = "devstoreaccount1" if dev else parts.get("accountname") or endpoint_account(parts["blobendpoint"])
        _same_account(uri, account, f"{cs_desc} (AccountName/BlobEndpoint)", override)
        expiry = None
        if parts.get("accountkey"):
            _check_key(parts["accountkey"], cs_desc)
        elif parts.get("sharedaccesssignature"):
            expiry = _check_sas(parts["sharedaccesssignature"], f"the SharedAccessSignature of {cs_desc}")
        client = BlobServiceClient.from_connection_string(cs, **opts)
        return _Client(client, cs_desc, sas="sharedaccesssignature" in parts, sas_expiry=expiry)
    sas_env = os.environ.get("AZURE_STORAGE_SAS_TOKEN")
    sas = sas_env or (uri.query if "sig=" in uri.query else "")
    if sas:
        desc = "AZURE_STORAGE_SAS_TOKEN" if sas_env else "the SAS token in the URL"
        expiry = _check_sas(sas, desc)
        client = BlobServiceClient(endpoint, credential=sas.lstrip("?"), **opts)
        return _Client(client, desc, sas=True, sas_expiry=expiry)
    key = os.environ.get("AZURE_STORAGE_KEY")
    if key:
        _check_key(key, "AZURE_STORAGE_KEY")
        account = os.environ.get("AZURE_STORAGE_ACCOUNT", "").strip()
        _same_account(uri, account, "AZURE_STORAGE_KEY (AZURE_STORAGE_ACCOUNT)", override)
        cred = {"account_name": account or endpoint_account(endpoint) or uri.location, "account_key": key}
        return _Client(BlobServiceClient(endpoint, credential=cred, **opts), "AZURE_STORAGE_KEY")
    if urlsplit(endpoint).scheme != "https":
        # The SDK refuses a token credential over plain http ("Token credential is only supported with HTTPS").
        return _Client(
            BlobServiceClient(endpoint, **opts), "anonymous access", anonymous="DefaultAzureCredential needs https"
        )
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        return _Client(
            BlobServiceClient(endpoint, **opts), "anonymous access", anonymous="azure-identity is not installed"
        )
    quiet_azure_identity()
    return _Client(BlobServiceClient(endpoint, credential=DefaultAzureCredential(), **opts), "DefaultAzureCredential")
