"""The run: one container per pytest process (per xdist worker), from start-up to cleanup.

``ModelshipRun`` is registered as a plugin object only when an image is given (as pytest-xdist's
``DSession``): it resolves the settings, inspects the image and boots the container in the background
while pytest collects, turns SIGTERM into Ctrl-C so the container is always removed, hands the
container to the items and fixtures, attaches its logs to failures and prints the latency summary.
Those are the stages of one object's life, which is why this module is longer than the others.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import signal
import statistics
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .redact import mask_env
from .settings import DEFAULT_READY_PATH, Settings, resolve_settings

if TYPE_CHECKING:
    from .client import ModelshipClient
    from .container import Lifecycle, ModelshipContainer
    from .images import ImageInfo
    from .modelimage import ModelVolume

READY_PROPERTY = "modelship_ready_s"
# after a request that got no answer, how long the engine may take to report the app's exit (seconds; it
# takes milliseconds on an idle machine, more on a loaded CI agent); a wrong answer waits for nothing
EXIT_NOTICE_S = 3.0
CONTAINER_PROPERTY = "modelship_container"
FIXTURES = frozenset({"modelship_container", "modelship_url", "modelship_client"})
# imported by preload(): the engine libraries and the plugin's own modules that are imported lazily
ENGINE_MODULES = (
    "pytest_modelship.cases",
    "pytest_modelship.checks",
    "pytest_modelship.client",
    "pytest_modelship.container",
    "pytest_modelship.images",
    "pytest_modelship.modelimage",
    "pytest_modelship.reaper",
    "docker.errors",
    "docker.utils",
    "testcontainers.core.config",
    "testcontainers.core.container",
    "testcontainers.core.docker_client",
)


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


class ModelshipRun:
    """The plugin's state for one pytest process (one per xdist worker), registered only with an image."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings: Settings | None = None
        self.image: ImageInfo = None  # type: ignore[assignment]  # set in sessionstart
        self.lifecycle: Lifecycle | None = None
        self.session: pytest.Session | None = None
        self.latencies: list[tuple[str, str, float]] = []  # (case, outcome, ms)
        self.ready: list[tuple[float, str]] = []  # (seconds to ready, "worker name url") per container
        self._ready_reported = False
        self._logs_attached: set[str] = set()  # items whose report got the log tail (or points to one that did)
        # per lifecycle (id): the item whose report first said the container is down, and that one-line reason
        self._down: dict[int, tuple[str, str]] = {}
        self._nodeid: str | None = None  # the item running now
        self._signature_at_start: tuple[Any, ...] | None = None
        self.warnings: list[str] = []
        self._prep_thread: threading.Thread | None = None
        self._prepared = threading.Event()
        self._setup_error: str | None = None
        self._closing = False
        self._stopper: threading.Thread | None = None
        self._client: ModelshipClient | None = None
        self._client_lock = threading.Lock()
        self._old_handlers: dict[int, Any] = {}
        self.interrupted_by: int | None = None  # SIGINT or SIGTERM: exit status 128 + it, not pytest's 2
        self.reaped: list[str] = []
        self._own: dict[tuple[Any, ...], Lifecycle] = {}  # containers of overridden config fixtures
        self.model: ModelVolume | None = None  # --modelship-model-image, unpacked into a volume
        workerinput = getattr(config, "workerinput", None)
        self.worker = workerinput["workerid"] if workerinput else "main"
        self.is_worker = workerinput is not None
        self.run_id = (workerinput or {}).get("testrunuid") or uuid.uuid4().hex
        self.run_id = self.run_id[:12]

    # -------------------------------------------------------------------------------- session start

    def begin(self) -> None:
        """Resolve the options now; inspect the image and boot the container in the background.

        Docker work is mostly waiting for the engine, so it overlaps pytest's own start-up and
        collection. Not for --collect-only, nor in an xdist controller (workers start their own).
        """
        self.settings = resolve_settings(self.config)
        # Registered this early, the final cleanup runs after pytest's own (garbage collection passes),
        # which overlap the container's removal started at sessionfinish.
        self.config.add_cleanup(self._cleanup)
        # The interpreter's last garbage collection at exit walks every object pytest, docker and requests
        # made: ~0.1 s, a tenth of a smoke run. Python does not promise finalizers at exit anyway (data model,
        # object.__del__), files and reports are closed by then, and at exit nothing is left to reclaim memory for.
        atexit.register(gc.freeze)
        controller = not self.is_worker and getattr(self.config.option, "dist", "no") != "no"
        starts = not (self.config.option.collectonly or controller)
        if starts:
            preload()  # before any thread starts and before SIGTERM is handled: see preload()
        # before the background start below: a SIGTERM during collection must also remove the container
        self._install_signals()
        if starts:
            self._signature_at_start = self._hook_signature()
            self._prep_thread = threading.Thread(
                target=self._prepare, args=(True,), name="modelship-prepare", daemon=True
            )
            self._prep_thread.start()

    def _prepare(self, boot: bool = False) -> None:
        """Connect, reap leftovers, inspect the image, fill the defaults; then maybe start the container."""
        from .container import Lifecycle, connect
        from .errors import SetupError
        from .images import get_image
        from .reaper import reap_stale

        settings = self.settings
        assert settings is not None
        try:
            client = connect()
            self.image = get_image(client, settings.image, settings.pull)
            _fill_from_image(settings, self.image)
            if settings.model_image and not self._closing:
                from . import modelimage
                from .reaper import container_labels

                labels = container_labels(self.run_id, self.worker)
                self.model = modelimage.prepare(client, settings.model_image, settings.pull, labels)
                self.image = modelimage.with_model(self.image, self.model)
            self.lifecycle = Lifecycle(
                settings, client, self.image, run_id=self.run_id, worker=self.worker, model=self.model
            )
            if boot and not self._closing:
                self.lifecycle.start_background(*self._hooks())
            if not self.is_worker:  # the controller reaps once; workers would only race each other
                self.reaped = self._reap(client, reap_stale)  # while our own container boots
        except SetupError as e:
            self._setup_error = f"modelship: {e}"
        except Exception as e:  # noqa: BLE001 - reported as one line in the main thread, not lost in this one
            self._setup_error = f"modelship: could not prepare the image {settings.image}: {e!r}"
        finally:
            # set only after the background start began, so collection_finish can still cancel it
            self._prepared.set()

    def _reap(self, client: Any, reap_stale: Any) -> list[str]:
        import time

        from . import modelimage

        try:
            return [*reap_stale(client), *modelimage.reap_stale(client, time.time())]
        except Exception as e:  # noqa: BLE001 - best effort: leftovers must not fail this run
            self.warnings.append(f"could not look for containers left by killed runs: {e!r}")
            return []

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session
        if self.settings is None:
            self.settings = resolve_settings(self.config)
            self.config.add_cleanup(self._cleanup)
        if self._prep_thread is None:
            self._prepare()
        else:
            self._prepared.wait()
        if self._setup_error:
            raise pytest.UsageError(self._setup_error)
        assert self.lifecycle is not None
        atexit.register(self.lifecycle.stop)  # last resort, e.g. an exception escaping pytest itself
        self._install_signals()

    def _install_signals(self) -> None:
        # SIGTERM (CI cancel, docker stop) would kill pytest without any cleanup: turn it into Ctrl-C. Both
        # are noted, so the run ends with the shell's 130 / 143 instead of pytest's 2 for any interruption.
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
            try:
                if signum not in self._old_handlers and signal.getsignal(signum) is default:
                    self._old_handlers[signum] = signal.signal(signum, self._on_signal)
            except (ValueError, OSError):
                pass

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGTERM and self._closing:
            return  # cleanup is under way: a repeated SIGTERM must not cut it short (Ctrl-C still does)
        self.interrupted_by = self.interrupted_by or signum
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def _restore_signals(self) -> None:
        for signum, old in self._old_handlers.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signum, old)
        self._old_handlers.clear()

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        s = self.settings
        if s is None:
            return []
        src = s.sources

        def line(label: str, value: Any, key: str) -> str:
            return f"modelship {label}: {value} (from {src.get(key, 'default')})"

        lines = [line("image", f"{s.image} [{self.image.id[7:19]}]", "image")]
        lines.append(line("cases", s.cases or "none", "cases"))
        lines.append(line("port", s.port, "port"))
        lines.append(line("ready path", s.ready_path, "ready_path"))
        lines.append(line("timeout", f"{s.timeout:g} s", "timeout"))
        if s.env:
            shown = " ".join(f"{k}={v}" for k, v in mask_env(s.env).items())
            lines.append(line("env", shown, "env"))
        if self.image.pulled and not s.pull:  # a digest that was not local: pulled without being asked to
            lines.append(f"modelship pull: yes ({self.image.pulled})")
        else:
            lines.append(line("pull", "yes" if s.pull else "no", "pull"))
        if self.model is not None:
            mounted = f"{s.model_image} [{self.model.image_id[7:19]}] read-only at {self.image.model_dir}"
            lines.append(line("model image", mounted, "model_image"))
        if self.reaped:
            lines.append(f"modelship: removed {len(self.reaped)} container(s) left by killed runs")
        return lines

    # ------------------------------------------------------------------------------------- collection

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Iterator[Any]:
        report = yield
        if isinstance(collector, pytest.Session) and report.passed and self.settings is not None:
            report.result[:0] = self._collectors(collector)
        return report

    def _collectors(self, session: pytest.Session) -> list[pytest.Collector]:
        from .cases import CasesFile, HookCases
        from .checks import ImageChecks

        nodes: list[pytest.Collector] = [
            ImageChecks.from_parent(session, name="modelship-image", nodeid="modelship-image", run=self)
        ]
        if self.settings and self.settings.cases:
            path = Path(self.settings.cases)
            # outside the rootdir pytest cannot derive a node id; a relative path keeps -k/--deselect usable
            nodeid = Path(os.path.relpath(path, self.config.rootpath)).as_posix()
            nodes.append(CasesFile.from_parent(session, path=path, nodeid=nodeid, run=self))
        if self.config.pluginmanager.hook.pytest_modelship_cases.get_hookimpls():
            nodes.append(HookCases.from_parent(session, name="modelship-cases", nodeid="modelship-cases", run=self))
        return nodes

    # -------------------------------------------------------------------------------------- container

    def _hooks(self, settings: Settings | None = None) -> tuple[Any, Any]:
        """The container-customising and readiness hooks as plain callables for container.py."""
        hook = self.config.hook
        probe = None
        if self.config.pluginmanager.hook.pytest_modelship_ready.get_hookimpls():

            def probe(c: ModelshipContainer, url: str) -> bool | None:
                return hook.pytest_modelship_ready(config=self.config, container=c, url=url)

        def customize(tc: Any) -> Any:
            return hook.pytest_modelship_container(config=self.config, container=tc, settings=settings or self.settings)

        return customize, probe

    def _hook_signature(self) -> tuple[Any, ...]:
        hooks = self.config.pluginmanager.hook
        return tuple(
            impl.function
            for h in (hooks.pytest_modelship_container, hooks.pytest_modelship_ready)
            for impl in h.get_hookimpls()
        )

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.lifecycle is None or self._signature_at_start is None:
            return
        unused = not any(self._needs_container(item) for item in session.items)
        # a conftest.py met during collection may bring container/readiness hooks the early start missed
        if unused or self._hook_signature() != self._signature_at_start:
            self.lifecycle.cancel()  # starts afresh, with every hook, if a test asks for it after all

    @staticmethod
    def _needs_container(item: pytest.Item) -> bool:
        from .cases import CaseItem
        from .checks import CheckItem

        if isinstance(item, CaseItem) or (isinstance(item, CheckItem) and item.check.needs_container):
            return True
        return bool(FIXTURES & set(getattr(item, "fixturenames", ())))

    def container(self, settings: Settings | None = None) -> ModelshipContainer:
        """The started, ready container; starts it on first use. Fails the test in one clear message.

        ``settings`` other than the run's (from overridden config fixtures) get a container of their own.
        Once the container is down (never ready, or exited), every later test that needs it fails at once,
        naming the first report, which holds the details and the log tail: each item is still reported
        (in the JUnit XML too), and none waits for a dead app.
        """
        from .errors import ContainerError

        lifecycle = self._lifecycle_for(settings)
        down = self._down.get(id(lifecycle))
        if down is not None:
            first, reason = down
            if self._nodeid is not None:
                self._logs_attached.add(self._nodeid)  # the log tail is in the first report
            pytest.fail(f"modelship: container not running: {reason} (details and log: {first})", pytrace=False)
        try:
            c = lifecycle.start(*self._hooks(lifecycle.settings))
        except ContainerError as e:
            reason = str(e)
        else:
            if not c.exited:
                return c
            # it stopped after it was ready (crash, OOM kill, restart policy): fail at once, never wait
            reason = c.exit_report()  # the log tail goes into the report (pytest_runtest_makereport)
        self._down[id(lifecycle)] = (self._nodeid or "the first test that needed it", reason)
        pytest.fail(f"modelship: {reason}", pytrace=False)  # outside the except: no "during handling..." chain

    def client(self) -> ModelshipClient:
        from .client import ModelshipClient

        with self._client_lock:
            if self._client is None:
                self._client = ModelshipClient(self.container().url)
            return self._client

    def _lifecycle_for(self, settings: Settings | None) -> Lifecycle:
        """The run's lifecycle, or for other settings one of their own (started on first use, kept per settings)."""
        assert self.lifecycle is not None and self.settings is not None
        if settings is None or _container_key(settings) == _container_key(self.settings):
            return self.lifecycle
        key = _container_key(settings)
        if key not in self._own:
            from .container import Lifecycle
            from .errors import SetupError
            from .images import get_image

            settings = replace(settings, env=dict(settings.env), sources=dict(settings.sources))
            problem = None
            try:
                same = settings.image == self.settings.image
                image = self.image if same else get_image(self.lifecycle.client, settings.image, settings.pull)
                _fill_from_image(settings, image)
            except SetupError as e:
                problem = f"modelship: {e}"
            if problem is not None:
                pytest.fail(problem, pytrace=False)  # outside the except: no "during handling..." chain
            # a worker name of its own: each lifecycle's cleanup removes its containers by worker label
            worker = f"{self.worker}-{len(self._own) + 1}"
            lifecycle = Lifecycle(
                settings, self.lifecycle.client, image, run_id=self.run_id, worker=worker, model=self.model
            )
            atexit.register(lifecycle.stop)
            self._own[key] = lifecycle
        return self._own[key]

    def _lifecycle_of(self, item: pytest.Item) -> Lifecycle | None:
        """The lifecycle of the container ``item`` got (the run's unless config fixtures are overridden)."""
        if not self._own:
            return self.lifecycle
        got = (getattr(item, "funcargs", None) or {}).get("modelship_container")
        for lifecycle in (self.lifecycle, *self._own.values()):
            if lifecycle is not None and got is not None and lifecycle.container is got:
                return lifecycle
        # a test whose container fixture failed cannot tell which container it was; the failure has its log tail
        return None if FIXTURES & set(getattr(item, "fixturenames", ())) else self.lifecycle

    def _stop_all(self) -> None:
        for lifecycle in (self.lifecycle, *self._own.values()):
            if lifecycle is not None:
                lifecycle.stop()

    def redact(self, text: str) -> str:
        return self.settings.redact(text) if self.settings else text

    # -------------------------------------------------------------------------------------- reporting

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self._nodeid = nodeid

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
        report = yield
        lc = self._lifecycle_of(item)
        if lc is not None and report.failed and call.when in ("setup", "call") and self._needs_container(item):
            c = lc.container
            # a request failing because the app just died: give the engine's exit notice a moment to arrive
            wait = EXIT_NOTICE_S if _request_failed(call) else 0.0
            if c is not None and call.when == "call" and id(lc) not in self._down and c.wait_exited(wait):
                reason = c.exit_report()
                self._down[id(lc)] = (item.nodeid, reason)
                _add_note(report, f"modelship: {reason}")
            if item.nodeid not in self._logs_attached:
                self._logs_attached.add(item.nodeid)
                tail = lc.log_tail()
                if tail is not None:
                    # in the failure text itself: the JUnit XML carries it in <failure>/<error> without any
                    # junit_logging setting, and passing tests get no (empty) section at all
                    _add_section(report, f"modelship container log: {lc.started_name}", tail)
        c = self.lifecycle.container if self.lifecycle is not None else None  # the summary names the run's
        if c is not None and c.ready_after_s is not None and not self._ready_reported:
            # once per process; under xdist the report carries it to the controller's summary
            self._ready_reported = True
            report.user_properties.append((READY_PROPERTY, round(c.ready_after_s, 3)))
            report.user_properties.append((CONTAINER_PROPERTY, f"{self.worker} {c.name} {c.url}"))
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from .cases import CASE_PROPERTY, LATENCY_PROPERTY

        props = dict(report.user_properties)
        if report.when == "call" and LATENCY_PROPERTY in props:
            self.latencies.append((str(props.get(CASE_PROPERTY)), report.outcome, float(props[LATENCY_PROPERTY])))
        if READY_PROPERTY in props:
            self.ready.append((float(props[READY_PROPERTY]), str(props.get(CONTAINER_PROPERTY, ""))))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        notes = [*self.warnings, *(self.lifecycle.notes if self.lifecycle else [])]
        if self.settings is None or not (self.latencies or self.ready or notes):
            return
        tr = terminalreporter
        tr.write_sep("=", "modelship")
        for took, where in self.ready:
            worker, _, rest = where.partition(" ")
            name, _, url = rest.partition(" ")
            tr.write_line(f"image {self.settings.image}: container {name} ({worker}) at {url} ready after {took:.2f} s")
        if self.latencies:
            width = max(len(name) for name, _, _ in self.latencies)
            for name, outcome, ms in self.latencies:
                tr.write_line(f"  {name:<{width}}  {outcome:<7} {ms:8.1f} ms")
            values = [ms for _, _, ms in self.latencies]
            tr.write_line(
                f"latency over {len(values)} case(s): p50 {percentile(values, 50):.1f} ms, "
                f"p95 {percentile(values, 95):.1f} ms, max {max(values):.1f} ms"
            )
        for note in notes:
            tr.write_line(f"note: {note}")

    # ---------------------------------------------------------------------------------------- cleanup

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # Removing a container takes the engine ~0.1-0.2 s: let it run while pytest writes its summary.
        # pytest_unconfigure waits for it and sweeps again, so nothing outlives the process.
        self._closing = True
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.lifecycle is not None and self._stopper is None:
            self._stopper = threading.Thread(target=self._stop_all, name="modelship-stop", daemon=True)
            self._stopper.start()

    def _cleanup(self) -> None:
        self._closing = True
        for thread in (self._prep_thread, self._stopper):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=30)  # the first may be about to create the container
        if self._client is not None:
            self._client.close()
            self._client = None
        self._stop_all()
        if self.model is not None and self.lifecycle is not None:  # after the containers that mount it
            from . import modelimage

            modelimage.remove(self.lifecycle.client, self.model.volume)
        if self.interrupted_by is not None:
            # pytest reports any interruption as 2; a run ended by a signal keeps the conventional 128 + signal
            session = self.session or self.config.pluginmanager.get_plugin("session")
            if session is not None and session.exitstatus == pytest.ExitCode.INTERRUPTED:
                session.exitstatus = 128 + self.interrupted_by
            # CPython remembers a KeyboardInterrupt that escaped an exec() of a string (dataclasses create
            # their methods that way, in any lazy import) and then ends the process by SIGINT instead of
            # with this exit status; the next exec() of a string clears that memory.
            exec("pass")  # noqa: S102
        self._restore_signals()  # only now: the cleanup above runs with the signals still handled


def _request_failed(call: pytest.CallInfo[None]) -> bool:
    """Whether the test failed for want of any answer from the app (a smoke case's or the client's request)."""
    if call.excinfo is None:
        return False
    import requests

    no_answer = (requests.ConnectionError, requests.Timeout)  # not HTTPError: that app answered
    return bool(getattr(call.excinfo.value, "request_failed", False)) or call.excinfo.errisinstance(no_answer)


def _add_note(report: pytest.TestReport, note: str) -> None:
    """Put ``note`` at the top of a failure report, whatever shape its longrepr has."""
    longrepr = report.longrepr
    if isinstance(longrepr, str):
        report.longrepr = f"{note}\n{longrepr}"
    else:
        _add_section(report, "modelship container", note)


def _add_section(report: pytest.TestReport, title: str, text: str) -> None:
    """Append a titled section to the failure text (what the terminal shows and JUnit's <failure> holds)."""
    longrepr = report.longrepr
    if isinstance(longrepr, str):
        report.longrepr = f"{longrepr}\n{f' {title} '.center(80, '-')}\n{text}"
    elif hasattr(longrepr, "addsection"):
        longrepr.addsection(title, text)  # type: ignore[union-attr]
    else:
        report.sections.append((title, text))


def percentile(values: list[float], p: float) -> float:
    """Linear-interpolated percentile (the 'inclusive' method), exact for small samples too."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if p < 100 else max(values)


def _fill_from_image(settings: Settings, image: ImageInfo) -> None:
    """The defaults that come from the image: its single EXPOSEd port, its HEALTHCHECK's path."""
    if settings.port is None:
        settings.port = image.default_port()
        settings.sources["port"] = "image EXPOSE"
    if settings.ready_path is None:
        from_hc = image.healthcheck_path()
        settings.ready_path = from_hc or DEFAULT_READY_PATH
        settings.sources["ready_path"] = "image HEALTHCHECK" if from_hc else "default"


def _container_key(s: Settings) -> tuple[Any, ...]:
    """What tells two containers apart (the cases file and the sources do not)."""
    return (s.image, s.port, s.ready_path, s.timeout, s.pull, s.model_image, tuple(sorted(s.env.items())))
