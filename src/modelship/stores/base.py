"""The Source protocol: what every model store offers to resolve, fetch and publish."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..settings import MAX_CONNECTIONS as MAX_CONNECTIONS  # the store clients' pool size (re-exported)
from ..settings import current
from ..uri import ModelURI

SHA256_KEY = "modelship_sha256"  # blob/object metadata key carrying the published sha256
CONNECT_TIMEOUT = 10.0


def read_timeout() -> float:
    """Seconds a read may see no bytes before the connection counts as dead (then it is retried).

    MODELSHIP_READ_TIMEOUT overrides the default 30 s (see modelship.settings): a network that drops idle
    connections silently (no reset) costs this long per stalled read, and a store that stalls for good ends the
    command after about MODELSHIP_RETRY_BUDGET plus this (see modelship._retry).
    """
    return current().read_timeout


def sdk_retries() -> int:
    """Quick retries a store's SDK may make inside one of modelship's attempts (2; none when
    ``MODELSHIP_MAX_ATTEMPTS=1`` asks for no retry at all)."""
    return min(2, current().max_retries)


def timed_out(e: BaseException | None) -> bool:
    """Whether a failure was a read timeout (no bytes for ``read_timeout()``), however an SDK wrapped it:
    its own retries, a body read that re-raises the timeout as a connection error."""
    for _ in range(8):  # chains are short; a cycle must not loop
        if e is None:
            return False
        name = e.__class__.__name__
        if "ConnectTimeout" in name or name == "ServiceRequestTimeoutError":
            return False  # no connection at all: not a stall of one that worked
        if isinstance(e, TimeoutError) or "ReadTimeout" in name or name == "ServiceResponseTimeoutError":
            return True
        inner = next((a for a in e.args if isinstance(a, BaseException)), None)
        e = getattr(e, "inner_exception", None) or getattr(e, "error", None) or inner or e.__cause__ or e.__context__
    return False


@dataclass(frozen=True)
class RemoteFile:
    """One object in a store; ``name`` is its full key, ``/``-separated."""

    name: str
    size: int
    etag: str | None = None
    md5: str | None = None  # hex
    sha256: str | None = None  # hex, from metadata written by `modelship publish`
    last_modified: _dt.datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict, compare=False)


ProgressFn = Callable[[int], None]


@runtime_checkable
class Source(Protocol):
    """A model store. Implementations map their SDK's errors to modelship.errors.

    ``read`` raises IntegrityError when ``etag`` no longer matches, TransientError for faults worth a retry.

    Optional attributes the fetch engine uses when present: ``verified_read_size`` (reads of at most this many
    bytes can be checked by the store itself: ``read(..., validate=True)`` raises TransientError when the bytes
    were damaged on the way), ``read_buffer`` (bytes one read holds in memory at once; default 1 MiB) and
    ``verified_read_buffer`` (the same for a checked read), which bound how many reads run in parallel.
    """

    uri: ModelURI

    def list(self, prefix: str) -> Iterator[RemoteFile]:
        """Every object whose key starts with ``prefix`` (recursive)."""
        ...

    def read(self, name: str, offset: int, length: int, etag: str | None) -> Iterator[bytes]:
        """Stream ``length`` bytes of ``name`` from ``offset``, pinned to ``etag`` when given."""
        ...

    def write(self, name: str, path: Path, *, sha256: str, md5: bytes, progress: ProgressFn | None = None) -> None:
        """Upload a local file with its sha256 in metadata and its Content-MD5."""
        ...

    def write_bytes(self, name: str, data: bytes) -> None: ...

    def delete(self, names: list[str]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Login:
    """A username and password given on the command line (``--username``/``--password-stdin``): registries
    take one; a store class that does says so with ``takes_login = True``, the others refuse it."""

    username: str
    password: str = field(repr=False)


# a store class (or any callable taking the parsed URI and a credential), or "module:attribute" naming one
StoreFactory = Callable[[ModelURI, Any], Source] | str


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))
