"""Image references: ``[REGISTRY/]REPOSITORY[:TAG][@DIGEST]``, read the way docker and distribution read them.

The first path component is a registry when it has a ``.`` or a ``:`` or is ``localhost`` (``127.0.0.1:5000/app``,
``myacr.azurecr.io/team/app``, ``[::1]:5000/app``); otherwise the registry is Docker Hub (``docker.io``) and a
one-component repository gets Docker Hub's ``library/`` prefix. Plain http is used only for the local machine
(as Docker allows by default); https everywhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import UsageError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")

# distribution/reference's grammar (reference/regexp.go), anchored
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY = re.compile(rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
_NAME_MAX = 255


@dataclass(frozen=True)
class Reference:
    """A parsed image reference; ``tag`` and ``digest`` may both be set (the digest then wins)."""

    registry: str  # host[:port] as written ("docker.io" for Docker Hub)
    repository: str  # "library/python", "team/app"
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What a manifest request asks for: the digest, else the tag, else ``latest``."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str) -> Reference:
        check_tag(tag)
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        if not _DIGEST.fullmatch(digest):
            raise UsageError(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
        return replace(self, tag=None, digest=digest)

    @property
    def api_host(self) -> str:
        return api_host(self.registry)

    @property
    def url(self) -> str:
        """Base URL of the registry's API (``http://`` only for the local machine)."""
        return base_url(self.registry)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        if not self.tag and not self.digest:
            out += ":latest"
        return out


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag or ""):
        raise UsageError(f"invalid tag {tag!r}: up to 128 letters, digits, '_', '.' and '-', not starting with . or -")
    return tag


def names_registry(ref: str) -> bool:
    """Whether ``ref`` spells out its registry (``host.domain/...``, ``host:port/...``, ``localhost/...``)."""
    first, _, rest = ref.split("@", 1)[0].partition("/")
    return bool(rest) and ("." in first or ":" in first or first == "localhost")


def split_tag(ref: str) -> tuple[str, str]:
    """``NAME[:TAG]`` the way the Docker engine takes it: (NAME as written, TAG or ``latest``); a ``@digest`` is
    the tag. For engine calls (build tags, push); docker-py's rule: a ``:`` before the last ``/`` is a port."""
    from docker.utils import parse_repository_tag

    name, tag = parse_repository_tag(ref)
    return name, "latest" if tag is None else tag


def pinned(image: str, digest: str) -> str:
    """``REGISTRY/REPO@sha256:…`` of ``image`` (its tag, or digest, dropped): the glossary's ``ref``.

    ``image`` as written (``localhost:5000/app:1``): a registry port has a ``:`` too, so only the last path
    segment's is a tag.
    """
    name = image.split("@", 1)[0]
    repo, slash, last = name.rpartition("/")
    return f"{repo}{slash}{last.split(':', 1)[0]}@{digest}"


def parse_reference(ref: str) -> Reference:
    """``[registry/]repo[:tag][@digest]``; UsageError with one line naming what is wrong."""
    if not ref or any(c.isspace() or ord(c) < 32 for c in ref):
        raise UsageError(f"invalid image reference {ref!r}")
    name, at, digest = ref.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise UsageError(f"invalid image reference {ref!r}: bad digest (expected sha256:<64 hex digits>)")
    if names_registry(name):
        registry, path = name.split("/", 1)
        if not _REGISTRY.fullmatch(registry):
            raise UsageError(f"invalid image reference {ref!r}: {registry!r} is not a registry host[:port]")
        if registry == "index.docker.io":
            registry = DOCKER_HUB
    else:
        registry, path = DOCKER_HUB, name
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise UsageError(f"invalid image reference {ref!r}: tag {tag!r} is not valid")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not _REPOSITORY.fullmatch(path):
        hint = " (repository names are lower-case)" if path.lower() != path else ""
        raise UsageError(f"invalid image reference {ref!r}: repository {path!r} is not a valid name{hint}")
    if len(f"{registry}/{path}") > _NAME_MAX:
        raise UsageError(f"invalid image reference {ref!r}: name longer than {_NAME_MAX} characters")
    return Reference(registry, path, tag, digest or None)


def api_host(registry: str) -> str:
    return DOCKER_HUB_API if registry == DOCKER_HUB else registry


def is_local(registry: str) -> bool:
    host = api_host(registry)
    hostname = host.split("]")[0] + "]" if host.startswith("[") else host.rsplit(":", 1)[0]
    return hostname in _LOCAL_HOSTS


def base_url(registry: str) -> str:
    """Plain http only for the local machine (as Docker allows by default); https everywhere else."""
    return f"{'http' if is_local(registry) else 'https'}://{api_host(registry)}"


__all__ = [
    "DOCKER_HUB",
    "Reference",
    "api_host",
    "base_url",
    "check_tag",
    "is_local",
    "names_registry",
    "parse_reference",
    "pinned",
    "split_tag",
]
