"""A small Docker Registry HTTP API v2 client: read a remote image's manifest and config (for ``inspect``).

Auth follows the registry's ``WWW-Authenticate`` challenge: Basic, or Bearer tokens from the realm
(with Basic credentials, or an identity/refresh token as ACR's ``az acr login`` stores it). Credentials
come from explicit arguments or the docker config (``auths``, ``credHelpers``, ``credsStore``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from ..errors import AuthError, IntegrityError, ModelshipError, NotFoundError, TransientError, UsageError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port] as written ("docker.io" for Docker Hub)
    repository: str  # "library/python", "team/app"
    reference: str  # tag or "sha256:..." digest

    def __str__(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.registry}/{self.repository}{sep}{self.reference}"


def parse_reference(ref: str) -> Reference:
    """``[registry/]repo[:tag][@digest]`` as docker reads it: the first part is a registry if it has . or :."""
    if not ref or any(c.isspace() for c in ref):
        raise UsageError(f"invalid image reference {ref!r}")
    name, digest = [*ref.split("@", 1), ""][:2]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, name
    tag = ""
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not re.fullmatch(r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*", path):
        raise UsageError(f"invalid image reference {ref!r}: repository {path!r} is not a valid name")
    if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise UsageError(f"invalid image reference {ref!r}: bad digest")
    return Reference(registry, path, digest or tag or "latest")


def names_registry(ref: str) -> bool:
    """Whether ``ref`` spells out its registry (``host.domain/...``, ``host:port/...``, ``localhost/...``)."""
    first, _, rest = ref.split("@", 1)[0].partition("/")
    return bool(rest) and ("." in first or ":" in first or first == "localhost")


def api_host(registry: str) -> str:
    return DOCKER_HUB_API if registry == DOCKER_HUB else registry


def base_url(registry: str) -> str:
    """Plain http only for the local machine (as Docker allows by default); https everywhere else."""
    host = api_host(registry)
    hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return f"{'http' if hostname in _LOCAL_HOSTS else 'https'}://{host}"


# ---- credentials ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    identity_token: str | None = None  # OAuth2 refresh token (ACR: `az acr login`)

    def __repr__(self) -> str:  # never show secrets, even in a traceback
        return f"Credentials(username={self.username!r}, password=***, identity_token=***)"


def _docker_config() -> dict[str, Any]:
    path = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _normalise_key(key: str) -> str:
    key = re.sub(r"^https?://", "", key).split("/", 1)[0]
    return DOCKER_HUB if key in ("index.docker.io", DOCKER_HUB_API) else key


def _from_helper(helper: str, server: str) -> Credentials | None:
    try:
        proc = subprocess.run(
            [f"docker-credential-{helper}", "get"],
            input=server,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None  # helper configured but not installed: fall back to anonymous
    if proc.returncode != 0:
        return None
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return None
    if data.get("Username") == "<token>":
        return Credentials(identity_token=data.get("Secret"))
    return Credentials(data.get("Username"), data.get("Secret"))


def docker_credentials(registry: str) -> Credentials | None:
    """Credentials `docker login` stored for ``registry``, or None."""
    config = _docker_config()
    wanted = _normalise_key(registry)
    server = DOCKER_HUB_CONFIG_KEY if wanted == DOCKER_HUB else registry
    helpers = config.get("credHelpers") or {}
    for key, helper in helpers.items():
        if _normalise_key(key) == wanted:
            return _from_helper(helper, server)
    for key, entry in (config.get("auths") or {}).items():
        if _normalise_key(key) != wanted or not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials(identity_token=entry["identitytoken"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            return Credentials(user, password)
    if config.get("credsStore"):
        return _from_helper(config["credsStore"], server)
    return None


# ---- the client -------------------------------------------------------------------------------------


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', params))


class RegistryClient:
    """Read-only access to one registry; one token per repository scope, obtained on the first 401."""

    def __init__(self, registry: str, credentials: Credentials | None = None, *, timeout: float = 30):
        self.registry, self.creds, self.timeout = registry, credentials, timeout
        self.url = base_url(registry)
        self.session = requests.Session()
        self._auth: dict[str, str] = {}  # scope -> Authorization header value

    def close(self) -> None:
        self.session.close()

    def _basic(self) -> str | None:
        if self.creds and self.creds.username is not None and self.creds.password is not None:
            raw = f"{self.creds.username}:{self.creds.password}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        return None

    def _token(self, params: dict[str, str], scope: str) -> str:
        realm = params.get("realm")
        if not realm:
            raise AuthError(f"registry {self.registry} sent a Bearer challenge without a realm")
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        try:
            if self.creds and self.creds.identity_token:
                form = {**query, "grant_type": "refresh_token", "refresh_token": self.creds.identity_token}
                resp = self.session.post(realm, data=form, timeout=self.timeout)
            else:
                headers = {"Authorization": b} if (b := self._basic()) else {}
                resp = self.session.get(realm, params=query, headers=headers, timeout=self.timeout)
        except requests.RequestException as e:
            what = e.__class__.__name__
            raise TransientError(f"token service of registry {self.registry} not reachable ({what})") from None
        if resp.status_code in (401, 403):
            raise AuthError(
                f"registry {self.registry} refused the credentials: run 'docker login {self.registry}' or pass "
                "--username/--password-stdin"
            )
        if not resp.ok:
            raise ModelshipError(f"token service of registry {self.registry} answered HTTP {resp.status_code}")
        data = resp.json()
        token = data.get("token") or data.get("access_token")
        if not token:
            raise AuthError(f"registry {self.registry}: token service returned no token")
        return "Bearer " + token

    def get(self, path: str, repository: str, accept: tuple[str, ...] = ()) -> requests.Response:
        scope = f"repository:{repository}:pull"
        headers = {"Accept": ", ".join(accept)} if accept else {}
        for attempt in range(2):
            if scope in self._auth:
                headers["Authorization"] = self._auth[scope]
            try:
                resp = self.session.get(self.url + path, headers=headers, timeout=self.timeout)
            except requests.RequestException as e:
                what = e.__class__.__name__
                raise TransientError(f"registry {self.registry} not reachable at {self.url} ({what})") from None
            if resp.status_code != 401 or attempt:
                break
            scheme, params = _parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            if scheme == "bearer":
                self._auth[scope] = self._token(params, scope)
            elif scheme == "basic" and (b := self._basic()):
                self._auth[scope] = b
            else:
                break
        if resp.status_code in (401, 403):
            raise AuthError(
                f"registry {self.registry} denied access to {repository}: run 'docker login {self.registry}' "
                "or pass --username/--password-stdin"
            )
        if resp.status_code == 404:
            raise NotFoundError(f"{repository} not found in registry {self.registry} ({path.rsplit('/', 1)[-1]})")
        if not resp.ok:
            raise ModelshipError(f"registry {self.registry} answered HTTP {resp.status_code} for {path}")
        return resp

    def manifest(self, repository: str, reference: str) -> tuple[str, dict[str, Any]]:
        """(digest, parsed manifest) of a tag or digest; the digest is checked when one was asked for."""
        resp = self.get(f"/v2/{repository}/manifests/{reference}", repository, INDEX_TYPES + MANIFEST_TYPES)
        digest = "sha256:" + hashlib.sha256(resp.content).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise IntegrityError(f"registry {self.registry} returned a manifest that does not match {reference}")
        try:
            return digest, resp.json()
        except ValueError as e:
            raise ModelshipError(f"registry {self.registry}: manifest of {repository} is not JSON") from e

    def blob_json(self, repository: str, digest: str) -> dict[str, Any]:
        resp = self.get(f"/v2/{repository}/blobs/{digest}", repository)
        if "sha256:" + hashlib.sha256(resp.content).hexdigest() != digest:
            raise IntegrityError(f"registry {self.registry}: blob {digest} of {repository} does not match its digest")
        return resp.json()


def _platform_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def remote_image(ref: str, *, username: str | None = None, password: str | None = None) -> dict[str, Any]:
    """Manifest digest, config digest (= image id) and labels of a remote image, without pulling it."""
    r = parse_reference(ref)
    if (username is None) != (password is None):
        raise UsageError("give both a username and a password, or neither")
    creds = Credentials(username, password) if username is not None else docker_credentials(r.registry)
    client = RegistryClient(r.registry, creds)
    try:
        digest, manifest = client.manifest(r.repository, r.reference)
        if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
            entries = manifest.get("manifests") or []
            arch = _platform_arch()
            chosen = next(
                (
                    m
                    for m in entries
                    if m.get("platform", {}).get("os") == "linux" and m.get("platform", {}).get("architecture") == arch
                ),
                entries[0] if entries else None,
            )
            if chosen is None:
                raise NotFoundError(f"{ref}: the image index lists no images")
            _, manifest = client.manifest(r.repository, chosen["digest"])
        config_digest = (manifest.get("config") or {}).get("digest")
        if not config_digest:
            raise ModelshipError(f"{ref}: manifest has no config (schema 1 manifests are not supported)")
        config = client.blob_json(r.repository, config_digest)
    finally:
        client.close()
    labels = (config.get("config") or {}).get("Labels") or {}
    return {"ref": str(r), "digest": digest, "id": config_digest, "labels": dict(labels)}
