"""Start and stop the one container of the image under test (testcontainers does the plumbing).

``ModelshipContainer`` is a started container: URL, logs, files, and an exit notice from the engine.
``Lifecycle`` owns it for the run: a start in the background while pytest collects, cleanup by label.
Kept free of pytest: the session maps the errors raised here to one-line pytest errors.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from modelship._docker import docker_host, short_reason

from .errors import ContainerError, SetupError
from .reaper import container_labels, remove_late, remove_run
from .settings import DEFAULT_READY_PATH
from .waiting import PROBE_USER_AGENT, wait_ready

if TYPE_CHECKING:
    import docker
    from testcontainers.core.container import DockerContainer

    from .images import ImageInfo
    from .modelimage import ModelVolume
    from .settings import Settings

START_GRACE_S = 60.0  # creating + starting a container, on top of the readiness timeout
LOG_TAIL_LINES = 50
_PROBE_MARK = PROBE_USER_AGENT.split("/")[0] + "/"  # any version: a line of the plugin's own readiness probe
MAX_LOG_LINES = 20_000  # read at most this many lines to find the last LOG_TAIL_LINES that are not probes


def connect() -> docker.DockerClient:
    """A client of the engine testcontainers will use, checked with a ping."""
    from modelship._docker import connect as ping_engine
    from modelship.errors import DockerError

    def testcontainers_client() -> docker.DockerClient:
        from testcontainers.core.docker_client import DockerClient

        return DockerClient().client

    try:
        return ping_engine(testcontainers_client)
    except DockerError as e:  # the one wording of an unreachable engine, as a setup error of the run
        raise SetupError(str(e)) from None


class ModelshipContainer:
    """A started container of the image under test: its URL, logs and files."""

    def __init__(self, tc: DockerContainer, settings: Settings, image: ImageInfo, host: str) -> None:
        self.tc = tc
        self.settings = settings
        self.image = image
        self.host = host
        self.port = int(settings.port or image.default_port())
        self.port_source = settings.sources.get("port", "image EXPOSE")
        self.ready_path = settings.ready_path or DEFAULT_READY_PATH
        self.ready_path_source = settings.sources.get("ready_path", "default")
        self.probes = 0  # readiness requests sent by wait_ready
        wrapped = tc.get_wrapped_container()
        self.id: str = wrapped.id  # type: ignore[assignment]
        self.name: str = wrapped.name  # type: ignore[assignment]
        self.started = time.monotonic()
        self.ready_after_s: float | None = None
        self.exit_code: int | None = None
        self.exited_after_s: float | None = None  # seconds after start when it first stopped
        self._exited = threading.Event()
        self._api = wrapped.client.api  # type: ignore[union-attr]
        self._created: str = (wrapped.attrs or {}).get("Created") or ""  # type: ignore[union-attr]
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
        return urljoin(self.url + "/", self.ready_path.lstrip("/"))

    def redact(self, text: str) -> str:
        """``text`` with the values of secret-named --modelship-env keys masked."""
        return self.settings.redact(text)

    @property
    def attrs(self) -> dict[str, Any]:
        return self._api.inspect_container(self.id)

    def _watch_exit(self) -> None:
        # Blocks in the engine until the container stops: exit is seen at once, without polling the API.
        # With a restart policy the engine starts it again, but the first "die" still ends this watch: a
        # restart is an exit the tests must hear about.
        try:
            self.exit_code = self._first_exit()
        except Exception:  # noqa: BLE001 - removed or engine gone: either way it is not running
            self.exit_code = self.exit_code if self.exit_code is not None else -1
        self.exited_after_s = time.monotonic() - self.started
        self._exited.set()

    def _first_exit(self) -> int:
        """The exit code of the container's first stop, from the engine's "die" event.

        Not from the wait API alone: under a restart policy its answer can come after the engine restarted
        the app, and then it was seen to give the new process's 0 instead of the code the app died with.
        The events are read from the container's creation on (the engine's clock), so a die before this
        watch began is not missed; the wait API stays the fallback when the events cannot be read.
        """
        since = _engine_seconds(self._created)
        if since is None:
            return int(self._api.wait(self.id, timeout=None).get("StatusCode", -1))
        filters = {"container": [self.id], "event": ["die", "destroy"]}
        events = self._api.events(since=since - 1, filters=filters, decode=True)
        try:
            for event in events:
                if (event.get("Action") or event.get("status")) == "die":
                    return int(((event.get("Actor") or {}).get("Attributes") or {}).get("exitCode", -1))
                return -1  # destroyed without a die of its own: removed, not exited
        finally:
            events.close()
        return -1  # the stream ended: the engine is gone

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def wait_exited(self, timeout: float) -> bool:
        """True once the container has stopped (at least once); waits at most ``timeout`` seconds."""
        return self._exited.wait(timeout)

    def exit_report(self) -> str:
        """One line on how the container stopped after it was ready (restarts included)."""
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
        return line

    def logs(self, tail: int = LOG_TAIL_LINES) -> str:
        """The last ``tail`` lines of stdout+stderr, secrets of --modelship-env masked."""
        try:
            raw = self._api.logs(self.id, stdout=True, stderr=True, tail=tail)
        except Exception as e:  # noqa: BLE001 - logs are diagnostics; never hide the real failure
            return f"(container logs unavailable: {short_reason(e)})"
        return self.settings.redact(raw.decode("utf-8", "replace"))

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the app's log for a report: the readiness probes' access lines left out.

        A never-ready app would otherwise show nothing but 40 probe lines a second, and its own last words
        (``model not loaded: ...``) would be pushed out of the tail. A line is a probe's when it carries the
        probes' User-Agent (gunicorn's access log, for one, can log it), or names GET and the ready path, in any
        access-log format: ``"GET /health/ready HTTP/1.1" 503`` (the stdlib, uvicorn, werkzeug), gunicorn's
        ``"GET /health/ready" 503`` without the protocol, a JSON line with ``"method": "GET"`` and the path.
        """
        raw = self.logs(tail=min(MAX_LOG_LINES, lines + 2 * self.probes))
        probe = _probe_line(self.ready_path)
        kept = [line for line in raw.splitlines() if _PROBE_MARK not in line and not probe(line)]
        dropped = len(raw.splitlines()) - len(kept)
        tail = "\n".join(kept[-lines:])
        if not dropped:
            return tail
        note = f"({dropped} access-log line(s) of GET {self.ready_path} left out)"
        return f"{note}\n{tail}" if tail else note

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


def _probe_line(ready_path: str) -> Callable[[str], bool]:
    """Whether a log line is an access-log line of GET ``ready_path`` (the path as a whole, a query allowed)."""
    path = re.compile(rf"(?<![\w/.~-]){re.escape(ready_path)}(?:\?[^\s\"']*)?(?![\w/.~-])")
    get = re.compile(r"\bGET\b")
    return lambda line: bool(path.search(line) and get.search(line))


def _engine_seconds(timestamp: str) -> int | None:
    """An engine timestamp (``2026-01-02T03:04:05.123456789Z``) as Unix seconds, None if it is not one."""
    from datetime import datetime, timezone

    try:
        return int(datetime.strptime(timestamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp())
    except ValueError:
        return None


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


def host_and_bind() -> tuple[str, str]:
    """The address to reach published ports at, and the host IP to publish them on."""
    override = os.environ.get("TC_HOST") or os.environ.get("TESTCONTAINERS_HOST_OVERRIDE")
    if override:
        host = override
    else:
        parts = urlsplit(docker_host())
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
        model: ModelVolume | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.image = image
        self.model = model  # --modelship-model-image: its volume, mounted read-only at the model dir
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
        self._create_unanswered = False  # a create request sent, its answer not read
        self._cancel = threading.Event()

    @property
    def labels(self) -> dict[str, str]:
        return container_labels(self.run_id, self.worker)

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
        if self.model is not None:
            tc.with_volume_mapping(self.model.volume, self.image.model_dir, "ro")
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
        self._track_create(tc)
        self._creating = True
        try:
            if self._closed:
                raise ContainerError("the session ended before the container started")
            tc.start()
        except docker.errors.APIError as e:
            remove_run(self.client, self.run_id, self.worker)
            raise ContainerError(f"could not start a container of {self.settings.image}: {short_reason(e)}") from None
        finally:
            self._creating = False
        container = ModelshipContainer(tc, self.settings, self.image, host)
        self._current = container
        if self._closed:  # stop() ran while the engine created it: it may have missed this one
            container.stop()
            raise ContainerError("the session ended before the container was ready")
        try:
            wait_ready(container, self.settings.timeout, probe, self._cancel)
        except ContainerError:
            self.failed = container
            raise
        return container

    def _track_create(self, tc: DockerContainer) -> None:
        """Note a create request in flight: interrupted before its answer, the engine creates it all the same."""
        api = tc.get_docker_client().client.api
        create = api.create_container

        def create_container(*args: Any, **kwargs: Any) -> Any:
            self._create_unanswered = True
            answer = create(*args, **kwargs)
            self._create_unanswered = False
            return answer

        api.create_container = create_container

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
                f"Ryuk could not start ({short_reason(e)}); modelship removes its containers itself "
                "(set TESTCONTAINERS_RYUK_DISABLED=true to skip the attempt)"
            )

    def log_tail(self) -> str | None:
        """The report's log tail (probes left out) of the container started or the one that never got ready."""
        c = self.container or self.failed
        return c.log_tail() if c is not None else None

    @property
    def started_name(self) -> str | None:
        c = self.container or self.failed
        return c.name if c is not None else None

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
        remove_run(self.client, self.run_id, self.worker)
        if self._create_unanswered and not (thread is not None and thread.is_alive()):
            # interrupted while the engine created it (in this thread: no join above waited for it)
            remove_late(self.client, self.run_id, self.worker)
            self._create_unanswered = False
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


def _keep_labels(tc: DockerContainer, labels: dict[str, str]) -> None:
    """Put the cleanup labels back after a customising hook: ``with_kwargs`` replaces all kwargs (and a hook
    may return a container of its own), which would leave a container no sweep or reaper can find."""
    kwargs = dict(getattr(tc, "_kwargs", None) or {})
    kwargs["labels"] = {**(kwargs.get("labels") or {}), **labels}
    tc.with_kwargs(**kwargs)
