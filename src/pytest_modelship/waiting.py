"""Readiness: poll the ready URL until a 2xx, and fail AT ONCE when the container exits meanwhile.

testcontainers' wait strategies keep polling a container that has died until their timeout; here the
engine's exit notice (``wait_exited``, set by a thread blocked in the engine's wait API) ends the wait
the moment it happens, with the exit code and the log tail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, Protocol, TypeVar

import requests

from .errors import ContainerError

if TYPE_CHECKING:
    from .images import ImageInfo

POLL_INTERVAL_S = 0.025  # 40 Hz: readiness is seen within ~25 ms, well above the 20 Hz promised


class Waitable(Protocol):
    """What readiness needs of a started container (``container.ModelshipContainer`` is one)."""

    image: ImageInfo
    port: int
    host_port: int
    started: float
    exit_code: int | None
    ready_after_s: float | None

    @property
    def ready_url(self) -> str: ...

    @property
    def exited(self) -> bool: ...

    def wait_exited(self, timeout: float) -> bool: ...

    def logs(self) -> str: ...


W = TypeVar("W", bound=Waitable)


def wait_ready(
    container: W,
    timeout: float,
    probe: Callable[[W, str], bool | None] | None = None,
    cancel: threading.Event | None = None,
) -> float:
    """Poll the ready URL until a 2xx; fail at once when the container exits. Returns the seconds taken."""
    deadline = container.started + timeout
    url = container.ready_url
    last = "no answer yet"
    with requests.Session() as http:
        http.trust_env = False  # the container is local: never route the probe through a proxy
        while True:
            if container.exited:
                _raise_exited(container)
            if not container.host_port:
                if container.wait_exited(1.0):  # an exit explains a missing mapping best
                    _raise_exited(container)
                raise ContainerError(
                    f"container port {container.port}/tcp of {container.image.ref} is not published; "
                    "check --modelship-port against the port the app listens on"
                )
            if cancel is not None and cancel.is_set():
                raise ContainerError("the session ended before the container was ready")
            verdict = probe(container, url) if probe else None
            if verdict is None:
                verdict, last = _probe_http(http, url, max(0.05, min(1.0, deadline - time.monotonic())))
            elif not verdict:
                last = "not ready (pytest_modelship_ready hook)"
            if verdict:
                container.ready_after_s = time.monotonic() - container.started
                return container.ready_after_s
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # one last look: an exit during the final probe explains more than a timeout does
                if container.wait_exited(0.2):
                    _raise_exited(container)
                raise ContainerError(
                    f"container of {container.image.ref} not ready after {timeout:g} s: GET {url} last gave {last}; "
                    f"raise --modelship-timeout or fix --modelship-ready-path; last log lines:\n{container.logs()}"
                )
            # the exit notice doubles as the poll interval and returns early when the container exits
            container.wait_exited(min(POLL_INTERVAL_S, remaining))


def _raise_exited(container: Waitable) -> NoReturn:
    after = time.monotonic() - container.started
    raise ContainerError(
        f"container of {container.image.ref} exited with code {container.exit_code} {after:.1f} s after start, "
        f"before it was ready; last log lines:\n{container.logs()}"
    )


def _probe_http(http: requests.Session, url: str, timeout: float) -> tuple[bool, str]:
    try:
        r = http.get(url, timeout=timeout)
    except requests.RequestException as e:
        return False, type(e).__name__
    return 200 <= r.status_code < 300, f"HTTP {r.status_code}"
