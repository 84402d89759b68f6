"""Every user-facing failure is a ModelshipError: one clear line, and an exit code for the CLI."""

from __future__ import annotations


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
    """Bytes that are not what they should be: size, checksum or ETag mismatch."""


class TransientError(ModelshipError):
    """A network fault worth retrying (reset, timeout, 5xx)."""


class StallError(TransientError):
    """A read that got no bytes within the read timeout: the connection went silent (retried like any other)."""

    def __init__(self, what: str, store: str):
        self.what, self.store = what, store
        super().__init__(f"{what}: no bytes from {store} within the read timeout")


class ChecksumError(TransientError):
    """Bytes that failed a checksum on the way (a store's transactional MD5, a chunk digest): read them again."""


class DockerError(ModelshipError):
    """The Docker engine is unreachable or refused a build, run or push."""


class BuildError(DockerError):
    """An image build failed."""
