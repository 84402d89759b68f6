"""A client of the distribution API (the OCI distribution spec): auth, blobs and manifests, for one registry.

What comes from maintained libraries, and what is written here and why:

- **docker-py's ``docker.auth``** reads the docker config (``auths`` incl. ``identitytoken``, ``credHelpers``,
  ``credsStore`` through the ``docker-credential-*`` helpers), exactly as ``docker login`` left it.
- **requests** carries the HTTP (one keep-alive session, 1 MiB send blocks).
- **azure-identity**'s ``DefaultAzureCredential`` (the ``azure`` extra) supplies an Entra ID token for Azure
  Container Registry, when installed.
- Written here: the ``WWW-Authenticate`` challenge (Basic; Bearer tokens from the realm, per scope, renewed
  before they expire), ACR's token exchange (``/oauth2/exchange`` → ACR refresh token → ``/oauth2/token``),
  blob HEAD, cross-repository mount, chunked uploads that resume from the registry's ``Range`` and, after a
  failed or timed-out commit, HEAD the blob before uploading again; manifests by digest-checked bytes.
  oras-py (``oras`` on PyPI) was the candidate library and lacks what this needs: its uploads read a whole
  file from disk into memory (ours stream a tar that exists nowhere), its chunked upload does not resume, it
  has no mount, no ``credHelpers``/``credsStore``, no ACR exchange, and it re-serialises manifests (the
  digest is then not ours to fix).

Retries use the project's one policy (``modelship._retry``). Errors are
ModelshipErrors with one line naming the registry, the repository and what to do; credentials and tokens
never appear in a message, a log line or a repr. One job, speaking one registry's API with its auth, which is
why the module is longer than ~400 lines: auth, blobs and manifests share one session and its tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from .. import settings
from .._retry import backoff, max_retries, retrying
from ..errors import AuthError, IntegrityError, ModelshipError, NotFoundError, TransientError, UsageError
from ..logs import quiet_azure_identity
from ..uri import redact
from .reference import (
    DOCKER_HUB,
    DOCKER_HUB_CONFIG_KEY,
    Reference,
    api_host,
    base_url,
    is_local,
    names_registry,
    parse_reference,
)

log = logging.getLogger("modelship")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ALL_MANIFEST_TYPES = MANIFEST_TYPES + INDEX_TYPES

CHUNK = 64 * 1024 * 1024  # one PATCH; blobs up to this size go in one PUT
MANIFEST_MAX = 4 * 1024 * 1024  # the OCI distribution spec's recommended limit
ACR_SUFFIXES = (".azurecr.io", ".azurecr.cn", ".azurecr.us")
ACR_AAD_SCOPE = "https://management.azure.com/.default"  # what `az acr login` exchanges
_DEFAULT_TOKEN_LIFE = 60  # seconds, when the token service does not say (the distribution token spec)
_SEND_BLOCK = 1024 * 1024


def default_timeout() -> float:
    """Seconds without a byte before a request counts as stalled (``MODELSHIP_REGISTRY_TIMEOUT``, default 120)."""
    return settings.current().registry_timeout


# ---- credentials ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    identity_token: str | None = None  # OAuth2 refresh token (ACR: `az acr login`)

    def __repr__(self) -> str:  # never show secrets, even in a traceback
        return f"Credentials(username={self.username!r}, password=***, identity_token=***)"


def docker_credentials(registry: str) -> Credentials | None:
    """Credentials `docker login` stored for ``registry`` (auths, credHelpers, credsStore), or None."""
    import docker.auth
    import docker.errors

    server = DOCKER_HUB_CONFIG_KEY if registry == DOCKER_HUB else registry
    try:
        with warnings.catch_warnings():  # docker-py warns when a configured helper is not installed
            warnings.simplefilter("ignore")
            config = docker.auth.load_config()
            entry = config.resolve_authconfig(server)
    except docker.errors.InvalidConfigFile as e:
        raise UsageError(f"docker config: {e}; fix it or run 'docker login {registry}' again") from None
    except docker.errors.DockerException as e:  # a credential helper that is missing or failed
        log.info("docker credential helper for %s failed (%s); going on without credentials", registry, e)
        return None
    if not entry:
        return None
    if entry.get("IdentityToken"):
        return Credentials(identity_token=entry["IdentityToken"])
    user = entry.get("username") or entry.get("Username")
    password = entry.get("password") or entry.get("Password")
    return Credentials(user, password) if user is not None and password is not None else None


def acr_exchange_allowed(registry: str) -> bool:
    """Whether an Entra ID token may be sent to this registry's token service: Azure Container Registry hosts,
    and those listed in MODELSHIP_ACR_REGISTRIES (comma-separated host[:port]: an ACR behind another name)."""
    host = api_host(registry).lower()
    return host in settings.current().acr_registries or host.split(":", 1)[0].endswith(ACR_SUFFIXES)


# ---- helpers ------------------------------------------------------------------------------------------


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', params)}


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _errors(resp: requests.Response) -> tuple[list[str], str]:
    """(error codes, first message) of a distribution error body."""
    try:
        body = resp.json()
        items = body.get("errors") or []
        codes = [str(e.get("code", "")) for e in items if isinstance(e, dict)]
        messages = [str(e.get("message", "")) for e in items if isinstance(e, dict) and e.get("message")]
        return codes, (messages[0] if messages else "")
    except (ValueError, AttributeError):
        return [], resp.text[:200] if resp.text else ""


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


class _BlockAdapter(HTTPAdapter):
    """Sends request bodies in 1 MiB blocks (http.client's 8 KiB default costs CPU at GB sizes)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["blocksize"] = _SEND_BLOCK
        super().init_poolmanager(*args, **kwargs)


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


class _Reauth(TransientError):
    """A token ran out in the middle of a request whose body cannot be sent again: retry the step."""


# ---- the client ---------------------------------------------------------------------------------------


class RegistryClient:
    """One registry: a keep-alive session, credentials resolved on first need, one token per set of scopes."""

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None = None,
        *,
        timeout: float | None = None,
        chunk_size: int = CHUNK,
        azure_credential: Any = None,
    ):
        self.registry = registry
        self.url = base_url(registry)
        self.timeout = default_timeout() if timeout is None else timeout
        self.chunk_size = chunk_size
        self._creds = credentials
        self._creds_resolved = credentials is not None
        self._azure_credential = azure_credential
        self.session = requests.Session()
        self.session.mount("http://", _BlockAdapter())
        self.session.mount("https://", _BlockAdapter())
        self._basic: str | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}  # scopes -> (Authorization, expiry)
        self._acr_refresh: str | None = None
        self._lock = threading.Lock()  # uploads may run in threads: one token fetch at a time
        self.cancel = threading.Event()  # set to stop waiting between upload retries

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- auth

    def credentials(self) -> Credentials | None:
        if not self._creds_resolved:
            self._creds = docker_credentials(self.registry)
            self._creds_resolved = True
        return self._creds

    def _basic_header(self) -> str | None:
        c = self.credentials()
        if c and c.username is not None and c.password is not None:
            return "Basic " + base64.b64encode(f"{c.username}:{c.password}".encode()).decode()
        return None

    def _login_hint(self) -> str:
        hint = f"run 'docker login {self.registry}'"
        if acr_exchange_allowed(self.registry):
            hint += " or 'az login' with modelship's azure extra installed (pip install 'modelship[azure]')"
        return hint

    def _authorization(self, scopes: tuple[str, ...]) -> str | None:
        token = self._tokens.get(scopes)
        if token and token[1] > time.monotonic():
            return token[0]
        return self._basic

    def _authenticate(self, resp: requests.Response, scopes: tuple[str, ...], used: str | None) -> bool:
        """Answer a 401's challenge; False when there is nothing (more) to answer it with."""
        scheme, params = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            basic = self._basic_header()
            if basic is None or basic == self._basic:
                return False
            self._basic = basic
            return True
        if scheme != "bearer":
            return False
        wanted = tuple(sorted({*scopes, *params.get("scope", "").split()} - {""}))
        with self._lock:
            current = self._authorization(scopes)
            if current is None or current == used:  # else another thread renewed it meanwhile
                self._tokens[scopes] = self._bearer(params, wanted)
        return True

    def _token_call(self, method: str, url: str, **kw: Any) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=(10, self.timeout), **kw)
        except requests.RequestException as e:
            what = e.__class__.__name__
            raise TransientError(f"token service of registry {self.registry} not reachable ({what})") from None

    def _bearer(self, params: dict[str, str], scopes: tuple[str, ...]) -> tuple[str, float]:
        realm = params.get("realm")
        if not realm or urlsplit(realm).scheme not in ("http", "https"):
            raise AuthError(f"registry {self.registry} sent a Bearer challenge without a usable realm")
        if urlsplit(realm).scheme == "http" and not is_local(urlsplit(realm).netloc):
            raise AuthError(f"registry {self.registry} wants credentials sent to a plain-http token service; refused")
        service = params.get("service", "")
        creds = self.credentials()
        if creds is None and acr_exchange_allowed(self.registry):
            refresh = self._acr_refresh_token(realm, service)
            creds = Credentials(identity_token=refresh) if refresh else None
        if creds and creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "service": service,
                "scope": " ".join(scopes),
                "refresh_token": creds.identity_token,
                "client_id": "modelship",
            }
            resp = self._token_call("POST", realm, data=form)
        else:
            headers = {"Authorization": b} if (b := self._basic_header()) else {}
            query = [("service", service), *(("scope", s) for s in scopes)]
            resp = self._token_call("GET", realm, params=query, headers=headers)
        if resp.status_code in (401, 403):
            what = "refused the credentials" if creds else "wants credentials"
            raise AuthError(f"registry {self.registry} {what}: {self._login_hint()}")
        if resp.status_code >= 500 or resp.status_code == 429:
            raise TransientError(f"token service of registry {self.registry} answered HTTP {resp.status_code}")
        if not resp.ok:
            raise AuthError(f"token service of registry {self.registry} answered HTTP {resp.status_code}")
        try:
            data = resp.json()
            token = data.get("token") or data.get("access_token")
            life = float(data.get("expires_in") or _DEFAULT_TOKEN_LIFE)
        except (ValueError, AttributeError, TypeError):
            token, life = None, 0
        if not token:
            raise AuthError(f"token service of registry {self.registry} returned no token")
        # renew a little early: a token that runs out mid-request costs a resend
        return "Bearer " + token, time.monotonic() + max(life * 0.9 - 5, 1)

    def _acr_refresh_token(self, realm: str, service: str) -> str | None:
        """Entra ID token (DefaultAzureCredential) → ACR refresh token at ``/oauth2/exchange``; None if unavailable."""
        if self._acr_refresh:
            return self._acr_refresh
        parts = urlsplit(realm)
        if not parts.path.endswith("/oauth2/token") or parts.hostname != urlsplit(self.url).hostname:
            return None  # not ACR's token service on the registry's own host: never send an Entra token there
        credential = self._azure_credential
        if credential is None:
            try:
                from azure.identity import DefaultAzureCredential
            except ImportError:
                log.info("azure-identity not installed: no Entra ID token for %s", self.registry)
                return None
            quiet_azure_identity()
            credential = DefaultAzureCredential()
        try:
            aad = credential.get_token(ACR_AAD_SCOPE).token
        except Exception as e:  # noqa: BLE001 - any credential failure means "no Entra token": say why at -v
            log.info("no Entra ID token for %s (%s)", self.registry, e.__class__.__name__)
            return None
        form = {"grant_type": "access_token", "service": service, "access_token": aad}
        if os.environ.get("AZURE_TENANT_ID"):
            form["tenant"] = os.environ["AZURE_TENANT_ID"]
        exchange = realm[: -len("/oauth2/token")] + "/oauth2/exchange"
        resp = self._token_call("POST", exchange, data=form)
        if resp.status_code in (401, 403):
            raise AuthError(
                f"registry {self.registry} refused the Entra ID token: give the identity the AcrPush role "
                "on the registry"
            )
        if not resp.ok:
            raise AuthError(f"token exchange of registry {self.registry} answered HTTP {resp.status_code}")
        try:
            self._acr_refresh = str(resp.json()["refresh_token"])
        except (ValueError, KeyError, TypeError):
            raise AuthError(f"token exchange of registry {self.registry} returned no refresh token") from None
        return self._acr_refresh

    # -- requests

    def _full(self, url: str) -> str:
        return url if url.startswith(("http://", "https://")) else urljoin(self.url + "/", url.lstrip("/"))

    def request(
        self,
        method: str,
        url: str,
        *,
        scopes: Iterable[str],
        what: str,
        headers: dict[str, str] | None = None,
        data: Any = None,
        replayable: bool = True,
        stream: bool = False,
    ) -> requests.Response:
        """One request, with auth: a 401 is answered from the challenge and the request sent once more."""
        scopes = tuple(sorted(set(scopes)))
        full = self._full(url)
        for attempt in range(2):
            h = dict(headers or {})
            auth = self._authorization(scopes)
            if auth:
                h["Authorization"] = auth
            body = data() if callable(data) else data
            try:
                resp = self.session.request(
                    method, full, headers=h, data=body, stream=stream, timeout=(10, self.timeout), allow_redirects=True
                )
            except requests.Timeout:
                raise TransientError(
                    f"registry {self.registry} did not answer within {self.timeout:g} s ({what})"
                ) from None
            except requests.RequestException as e:
                raise TransientError(
                    f"registry {self.registry} not reachable at {self.url} ({what}: {e.__class__.__name__})"
                ) from None
            if resp.status_code != 401 or attempt:
                return resp
            if not replayable and body is not None:
                if not self._authenticate(resp, scopes, auth):
                    return resp
                raise _Reauth(f"registry {self.registry}: token renewed during {what}")
            if not self._authenticate(resp, scopes, auth):
                return resp
        return resp

    def error(self, resp: requests.Response, what: str, repository: str) -> ModelshipError:
        """The one-line error for a failed response."""
        codes, message = _errors(resp)
        status = resp.status_code
        detail = redact(" ".join(message.split()))[:200]
        quota = "quota" in message.lower() or any("QUOTA" in c for c in codes) or status == 507
        if quota:
            return ModelshipError(
                f"registry {self.registry} refused {what} in {repository}: storage quota exceeded "
                f"({detail or status}); delete unused images or raise the registry's quota"
            )
        if status == 401:
            return AuthError(f"registry {self.registry} wants credentials for {repository}: {self._login_hint()}")
        if status == 403 or "DENIED" in codes:
            return AuthError(
                f"registry {self.registry} denied {what} in {repository}: the credentials lack that permission "
                f"({self._login_hint()})"
            )
        if "NAME_UNKNOWN" in codes:
            return NotFoundError(f"repository {repository} not found in registry {self.registry}")
        if status == 404:
            return NotFoundError(f"{what}: not found in {self.registry}/{repository}")
        if status == 415 or ("MANIFEST_INVALID" in codes and "media" in message.lower()) or "UNSUPPORTED" in codes:
            return ModelshipError(
                f"registry {self.registry} does not accept {what} ({detail or f'HTTP {status}'}): it does not support "
                "this media type; use a registry that supports OCI images"
            )
        if status >= 500 or status == 429:
            return TransientError(f"registry {self.registry} answered HTTP {status} for {what}")
        return ModelshipError(
            f"registry {self.registry} refused {what} in {repository}: HTTP {status}"
            + (f" {'/'.join(codes)}" if codes else "")
            + (f": {detail}" if detail else "")
        )

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        return retrying(f"{what} ({self.registry})", fn)

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

        return self._call("blob HEAD", head) if retry else head()

    def _push_scopes(self, repository: str, *also: str) -> list[str]:
        return [f"repository:{repository}:pull,push", *also]

    def _start(self, repository: str, digest: str, mount_from: str | None, *, retry: bool = True) -> str | None:
        """A new upload session's URL; with ``mount_from``, None when the registry mounted the blob instead."""

        def post() -> str | None:
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
            return self._full(resp.headers["Location"])

        return self._call("blob upload start", post) if retry else post()

    def _status(self, session: str, repository: str) -> tuple[str | None, int]:
        """(session URL, bytes the registry holds) of an upload in progress; (None, 0) when it is gone."""
        resp = self.request("GET", session, scopes=self._push_scopes(repository), what="upload status")
        if resp.status_code in (200, 204):
            got = re.fullmatch(r"(?:bytes=)?0-(\d+)", resp.headers.get("Range", "").strip())
            end = int(got.group(1)) + 1 if got else 0
            # distribution says "0-0" for an empty upload
            return self._full(resp.headers.get("Location") or session), 0 if end == 1 else end
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
        session = self._start(repository, digest, mount_from) if mount_from else None
        if mount_from and session is None:
            return 0
        offset, sent, failures = 0, 0, 0
        resync = False
        scopes = self._push_scopes(repository)
        while True:
            try:
                if resync and session is not None:
                    session, offset = self._status(session, repository)
                resync = False
                if session is None:
                    session, offset = self._start(repository, digest, None, retry=False), 0  # this loop retries
                assert session is not None
                if offset == 0 and size <= self.chunk_size:
                    body = _Limited(source.open(0), size)
                    try:
                        resp = self.request(
                            "PUT", _with_digest(session, digest), scopes=scopes, what="blob upload",
                            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                            data=body, replayable=False,
                        )  # fmt: skip
                    finally:
                        sent += body.sent
                else:
                    reader = source.open(offset)
                    while offset < size:
                        n = min(self.chunk_size, size - offset)
                        body = _Limited(reader, n)
                        headers = {
                            "Content-Type": "application/octet-stream",
                            "Content-Range": f"{offset}-{offset + n - 1}",
                            "Content-Length": str(n),
                        }
                        try:
                            resp = self.request(
                                "PATCH", session, scopes=scopes, what="blob upload", headers=headers, data=body,
                                replayable=False,
                            )  # fmt: skip
                        finally:
                            sent += body.sent
                        if resp.status_code != 202:
                            raise self.error(resp, f"upload of blob {digest[:19]}…", repository)
                        session = self._full(resp.headers.get("Location") or session)
                        offset += n
                    resp = self.request(
                        "PUT", _with_digest(session, digest), scopes=scopes, what="blob commit",
                        headers={"Content-Length": "0"},
                    )  # fmt: skip
                if resp.status_code in (200, 201, 204):
                    return sent
                codes, _ = _errors(resp)
                if resp.status_code in (400, 416) and any(c in codes for c in ("DIGEST_INVALID", "SIZE_INVALID")):
                    # bytes damaged on the way (the files were checked as they were read): start over
                    session = None
                    raise TransientError(f"registry {self.registry} received a damaged upload of {digest[:19]}…")
                if resp.status_code in (400, 404, 416) and any(c.startswith("BLOB_UPLOAD") for c in codes):
                    session = None
                    raise TransientError(f"registry {self.registry} dropped the upload session of {digest[:19]}…")
                raise self.error(resp, f"upload of blob {digest[:19]}…", repository)
            except TransientError as e:
                failures += 1
                if failures > max_retries():
                    raise TransientError(
                        f"upload of blob {digest[:19]}… to {self.registry}/{repository} failed {failures} times, "
                        f"last: {e}"
                    ) from None
                log.info(
                    "upload of %s… to %s failed (%s); checking what the registry has", digest[:19], self.registry, e
                )
                if not isinstance(e, _Reauth) and self.cancel.wait(backoff(failures)):
                    raise
                try:
                    if self.blob_size(repository, digest, retry=False) is not None:
                        return sent  # the commit went through before its answer was lost
                except TransientError:
                    pass  # the next attempt will find out
                resync = True

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

        return self._call("blob GET", get)

    def get_blob(self, repository: str, digest: str, limit: int = 64 * 1024 * 1024) -> bytes:
        """A small blob (a config), checked against its digest."""
        resp = self.open_blob(repository, digest)
        with resp:
            data = resp.raw.read(limit + 1, decode_content=True)
        if len(data) > limit:
            raise ModelshipError(f"blob {digest[:19]}… of {self.registry}/{repository} is larger than {limit} bytes")
        if sha256_digest(data) != digest:
            raise IntegrityError(f"registry {self.registry}: blob {digest} of {repository} does not match its digest")
        return data

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

        return self._call("manifest GET", get)

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

        return self._call("manifest HEAD", head)

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or its digest; returns its digest, checked against what the registry says."""
        digest = sha256_digest(data)

        def put() -> str:
            resp = self.request(
                "PUT", f"/v2/{repository}/manifests/{reference}", scopes=self._push_scopes(repository),
                what=f"manifest PUT {reference}", headers={"Content-Type": media_type}, data=data,
            )  # fmt: skip
            if resp.status_code not in (200, 201, 202):
                codes, _ = _errors(resp)
                if "DIGEST_INVALID" in codes and reference.startswith("sha256:"):
                    raise TransientError(f"registry {self.registry} received a damaged manifest")
                raise self.error(resp, f"manifest {_short(reference)}", repository)
            held = resp.headers.get("Docker-Content-Digest")
            if held and held != digest:  # damaged on the way, stored as received: send it again
                raise TransientError(f"registry {self.registry} stored {held[:19]}… for manifest {digest[:19]}…")
            return digest

        return self._call("manifest PUT", put)

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
            tags, url = self._call("tag list", lambda u=url: page(u))
            out.extend(tags)
        return out

    # -- parsed JSON (inspect, push read-back)

    def manifest(self, repository: str, reference: str) -> tuple[str, dict[str, Any]]:
        """(digest, parsed manifest) of a tag or digest."""
        got = self.get_manifest(repository, reference)
        return got.digest, got.json()

    def blob_json(self, repository: str, digest: str) -> dict[str, Any]:
        try:
            value = json.loads(self.get_blob(repository, digest))
        except ValueError:
            raise ModelshipError(f"blob {digest[:19]}… of {self.registry}/{repository} is not JSON") from None
        return value if isinstance(value, dict) else {}


def _short(reference: str) -> str:
    return reference[:19] + "…" if reference.startswith("sha256:") else reference


def _with_digest(session: str, digest: str) -> str:
    return session + ("&" if "?" in session else "?") + "digest=" + quote(digest)


# ---- a whole image ------------------------------------------------------------------------------------


def platform_of(entry: dict[str, Any]) -> str:
    p = entry.get("platform") or {}
    return "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)


def host_platform() -> str:
    import platform as _platform

    machine = _platform.machine().lower()
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def remote_image(
    ref: str, *, username: str | None = None, password: str | None = None, platform: str | None = None
) -> dict[str, Any]:
    """Manifest digest, config digest (= image id) and labels of a remote image, without pulling it.

    Of an image index, the image of ``platform`` (default: this machine's, else the first listed) is read;
    ``platform`` and ``platforms`` say which one and what there was, so that nothing is picked silently.
    """
    r = parse_reference(ref)
    if (username is None) != (password is None):
        raise UsageError("give both a username and a password, or neither")
    creds = Credentials(username, password) if username is not None else None
    with RegistryClient(r.registry, creds) as client:
        got = client.get_manifest(r.repository, r.reference)
        digest, manifest = got.digest, got.json()
        chosen_platform, platforms = None, []
        if got.is_index or "manifests" in manifest:
            entries = manifest.get("manifests") or []
            platforms = [platform_of(m) or "unknown" for m in entries]
            want = platform or host_platform()
            chosen = next((m for m in entries if platform_of(m).startswith(want)), None)
            if chosen is None and platform is None and entries:
                chosen = entries[0]
            if chosen is None:
                listed = ", ".join(platforms) or "none"
                raise NotFoundError(f"{ref}: no {want} image in the index (platforms: {listed})")
            chosen_platform = platform_of(chosen) or "unknown"
            manifest = client.get_manifest(r.repository, chosen["digest"]).json()
        config_digest = (manifest.get("config") or {}).get("digest")
        if not config_digest:
            raise ModelshipError(f"{ref}: manifest has no config (schema 1 manifests are not supported)")
        config = client.blob_json(r.repository, config_digest)
    labels = (config.get("config") or {}).get("Labels") or {}
    return {
        "ref": str(r),
        "digest": digest,
        "id": config_digest,
        "labels": dict(labels),
        "platform": chosen_platform,
        "platforms": platforms,
    }


__all__ = [
    "ALL_MANIFEST_TYPES",
    "DOCKER_MANIFEST",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "BlobSource",
    "Credentials",
    "Fetched",
    "Reference",
    "RegistryClient",
    "acr_exchange_allowed",
    "base_url",
    "docker_credentials",
    "names_registry",
    "parse_reference",
    "remote_image",
]
