"""Every user-facing failure is a ModelshipError: one clear line, and an exit code for the CLI.

Callers tell failures apart by class and attributes (``IntegrityError.kind``, ``TransientError.reason``,
``ContainerNotFoundError.container``), never by the text of the line, which is for people.
"""

from __future__ import annotations

from typing import ClassVar


class ModelshipError(Exception):
    """A failure the user can act on; ``str(err)`` is the one line shown to them."""

    exit_code = 1


class UsageError(ModelshipError):
    """Bad arguments or input: a wrong URI, an unknown scheme, a malformed file."""

    exit_code = 2


class NotFoundError(ModelshipError):
    """A container, prefix, version, file or image that does not exist."""


class ContainerNotFoundError(NotFoundError):
    """The blob container or bucket itself does not exist (``container`` names it)."""

    def __init__(self, container: str, message: str):
        self.container = container
        super().__init__(message)


class AuthError(ModelshipError):
    """Credentials missing, wrong or not allowed to do this."""


class IntegrityError(ModelshipError):
    """Bytes that are not what they should be: size, checksum or ETag mismatch.

    ``kind``: ``CHANGED`` when the source changed while it was being read (its ETag or size moved on: a fresh
    resolve may find a consistent version), else None."""

    CHANGED: ClassVar[str] = "changed"

    def __init__(self, message: str = "", *, kind: str | None = None):
        self.kind = kind
        super().__init__(message)


class SignatureError(ModelshipError):
    """A model signature that does not vouch for these bytes (modelship.trust.oms).

    ``kind``: ``UNSIGNED`` (no signature), ``MALFORMED`` (truncated, garbled, another format), ``UNKNOWN_KEY``
    (not signed by any given key), ``BYTES_DIFFER`` (signed, but not these files), ``OTHER_IMAGE`` (an image
    signature or attestation by a given key, for another digest: modelship.trust.cosign, .attestations),
    ``FAILED_VERDICT`` (a verified test-result attestation that does not say PASSED); ``fingerprints``: the keys
    involved (``sha256:<hex>`` of the DER public key)."""

    UNSIGNED: ClassVar[str] = "unsigned"
    MALFORMED: ClassVar[str] = "malformed signature"
    UNKNOWN_KEY: ClassVar[str] = "unknown key"
    BYTES_DIFFER: ClassVar[str] = "bytes differ"
    OTHER_IMAGE: ClassVar[str] = "other image"
    FAILED_VERDICT: ClassVar[str] = "failed verdict"

    def __init__(self, message: str, *, kind: str, fingerprints: tuple[str, ...] = ()):
        self.kind, self.fingerprints = kind, fingerprints
        super().__init__(message)


class UnsafePickleError(ModelshipError):
    """A model file whose pickle would run code when loaded (modelship.trust.pickles): ``path`` names the file
    (``ARCHIVE:MEMBER`` inside a zip), ``global_name`` what it imports (``posix.system``), or None when the file
    cannot be scanned at all (a broken or encrypted archive)."""

    def __init__(self, message: str, *, path: str, global_name: str | None):
        self.path, self.global_name = path, global_name
        super().__init__(message)


class TransientError(ModelshipError):
    """A network fault worth retrying (reset, timeout, 5xx).

    ``reason``: a few words for a retry line ("connection reset", "HTTP 503"), never a host or a secret; when
    not given, the class's own (``default_reason``), else the retry line derives one from the cause's type."""

    default_reason: ClassVar[str | None] = None

    def __init__(self, message: str = "", *, reason: str | None = None):
        self.reason = reason or self.default_reason
        super().__init__(message)


class StallError(TransientError):
    """A read that got no bytes within the read timeout: the connection went silent (retried like any other)."""

    default_reason = "timed out"

    def __init__(self, what: str, store: str):
        self.what, self.store = what, store
        super().__init__(f"{what}: no bytes from {store} within the read timeout")


class ChecksumError(TransientError):
    """Bytes that failed a checksum on the way (a store's transactional MD5, a chunk digest): read them again."""

    default_reason = "damaged bytes: the store's checksum failed"


class DockerError(ModelshipError):
    """The Docker engine is unreachable or refused a build, run or push."""


class BuildError(DockerError):
    """An image build failed."""
