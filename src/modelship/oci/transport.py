"""How modelship talks to one registry: a keep-alive session, timeouts, auth on a 401, the one-line errors, and
retries through the project's one policy (``modelship._retry``).

Layered as go-containerregistry's ``remote/transport``: :class:`Transport` sends a request with the
``Authorization`` that :class:`~modelship.oci.auth.Auth` holds, answers a 401 challenge once and sends again;
:meth:`Transport.error` maps a failed answer to one line (its ``CheckError``); :meth:`Transport.call` retries a
whole step while it raises a TransientError. The protocol on top (``modelship.oci.registry``) adds no retry
loop of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter

from .. import settings
from .._retry import Budget, retrying
from ..errors import AuthError, ModelshipError, NotFoundError, TransientError
from ..uri import redact
from .auth import Auth, Credentials, parse_challenge
from .reference import base_url

T = TypeVar("T")

CHUNK = 64 * 1024 * 1024  # one PATCH; blobs up to this size go in one PUT
_SEND_BLOCK = 1024 * 1024
_CONNECT_TIMEOUT = 10


def default_timeout() -> float:
    """Seconds without a byte before a request counts as stalled (``MODELSHIP_REGISTRY_TIMEOUT``, default 120)."""
    return settings.current().registry_timeout


def error_codes(resp: requests.Response) -> tuple[list[str], str]:
    """(error codes, first message) of a distribution error body."""
    try:
        body = resp.json()
        items = body.get("errors") or []
        codes = [str(e.get("code", "")) for e in items if isinstance(e, dict)]
        messages = [str(e.get("message", "")) for e in items if isinstance(e, dict) and e.get("message")]
        return codes, (messages[0] if messages else "")
    except (ValueError, AttributeError):
        return [], resp.text[:200] if resp.text else ""


class Reauth(TransientError):
    """A token ran out in the middle of a request whose body cannot be sent again: retry the step at once."""


class _BlockAdapter(HTTPAdapter):
    """Sends request bodies in 1 MiB blocks (http.client's 8 KiB default costs CPU at GB sizes)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["blocksize"] = _SEND_BLOCK
        super().init_poolmanager(*args, **kwargs)


class Transport:
    """One registry's session: requests with auth, the errors they end in, and retried steps. ``chunk_size``:
    the most one request sends of a blob (an upload's PATCH)."""

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
        self.session = requests.Session()
        self.session.mount("http://", _BlockAdapter())
        self.session.mount("https://", _BlockAdapter())
        self.auth = Auth(registry, self.url, credentials, self._plain, azure_credential)
        self.cancel = threading.Event()  # set to stop waiting between retries (another upload failed)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _plain(self, method: str, url: str, **kw: Any) -> requests.Response:
        """A request without the registry's auth (the token service's own)."""
        return self.session.request(method, url, timeout=(_CONNECT_TIMEOUT, self.timeout), **kw)

    def full(self, url: str) -> str:
        """An absolute URL for a path or a ``Location`` the registry sent."""
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
        """One request, with auth: a 401 is answered from the challenge and the request sent once more.

        A body that cannot be sent twice (``replayable=False``) ends in :class:`Reauth` instead: the caller's
        step starts again with the new token.
        """
        scopes = tuple(sorted(set(scopes)))
        full = self.full(url)
        for attempt in range(2):
            h = dict(headers or {})
            auth = self.auth.authorization(scopes)
            if auth:
                h["Authorization"] = auth
            try:
                resp = self.session.request(
                    method, full, headers=h, data=data, stream=stream, timeout=(_CONNECT_TIMEOUT, self.timeout)
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
            if not self.auth.authenticate(resp, scopes, auth):
                return resp
            if not replayable and data is not None:
                raise Reauth(f"registry {self.registry}: token renewed during {what}")
        return resp

    def error(self, resp: requests.Response, what: str, repository: str) -> ModelshipError:
        """The one-line error for a failed response."""
        codes, message = error_codes(resp)
        status = resp.status_code
        detail = redact(" ".join(message.split()))[:200]
        quota = "quota" in message.lower() or any("QUOTA" in c for c in codes) or status == 507
        if quota:
            return ModelshipError(
                f"registry {self.registry} refused {what} in {repository}: storage quota exceeded "
                f"({detail or status}); delete unused images or raise the registry's quota"
            )
        challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))[1]
        scope_denied = status == 401 and challenge.get("error") == "insufficient_scope"  # a permission missing
        if status == 401 and not scope_denied:
            sent = resp.request is not None and "Authorization" in resp.request.headers
            if sent and self.auth.offered():  # not "wants credentials": it was given some, and said no
                return AuthError(
                    f"registry {self.registry} refused the credentials for {repository}: check the username and "
                    f"password (or {self.auth.hint()})"
                )
            return AuthError(f"registry {self.registry} wants credentials for {repository}: {self.auth.hint()}")
        if status == 403 or scope_denied or "DENIED" in codes:
            return AuthError(
                f"registry {self.registry} denied {what} in {repository}: the credentials lack that permission "
                f"({self.auth.hint()})"
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

    def call(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        budget: Budget | None = None,
        on_retry: Callable[[str, int, float, Exception], None] | None = None,
    ) -> T:
        """``fn()``, retried by the project's policy while it raises a TransientError.

        A :class:`Reauth` (a token renewed under a body that could not be sent twice) is retried without a wait.
        """
        kw: dict[str, Any] = {"budget": budget} if budget is not None else {}
        if on_retry is not None:
            kw["on_retry"] = on_retry
        cancel = self.cancel if budget is not None else None  # a long transfer stops when another one failed
        return retrying(f"{what} ({self.registry})", fn, cancel, **kw)


__all__ = ["Reauth", "Transport", "default_timeout", "error_codes"]
