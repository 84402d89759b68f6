"""Who modelship is to a registry: credentials, the docker config, the ``WWW-Authenticate`` challenge, a token
per set of scopes, and Azure Container Registry's token exchange.

- **docker-py's ``docker.auth``** reads the docker config (``auths`` incl. ``identitytoken``, ``credHelpers``,
  ``credsStore`` through the ``docker-credential-*`` helpers), exactly as ``docker login`` left it.
- **azure-identity**'s ``DefaultAzureCredential`` (the ``azure`` extra) supplies an Entra ID token for Azure
  Container Registry, when installed: ``/oauth2/exchange`` turns it into an ACR refresh token, which then
  buys access tokens at ``/oauth2/token`` like any ``identitytoken``.
- Written here: the challenge (Basic; Bearer tokens from the realm, per scope, renewed before they expire).

Credentials and tokens never appear in a message, a log line or a repr.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from .. import settings
from ..errors import AuthError, TransientError, UsageError
from ..logs import quiet_azure_identity
from .reference import DOCKER_HUB, DOCKER_HUB_CONFIG_KEY, api_host, is_local

log = logging.getLogger("modelship")

ACR_SUFFIXES = (".azurecr.io", ".azurecr.cn", ".azurecr.us")
ACR_AAD_SCOPE = "https://management.azure.com/.default"  # what `az acr login` exchanges
_DEFAULT_TOKEN_LIFE = 60  # seconds, when the token service does not say (the distribution token spec)


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    identity_token: str | None = None  # OAuth2 refresh token (ACR: `az acr login`)

    def __repr__(self) -> str:  # never show secrets, even in a traceback
        return f"Credentials(username={self.username!r}, password=***, identity_token=***)"


def login(username: str | None, password: str | None) -> Credentials | None:
    """The credentials a caller gave (``--username`` and ``--password-stdin``), or None for the docker config's.

    The one check that both or neither are given, for every verb that talks to a registry.
    """
    if (username is None) != (password is None):
        raise UsageError("give both a username and a password (--username and --password-stdin), or neither")
    return Credentials(username, password) if username is not None else None


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


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """(scheme, parameters) of a ``WWW-Authenticate`` header; the scheme lower-case."""
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', params)}


# how the auth layer sends its own requests (token service, exchange): the transport's session and timeouts
TokenCall = Callable[..., requests.Response]


class Auth:
    """The ``Authorization`` of one registry: credentials resolved on first need, one token per set of scopes.

    Thread-safe: uploads run in threads, and one token fetch at a time answers them all.
    """

    def __init__(
        self, registry: str, url: str, credentials: Credentials | None, call: TokenCall, azure_credential: Any = None
    ):
        self.registry, self.url, self._call = registry, url, call
        self._creds = credentials
        self._creds_resolved = credentials is not None
        self._azure_credential = azure_credential
        self._basic: str | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}  # scopes -> (Authorization, expiry)
        self._acr_refresh: str | None = None
        self._lock = threading.Lock()

    def credentials(self) -> Credentials | None:
        if not self._creds_resolved:
            self._creds = docker_credentials(self.registry)
            self._creds_resolved = True
        return self._creds

    def offered(self) -> bool:
        """Whether what this registry was sent came from credentials (given, the docker config's or Entra ID's)."""
        return bool(self._creds_resolved and self._creds) or self._acr_refresh is not None

    def hint(self) -> str:
        """What to do about missing or refused credentials."""
        hint = f"run 'docker login {self.registry}'"
        if acr_exchange_allowed(self.registry):
            hint += " or 'az login' with modelship's azure extra installed (pip install 'modelship[azure]')"
        return hint

    def _basic_header(self) -> str | None:
        c = self.credentials()
        if c and c.username is not None and c.password is not None:
            return "Basic " + base64.b64encode(f"{c.username}:{c.password}".encode()).decode()
        return None

    def authorization(self, scopes: tuple[str, ...]) -> str | None:
        """The ``Authorization`` header for a request needing ``scopes``, if there is one yet."""
        token = self._tokens.get(scopes)
        if token and token[1] > time.monotonic():
            return token[0]
        return self._basic

    def authenticate(self, resp: requests.Response, scopes: tuple[str, ...], used: str | None) -> bool:
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
            current = self.authorization(scopes)
            if current is None or current == used:  # else another thread renewed it meanwhile
                self._tokens[scopes] = self._bearer(params, wanted)
        return True

    def _token_call(self, method: str, url: str, **kw: Any) -> requests.Response:
        try:
            return self._call(method, url, **kw)
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
            raise AuthError(f"registry {self.registry} {what}: {self.hint()}")
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


__all__ = ["Auth", "Credentials", "acr_exchange_allowed", "docker_credentials", "login", "parse_challenge"]
