"""Start, wait for and stop one container of the image under test, with labels for cleanup.

Kept free of pytest: plugin.py maps the errors raised here to one-line pytest errors. testcontainers does
the container plumbing; readiness, exit detection, cleanup and reaping of leftovers are done here
because testcontainers' wait strategies neither notice a dead container nor clean up without Ryuk.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import requests

from modelship.cache import pid_alive

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image
    from testcontainers.core.container import DockerContainer

LABEL_SESSION = "io.modelship.session"
LABEL_WORKER = "io.modelship.worker"
LABEL_CREATED = "io.modelship.created-at"
LABEL_PID = "io.modelship.pid"
LABEL_OWNER = "io.modelship.owner"

DEFAULT_READY_PATH = "/health/ready"
DEFAULT_MODEL_DIR = "/opt/modelship/model"
POLL_INTERVAL_S = 0.025  # 40 Hz: readiness is seen within ~25 ms, well above the 20 Hz promised
ENGINE_MODULES = (
    "pytest_modelship.cases",
    "pytest_modelship.checks",
    "docker.errors",
    "testcontainers.core.config",
    "testcontainers.core.container",
    "testcontainers.core.docker_client",
)
START_GRACE_S = 60.0  # creating + starting a container, on top of the readiness timeout
STALE_AFTER_S = 3 * 3600  # leftovers whose owner cannot be checked (other host) are reaped after this
LOG_TAIL_LINES = 50
MASK = "***"

_SECRET_NAME = re.compile(
    r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|PWD|SAS|SIG|CONNECTION_?STRING|CREDENTIAL|AUTH|COOKIE", re.IGNORECASE
)
_HEALTHCHECK_URL = re.compile(r"https?://[^/\s'\"]+(/[^\s'\"\\)]*)")


class ContainerError(Exception):
    """The container could not be started or never became ready; ``str()`` is the message shown."""


class SetupError(Exception):
    """Docker or the image is not usable: one line naming the problem and the fix."""


def is_secret_name(name: str) -> bool:
    """True for keys whose values must never be shown (API_KEY, DB_PASSWORD, AZURE_..._SAS, ...)."""
    return bool(_SECRET_NAME.search(name))


def mask_env(env: dict[str, str]) -> dict[str, str]:
    return {k: (MASK if is_secret_name(k) and v else v) for k, v in env.items()}


@dataclass
class Settings:
    """The effective plugin settings and where each came from (shown in the report header)."""

    image: str
    cases: str | None = None
    port: int | None = None
    ready_path: str | None = None
    timeout: float = 60.0
    env: dict[str, str] = field(default_factory=dict, repr=False)  # may hold secrets: never in a repr
    pull: bool = False
    sources: dict[str, str] = field(default_factory=dict)

    def secret_values(self) -> list[str]:
        return [v for k, v in self.env.items() if is_secret_name(k) and len(v) >= 3]

    def redact(self, text: str) -> str:
        """Replace the values of secret-named --modelship-env keys wherever they appear."""
        for value in sorted(self.secret_values(), key=len, reverse=True):
            text = text.replace(value, MASK)
        return text


@dataclass(frozen=True)
class ImageInfo:
    """What the plugin needs from ``docker image inspect``."""

    ref: str
    id: str
    exposed_ports: tuple[str, ...]
    healthcheck: tuple[str, ...] | None
    user: str
    env: tuple[str, ...]
    labels: dict[str, str]
    history: tuple[str, ...] | None = None  # CreatedBy of every layer; None: fetched on first use
    history_loader: Callable[[], tuple[str, ...]] | None = field(default=None, compare=False, repr=False)

    def layer_history(self) -> tuple[str, ...]:
        """The build history (one API call, made only by the checks that need it)."""
        if self.history is not None:
            return self.history
        return self.history_loader() if self.history_loader else ()

    @classmethod
    def from_image(cls, ref: str, image: Image) -> ImageInfo:
        cfg = image.attrs.get("Config") or {}

        def load_history() -> tuple[str, ...]:
            return tuple(h.get("CreatedBy") or "" for h in image.history())

        hc = cfg.get("Healthcheck") or {}
        test = tuple(hc.get("Test") or ())
        return cls(
            ref=ref,
            id=image.id,
            exposed_ports=tuple(sorted((cfg.get("ExposedPorts") or {}).keys())),
            healthcheck=test if test and test[0] != "NONE" else None,
            user=cfg.get("User") or "",
            env=tuple(cfg.get("Env") or ()),
            labels=dict(cfg.get("Labels") or {}),
            history_loader=load_history,
        )

    def env_dict(self) -> dict[str, str]:
        return dict(e.split("=", 1) if "=" in e else (e, "") for e in self.env)

    @property
    def model_dir(self) -> str:
        return self.env_dict().get("MODELSHIP_MODEL_DIR") or DEFAULT_MODEL_DIR

    def default_port(self) -> int:
        tcp = sorted({int(p.split("/")[0]) for p in self.exposed_ports if p.endswith("/tcp") or "/" not in p})
        if len(tcp) == 1:
            return tcp[0]
        if not tcp:
            raise SetupError(f"image {self.ref} exposes no TCP port: pass --modelship-port PORT")
        listed = ", ".join(str(p) for p in tcp)
        raise SetupError(f"image {self.ref} exposes several ports ({listed}): choose one with --modelship-port")

    def healthcheck_path(self) -> str | None:
        """The URL path of an HTTP HEALTHCHECK command, e.g. ``/health/ready``."""
        if not self.healthcheck:
            return None
        match = _HEALTHCHECK_URL.search(" ".join(self.healthcheck[1:]))
        return match.group(1) if match else None


def docker_location() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def preload() -> None:
    """Import the engine libraries and the plugin's own lazy modules now, in the main thread, before any
    background thread runs and before SIGTERM is turned into an interrupt.

    Otherwise the start thread imports them while the main thread imports conftests and test modules, and
    a Ctrl-C landing in the middle of those concurrent imports was seen to leave the start thread blocked
    in an import for good: a run that neither stopped nor went on. And an interrupt inside a lazy import
    that creates dataclasses ends CPython by SIGINT instead of with pytest's exit code. Imports are CPU
    work under the GIL, so doing them here first costs no wall time.
    """
    import importlib

    for name in ENGINE_MODULES:
        importlib.import_module(name)


def connect() -> docker.DockerClient:
    """A client of the engine testcontainers will use, checked with a ping."""
    try:
        from testcontainers.core.docker_client import DockerClient

        client = DockerClient().client
        client.ping()
    except Exception as e:  # noqa: BLE001 - every failure to reach the engine means the same to the user
        raise SetupError(
            f"Docker engine not reachable at {docker_location()} ({_short_reason(e)}): start the Docker "
            "daemon (e.g. 'sudo systemctl start docker') or point DOCKER_HOST at a running engine"
        ) from None
    return client


def get_image(client: docker.DockerClient, ref: str, pull: bool) -> ImageInfo:
    """Inspect the image, pulling it first when asked; one-line errors when it is missing."""
    import docker.errors

    if pull:
        repo, tag = _split_ref(ref)
        try:
            client.images.pull(repo, tag=tag)
        except docker.errors.DockerException as e:
            raise SetupError(
                f"could not pull image {ref} ({_short_reason(e)}): check the name and 'docker login'"
            ) from None
    try:
        return ImageInfo.from_image(ref, client.images.get(ref))
    except docker.errors.ImageNotFound:
        raise SetupError(
            f"image {ref} not found locally: build it first, or pass --modelship-pull to pull it"
        ) from None
    except docker.errors.DockerException as e:
        raise SetupError(f"could not inspect image {ref} ({_short_reason(e)})") from None


def _split_ref(ref: str) -> tuple[str, str | None]:
    if "@" in ref:
        return ref, None
    name, _, tag = ref.rpartition(":")
    if name and "/" not in tag:
        return name, tag
    return ref, "latest"


def _short_reason(e: BaseException) -> str:
    # docker-py nests the real cause deep inside its message; the innermost error says most.
    inner: BaseException = e
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
    text = str(inner) or type(inner).__name__
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."


# ---------------------------------------------------------------------------------------------- owners


def _proc_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # field 22 (starttime); the command name in field 2 may hold spaces, so split after it
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "-"


def owner_id(pid: int | None = None) -> str:
    """host|pid-namespace|pid|start-time: identifies a process even after its pid is reused."""
    pid = pid or os.getpid()
    return f"{socket.gethostname()}|{_pid_namespace()}|{pid}|{_proc_start_time(pid) or '-'}"


def owner_alive(owner: str) -> bool | None:
    """Whether the process that created a container still runs; None when that cannot be told here."""
    try:
        host, ns, pid_s, start = owner.split("|")
        pid = int(pid_s)
    except ValueError:
        return None
    if host != socket.gethostname() or ns != _pid_namespace():
        return None
    if start != "-":
        return _proc_start_time(pid) == start
    return pid_alive(pid)
    return True


def reap_stale(client: docker.DockerClient, now: float | None = None, stale_after: float = STALE_AFTER_S) -> list[str]:
    """Remove containers left behind by killed runs: owner process gone, or too old to be in use."""
    import docker.errors

    now = time.time() if now is None else now
    removed = []
    # the plain list call (labels included): the SDK's list would inspect each container, and one removed by
    # its own session meanwhile would fail the whole listing
    for c in client.api.containers(all=True, filters={"label": LABEL_SESSION}):
        labels = c.get("Labels") or {}
        alive = owner_alive(labels.get(LABEL_OWNER, ""))
        try:
            age = now - float(labels.get(LABEL_CREATED, "0"))
        except ValueError:
            age = float("inf")
        if alive is False or (alive is None and age > stale_after):
            try:
                client.api.remove_container(c["Id"], force=True, v=True)
                removed.append((c.get("Names") or [c["Id"][:12]])[0].lstrip("/"))
            except docker.errors.APIError:
                pass  # its own session removed it meanwhile (404), or is removing it (409)
    return removed


# ------------------------------------------------------------------------------------------ container


class ModelshipContainer:
    """A started container of the image under test: its URL, logs and files."""

    def __init__(self, tc: DockerContainer, settings: Settings, image: ImageInfo, host: str) -> None:
        self.tc = tc
        self.settings = settings
        self.image = image
        self.host = host
        self.port = int(settings.port or image.default_port())
        wrapped = tc.get_wrapped_container()
        self.id: str = wrapped.id  # type: ignore[assignment]
        self.name: str = wrapped.name  # type: ignore[assignment]
        self.started = time.monotonic()
        self.ready_after_s: float | None = None
        self.exit_code: int | None = None
        self.exited_after_s: float | None = None  # seconds after start when it first stopped
        self._exited = threading.Event()
        self._api = wrapped.client.api  # type: ignore[union-attr]
        self._watcher = threading.Thread(target=self._watch_exit, name=f"modelship-wait-{self.name}", daemon=True)
        self._watcher.start()
        try:
            self.host_port = int(self._api.port(self.id, self.port)[0]["HostPort"])
        except (TypeError, IndexError, KeyError, ValueError):
            # no mapping: the container already exited (wait_ready reports it with its logs), or the
            # app's port is not the one given
            self.host_port = 0
        self.url = f"http://{_url_host(host)}:{self.host_port}"

    @property
    def ready_url(self) -> str:
        return urljoin(self.url + "/", (self.settings.ready_path or DEFAULT_READY_PATH).lstrip("/"))

    @property
    def attrs(self) -> dict[str, Any]:
        return self._api.inspect_container(self.id)

    def _watch_exit(self) -> None:
        # Blocks in the engine until the container stops: exit is seen at once, without polling the API.
        # With a restart policy the engine starts it again, but this wait still returns on the first exit:
        # a restart is an exit the tests must hear about.
        try:
            result = self._api.wait(self.id, timeout=None)
            self.exit_code = int(result.get("StatusCode", -1))
        except Exception:  # noqa: BLE001 - removed or engine gone: either way it is not running
            self.exit_code = self.exit_code if self.exit_code is not None else -1
        self.exited_after_s = time.monotonic() - self.started
        self._exited.set()

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def wait_exited(self, timeout: float) -> bool:
        """True once the container has stopped (at least once); waits at most ``timeout`` seconds."""
        return self._exited.wait(timeout)

    def exit_report(self, logs: bool = True) -> str:
        """One line on how the container stopped after it was ready (restarts included), then its log tail."""
        state: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            info = self.attrs
            state = {**(info.get("State") or {}), "RestartCount": info.get("RestartCount", 0)}
            policy = ((info.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or ""
            state["Policy"] = policy
        after = f" {self.exited_after_s:.1f} s after start" if self.exited_after_s is not None else ""
        line = f"container {self.name} of {self.image.ref} exited with code {self.exit_code}{after}, while tests ran"
        restarts = int(state.get("RestartCount") or 0)
        if restarts or state.get("Restarting"):
            line += (
                f"; its restart policy ({state.get('Policy') or '?'}) restarted it {restarts} time(s), "
                "so later answers come from a fresh process"
            )
        return f"{line}; last log lines:\n{self.logs()}" if logs else line

    def logs(self, tail: int = LOG_TAIL_LINES) -> str:
        """The last ``tail`` lines of stdout+stderr, secrets of --modelship-env masked."""
        try:
            raw = self._api.logs(self.id, stdout=True, stderr=True, tail=tail)
        except Exception as e:  # noqa: BLE001 - logs are diagnostics; never hide the real failure
            return f"(container logs unavailable: {_short_reason(e)})"
        return self.settings.redact(raw.decode("utf-8", "replace"))

    def wait_ready(
        self,
        timeout: float,
        probe: Callable[[ModelshipContainer, str], bool | None] | None = None,
        cancel: threading.Event | None = None,
    ) -> float:
        """Poll the ready URL until a 2xx; fail at once when the container exits. Returns the seconds taken."""
        deadline = self.started + timeout
        url = self.ready_url
        last = "no answer yet"
        with requests.Session() as http:
            http.trust_env = False  # the container is local: never route the probe through a proxy
            while True:
                if self._exited.is_set():
                    self._raise_exited()
                if not self.host_port:
                    if self._exited.wait(1.0):  # an exit explains a missing mapping best
                        self._raise_exited()
                    raise ContainerError(
                        f"container port {self.port}/tcp of {self.image.ref} is not published; "
                        "check --modelship-port against the port the app listens on"
                    )
                if cancel is not None and cancel.is_set():
                    raise ContainerError("the session ended before the container was ready")
                verdict = probe(self, url) if probe else None
                if verdict is None:
                    verdict, last = _probe_http(http, url, max(0.05, min(1.0, deadline - time.monotonic())))
                elif not verdict:
                    last = "not ready (pytest_modelship_ready hook)"
                if verdict:
                    self.ready_after_s = time.monotonic() - self.started
                    return self.ready_after_s
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # one last look: an exit during the final probe explains more than a timeout does
                    if self._exited.wait(0.2):
                        self._raise_exited()
                    raise ContainerError(
                        f"container of {self.image.ref} not ready after {timeout:g} s: GET {url} last gave {last}; "
                        f"raise --modelship-timeout or fix --modelship-ready-path; last log lines:\n{self.logs()}"
                    )
                # Event.wait doubles as the poll interval and returns early when the container exits.
                self._exited.wait(min(POLL_INTERVAL_S, remaining))

    def _raise_exited(self) -> None:
        after = time.monotonic() - self.started
        raise ContainerError(
            f"container of {self.image.ref} exited with code {self.exit_code} {after:.1f} s after start, "
            f"before it was ready; last log lines:\n{self.logs()}"
        )

    def iter_files(self, path: str) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
        """Stream the files under ``path`` out of the container (docker cp): no tool needed in the image.

        Names are relative to ``path``; the reader of a member is only valid until the next one.
        """
        stream, _stat = self._api.get_archive(self.id, path)
        base = os.path.basename(path.rstrip("/"))
        with tarfile.open(fileobj=_ChunkReader(stream), mode="r|") as tar:
            for member in tar:
                name = member.name
                name = name[len(base) + 1 :] if name.startswith(base + "/") else ("" if name == base else name)
                member.name = name
                yield member, (tar.extractfile(member) if member.isfile() else None)

    def read_file(self, path: str) -> bytes:
        import docker.errors

        try:
            for _member, reader in self.iter_files(path):
                if reader is not None:
                    return reader.read()
        except docker.errors.NotFound:
            pass
        raise FileNotFoundError(path)

    def stop(self) -> None:
        import docker.errors

        try:
            self._api.remove_container(self.id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code != 409:
                raise
            # "removal already in progress": another thread of this run (the stopper, the start thread, a
            # signal-driven cleanup) is removing it. Wait for that, so nothing outlives the process.
            with contextlib.suppress(Exception):
                self._api.wait(self.id, timeout=15, condition="removed")


def _probe_http(http: requests.Session, url: str, timeout: float) -> tuple[bool, str]:
    try:
        r = http.get(url, timeout=timeout)
    except requests.RequestException as e:
        return False, type(e).__name__
    return 200 <= r.status_code < 300, f"HTTP {r.status_code}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class _ChunkReader(io.RawIOBase):
    """A file object over docker-py's chunk generator, so tarfile can stream without a temp file."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


# ------------------------------------------------------------------------------------------ lifecycle


def host_and_bind() -> tuple[str, str]:
    """The address to reach published ports at, and the host IP to publish them on."""
    override = os.environ.get("TC_HOST") or os.environ.get("TESTCONTAINERS_HOST_OVERRIDE")
    if override:
        host = override
    else:
        parts = urlsplit(docker_location())
        remote = parts.scheme in ("tcp", "http", "https", "ssh") and parts.hostname
        host = parts.hostname if remote and parts.hostname not in ("localhost", "127.0.0.1", "::1") else "127.0.0.1"
    loopback = host in ("localhost", "127.0.0.1", "::1")
    # Bind to loopback only when the engine is local: nothing else on the network can reach the app.
    return host, ("127.0.0.1" if loopback else "")


class Lifecycle:
    """Owns the one container of this process: start (in the background or on first use), cleanup by label.

    The container may be started in a background thread while pytest collects, so its boot overlaps
    collection. ``stop()`` may then race with that thread; flags checked on both sides (closed /
    creating) guarantee that a container created meanwhile is still removed.
    """

    def __init__(
        self,
        settings: Settings,
        client: docker.DockerClient,
        image: ImageInfo,
        run_id: str | None = None,
        worker: str = "main",
    ) -> None:
        self.settings = settings
        self.client = client
        self.image = image
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.worker = worker
        self.container: ModelshipContainer | None = None  # started and ready
        self.error: ContainerError | None = None  # why it could not start (re-raised, not retried)
        self.failed: ModelshipContainer | None = None  # a container that never got ready, kept for its logs
        self.notes: list[str] = []
        self._current: ModelshipContainer | None = None  # created, possibly not ready yet
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._creating = False
        self._cancel = threading.Event()

    @property
    def labels(self) -> dict[str, str]:
        return {
            LABEL_SESSION: self.run_id,
            LABEL_WORKER: self.worker,
            LABEL_CREATED: f"{time.time():.3f}",
            LABEL_PID: str(os.getpid()),
            LABEL_OWNER: owner_id(),
        }

    def prepare(self) -> DockerContainer:
        from testcontainers.core.container import DockerContainer

        port = int(self.settings.port or self.image.default_port())
        _host, bind = host_and_bind()
        # the engine's API version is known: passing it spares testcontainers' client a round trip
        version = {"version": self.client.api.api_version}
        tc = DockerContainer(self.settings.image, env=dict(self.settings.env), docker_client_kw=version)
        # docker-py takes (host_ip, None) as "random port on this address"; testcontainers passes it through
        tc.ports[f"{port}/tcp"] = (bind, None) if bind else None  # type: ignore[assignment]
        tc.with_name(f"modelship-{self.run_id}-{self.worker}")
        tc.with_kwargs(labels=self.labels)
        return tc

    def start_background(
        self, customize: Callable[..., Any] | None = None, probe: Callable[..., Any] | None = None
    ) -> None:
        """Begin starting the container in a thread; ``start()`` later joins it."""
        with self._lock:
            if self._thread is not None or self.container or self.error or self._closed:
                return
            self._thread = threading.Thread(
                target=self._start_quietly, args=(customize, probe), name="modelship-start", daemon=True
            )
            self._thread.start()

    def _start_quietly(self, customize: Any, probe: Any) -> None:
        # any failure is recorded in self.error; start() re-raises it in the first test that needs it
        with contextlib.suppress(BaseException):
            self._start_once(customize, probe)

    def start(
        self,
        customize: Callable[[DockerContainer], DockerContainer | None] | None = None,
        probe: Callable[[ModelshipContainer, str], bool | None] | None = None,
    ) -> ModelshipContainer:
        """The ready container: started now, or the background start joined. Failures are not retried."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # bounded: a start stuck in the engine must end as a failure, not as a run that never returns
            thread.join(self.settings.timeout + START_GRACE_S)
            if thread.is_alive():
                raise ContainerError(
                    f"starting a container of {self.settings.image} did not finish within "
                    f"{self.settings.timeout + START_GRACE_S:g} s (--modelship-timeout + {START_GRACE_S:g} s); "
                    "is the Docker engine overloaded?"
                )
        return self._start_once(customize, probe)

    def _start_once(self, customize: Any, probe: Any) -> ModelshipContainer:
        with self._lock:
            if self.container is not None:
                return self.container
            if self.error is not None:
                raise self.error
            try:
                self.container = self._start(customize, probe)
            except ContainerError as e:
                self.error = e
                raise
            except Exception as e:  # e.g. a failing hook in the background thread: report it once, in a test
                self.error = ContainerError(f"could not start a container of {self.settings.image}: {e!r}")
                raise self.error from e
            return self.container

    def _start(self, customize: Any, probe: Any) -> ModelshipContainer:
        import docker.errors

        tc = self.prepare()
        if customize is not None:
            tc = customize(tc) or tc
            _keep_labels(tc, self.labels)
        self._ensure_reaper()
        host, _bind = host_and_bind()
        self._creating = True
        try:
            if self._closed:
                raise ContainerError("the session ended before the container started")
            tc.start()
        except docker.errors.APIError as e:
            self._sweep()
            raise ContainerError(f"could not start a container of {self.settings.image}: {_short_reason(e)}") from None
        finally:
            self._creating = False
        container = ModelshipContainer(tc, self.settings, self.image, host)
        self._current = container
        if self._closed:  # stop() ran while the engine created it: it may have missed this one
            container.stop()
            raise ContainerError("the session ended before the container was ready")
        try:
            container.wait_ready(self.settings.timeout, probe, self._cancel)
        except ContainerError:
            self.failed = container
            raise
        return container

    def _ensure_reaper(self) -> None:
        """Start Ryuk when enabled; if it cannot run (offline CI), go on with our own cleanup."""
        from testcontainers.core.config import testcontainers_config as tc_config

        if tc_config.ryuk_disabled:
            return
        try:
            from testcontainers.core.container import Reaper

            Reaper.get_instance()
        except Exception as e:  # noqa: BLE001 - Ryuk is a safety net; its absence must not fail the run
            tc_config.ryuk_disabled = True
            self.notes.append(
                f"Ryuk could not start ({_short_reason(e)}); modelship removes its containers itself "
                "(set TESTCONTAINERS_RYUK_DISABLED=true to skip the attempt)"
            )

    def log_tail(self) -> str | None:
        c = self.container or self.failed
        return c.logs() if c is not None else None

    def stop(self) -> None:
        """Remove every container of this run and worker; safe to call repeatedly and from atexit."""
        self._closed = True
        self._cancel.set()
        if self._current is not None:
            self._current.stop()  # also ends a readiness wait in the background thread at once
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=15 if self._creating else 5)
        if self._current is not None:
            self._current.stop()
        self._sweep()
        self.container = None

    def cancel(self) -> None:
        """Undo a background start nobody needs (yet): remove its container; a later start() starts afresh."""
        self.stop()
        with self._lock:
            self._closed = False
            self._cancel = threading.Event()
            self._thread = None
            self._current = self.failed = None
            self.error = None

    def _sweep(self) -> None:
        import docker.errors

        try:
            leftovers = self.client.containers.list(
                all=True, filters={"label": [f"{LABEL_SESSION}={self.run_id}", f"{LABEL_WORKER}={self.worker}"]}
            )
            for c in leftovers:
                # NotFound, or a removal already in progress (409): one failure must not end the sweep
                with contextlib.suppress(docker.errors.APIError):
                    c.remove(force=True, v=True)
        except docker.errors.DockerException:
            pass  # the engine went away; the next session's reaper removes what is left


def _keep_labels(tc: DockerContainer, labels: dict[str, str]) -> None:
    """Put the cleanup labels back after a customising hook: ``with_kwargs`` replaces all kwargs (and a hook
    may return a container of its own), which would leave a container no sweep or reaper can find."""
    kwargs = dict(getattr(tc, "_kwargs", None) or {})
    kwargs["labels"] = {**(kwargs.get("labels") or {}), **labels}
    tc.with_kwargs(**kwargs)


# --------------------------------------------------------------------------------------------- client


class ModelshipClient(requests.Session):
    """A ``requests.Session`` bound to the container: relative URLs, a default timeout, ``predict()``."""

    def __init__(self, base_url: str, timeout: float = 30.0, predict_path: str = "/predict") -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.predict_path = predict_path
        self.trust_env = False  # local container: proxies from the environment would only get in the way

    def url(self, path: str) -> str:
        if "://" in path:
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        target = self.url(url.decode() if isinstance(url, bytes) else url)
        return super().request(method, target, *args, **kwargs)

    def predict(self, payload: Any, path: str | None = None, **kwargs: Any) -> Any:
        """POST ``payload`` as JSON to the predict path and return the decoded JSON answer."""
        r = self.post(path or self.predict_path, json=payload, **kwargs)
        if not r.ok:
            raise requests.HTTPError(f"POST {r.request.url} answered {r.status_code}: {r.text[:300]}", response=r)
        return r.json()


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
