"""Readiness: poll the ready URL until a 2xx, and fail AT ONCE when the container exits meanwhile.

testcontainers' wait strategies keep polling a container that has died until their timeout; here the
engine's exit notice (``wait_exited``, set by a thread blocked in the engine's wait API) ends the wait
the moment it happens, with the exit code. The log tail is attached by the session to the report of the
test that met the failure (see ``container.ModelshipContainer.log_tail``).

Probes carry ``User-Agent: modelship-probe/<version>``, so their lines can be told from the app's own in
its access log and left out of the log tail of a report. A never-ready app is reported by what it last
answered: a 5xx is the app's own "not ready" (its body and its log say why), a 404 means the ready path is
wrong.
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
PROBE_TIMEOUT_S = 1.0  # a probe's read timeout (less for the last one, cut at the deadline)
BODY_LIMIT = 300  # characters of the last answer's body in a never-ready report


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
    ready_path: str
    ready_path_source: str  # where the ready path came from, e.g. "image HEALTHCHECK" or "default"

    @property
    def ready_url(self) -> str: ...

    def redact(self, text: str) -> str: ...

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
    last, body = "no answer yet", ""
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
                left = deadline - time.monotonic()
                cut = left < PROBE_TIMEOUT_S  # the last probe gets only what is left
                verdict, seen, seen_body = _probe_http(http, url, max(0.05, min(PROBE_TIMEOUT_S, left)))
                # a read timeout means something accepted the request and kept it: not "nothing answers"
                answered = answered or seen.startswith("HTTP ") or seen == "ReadTimeout"
                if not (cut and seen == "ReadTimeout" and last.startswith("HTTP ")):  # keep the app's last answer
                    last, body = seen, seen_body
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
                seen = f"{head}: GET {url} last gave {last}; {_advice(container, last)}"
                raise ContainerError(f"{seen}; its last answer: {container.redact(body)}" if body else seen)
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


def _advice(container: Waitable, last: str) -> str:
    """What to do about a ready path that never gave a 2xx, by what it last gave."""
    status = int(last[5:]) if last.startswith("HTTP ") and last[5:].isdigit() else None
    if status is not None and status >= 500:
        return (
            "the app answers but is not ready (a 5xx is the app's own failure, not a wrong path): "
            "its log below says why; raise --modelship-timeout only if it needs longer to load"
        )
    if status in (404, 405, 410):
        return f"the app has no {container.ready_path} (from {container.ready_path_source}): fix --modelship-ready-path"
    return "raise --modelship-timeout or fix --modelship-ready-path"


def _probe_http(http: requests.Session, url: str, timeout: float) -> tuple[bool, str, str]:
    """Whether the ready URL answered 2xx, what it gave (``HTTP 503``, an exception's name), the body if not."""
    try:
        r = http.get(url, timeout=timeout)
    except requests.RequestException as e:
        return False, type(e).__name__, ""
    ok = 200 <= r.status_code < 300
    body = "" if ok else " ".join(r.text.split())
    if len(body) > BODY_LIMIT:
        body = body[: BODY_LIMIT - 3] + "..."
    return ok, f"HTTP {r.status_code}", body
