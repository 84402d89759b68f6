"""Readiness: poll the ready URL until a 2xx, and fail AT ONCE when the container exits meanwhile.

testcontainers' wait strategies keep polling a container that has died until their timeout; here the
engine's exit notice (``wait_exited``, set by a thread blocked in the engine's wait API) ends the wait
the moment it happens, with the exit code. The log tail is attached by the session to the report of the
test that met the failure (see ``container.ModelshipContainer.log_tail``).

Probes carry ``User-Agent: modelship-probe/<version>``, so their lines can be told from the app's own in
its access log and left out of the log tail of a report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, Protocol, TypeVar

import requests

from modelship import __version__

from .errors import ContainerError

if TYPE_CHECKING:
    from .images import ImageInfo

POLL_INTERVAL_S = 0.025  # 40 Hz: readiness is seen within ~25 ms, well above the 20 Hz promised
PROBE_USER_AGENT = f"modelship-probe/{__version__}"


class Waitable(Protocol):
    """What readiness needs of a started container (``container.ModelshipContainer`` is one)."""

    image: ImageInfo
    port: int
    port_source: str  # where the port came from, e.g. "--modelship-port" or "image EXPOSE"
    host_port: int
    started: float
    exit_code: int | None
    ready_after_s: float | None
    probes: int  # readiness requests sent: how many access-log lines the probes may have left

    @property
    def ready_url(self) -> str: ...

    @property
    def exited(self) -> bool: ...

    def wait_exited(self, timeout: float) -> bool: ...


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
    answered = False  # any answer at all: without one, nothing listens on the port (or not yet)
    with requests.Session() as http:
        http.trust_env = False  # the container is local: never route the probe through a proxy
        http.headers["User-Agent"] = PROBE_USER_AGENT
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
                container.probes += 1
                verdict, last = _probe_http(http, url, max(0.05, min(1.0, deadline - time.monotonic())))
                # a read timeout means something accepted the request and kept it: not "nothing answers"
                answered = answered or last.startswith("HTTP ") or last == "ReadTimeout"
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
                head = f"container of {container.image.ref} not ready after {timeout:g} s"
                if container.probes and not answered:  # every default probe ended without an answer
                    raise ContainerError(f"{head}: {_nothing_answers(container)}")
                raise ContainerError(
                    f"{head}: GET {url} last gave {last}; raise --modelship-timeout or fix --modelship-ready-path"
                )
            # the exit notice doubles as the poll interval and returns early when the container exits
            container.wait_exited(min(POLL_INTERVAL_S, remaining))


def _raise_exited(container: Waitable) -> NoReturn:
    after = time.monotonic() - container.started
    raise ContainerError(
        f"container of {container.image.ref} exited with code {container.exit_code} {after:.1f} s after start, "
        "before it was ready"
    )


def _nothing_answers(container: Waitable) -> str:
    """Why no probe got any HTTP answer, naming the port, where it came from and what the image declares."""
    port, source = container.port, container.port_source
    declared = container.image.declared_ports()
    what = f"nothing answers on container port {port} ({source})"
    if declared and port not in declared:
        return f"{what}; the image {container.image.describe_ports()}: fix --modelship-port"
    return (
        f"{what}: the app listens on another port or is still starting; "
        "pass --modelship-port PORT, or raise --modelship-timeout"
    )


def _probe_http(http: requests.Session, url: str, timeout: float) -> tuple[bool, str]:
    try:
        r = http.get(url, timeout=timeout)
    except requests.RequestException as e:
        return False, type(e).__name__
    return 200 <= r.status_code < 300, f"HTTP {r.status_code}"
