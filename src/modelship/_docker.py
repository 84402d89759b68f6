"""The one Docker-engine helper of the packaging code (``modelship.image``) and the pytest plugin.

Where the engine is (``docker_host``), a pinged connection (``connect``, ``engine``), an engine failure as
one short line (``short_reason``) and the engine's image of a name, if it has one (``local_image``). Kept free
of docker-py at import time: ``import modelship`` and the plugin's start stay fast, the SDK loads on the first
connection.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .errors import DockerError
from .uri import redact

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image

REASON_LIMIT = 160  # characters of a reason inside a one-line message


def docker_host() -> str:
    """The engine docker-py talks to: ``DOCKER_HOST``, else the local socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def short_reason(e: BaseException) -> str:
    """An engine failure as one short line without secrets.

    The engine's own words (docker-py's ``explanation``) when it answered; otherwise the innermost cause,
    because docker-py and requests wrap the real reason (a missing socket, a reset) several layers deep.
    """
    inner: BaseException = e
    while getattr(inner, "explanation", None) is None and (inner.__cause__ or inner.__context__) is not None:
        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
    text = str(getattr(inner, "explanation", None) or inner) or type(inner).__name__
    text = " ".join(redact(text).split())
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 3] + "..."


def local_image(client: docker.DockerClient, ref: str, failed: Callable[[str], Exception]) -> Image | None:
    """The engine's image ``ref``; None when it has none. Another engine failure raises ``failed(reason)``."""
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as e:
        raise failed(short_reason(e)) from None


def unreachable(e: BaseException | None = None) -> DockerError:
    """The one-line error for an engine that cannot be reached (``e``: why, when known)."""
    why = f" ({short_reason(e)})" if e is not None else ""
    return DockerError(
        f"Docker engine not reachable at {docker_host()}{why}: start the Docker daemon "
        "(e.g. 'sudo systemctl start docker') or point DOCKER_HOST at a running engine"
    )


def connect(make: Callable[[], docker.DockerClient] | None = None) -> docker.DockerClient:
    """A docker client (``make()``, default ``docker.from_env()``) checked with a ping; DockerError if unreachable."""
    import docker

    try:
        client = (make or docker.from_env)()
        client.ping()
    except Exception as e:  # noqa: BLE001 - every failure to reach the engine means the same to the user
        raise unreachable(e) from None
    return client


@contextlib.contextmanager
def engine(client: docker.DockerClient | None = None) -> Iterator[docker.DockerClient]:
    """The given docker client, or one from the environment (closed afterwards); DockerError if unreachable."""
    if client is not None:
        yield client
        return
    own = connect()
    try:
        yield own
    finally:
        own.close()
