"""The run: one pytest process (one xdist worker) from start-up to cleanup, registered only with an image.

``ModelshipRun`` (a plugin object, as pytest-xdist's ``DSession``) resolves the settings, inspects the image
and boots the container in the background while pytest collects, adds the cases and checks to the
collection and hands the container to the items and fixtures; at the end it removes the containers. Its
parts: ``pool.ContainerPool`` (the containers), ``report.ModelshipReporter`` (header, log tails, summary: a
plugin object of its own), ``signals.SignalGuard`` (SIGTERM as Ctrl-C, exit status 130/143).
"""

from __future__ import annotations

import atexit
import gc
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .pool import ContainerPool, needs_container
from .report import ModelshipReporter
from .settings import Settings, fill_from_image, resolve_settings
from .signals import SignalGuard

if TYPE_CHECKING:
    from .client import ModelshipClient
    from .container import Lifecycle, ModelshipContainer
    from .gate import Baseline
    from .images import ImageInfo
    from .modelimage import ModelVolume
    from .verdict import Verdict

# imported by preload(): the engine libraries and the plugin's own modules that are imported lazily
ENGINE_MODULES = (
    "pytest_modelship.cases",
    "pytest_modelship.checks",
    "pytest_modelship.client",
    "pytest_modelship.compare",
    "pytest_modelship.container",
    "pytest_modelship.gate",
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
        self.session: pytest.Session | None = None
        self._nodeid: str | None = None  # the item running now
        self._signature_at_start: tuple[Any, ...] | None = None
        self._prep_thread: threading.Thread | None = None
        self._prepared = threading.Event()
        self._setup_error: str | None = None
        self._closing = False
        self._stopper: threading.Thread | None = None
        self._client: ModelshipClient | None = None
        self._client_lock = threading.Lock()
        self.model: ModelVolume | None = None  # --modelship-model-image, unpacked into a volume
        self.baseline: Baseline | None = None  # --modelship-baseline: the compare sections' other container
        self.verdict: Verdict | None = None  # --modelship-attest-key: the run's test-result, attested at the end
        workerinput = getattr(config, "workerinput", None)
        self.worker = workerinput["workerid"] if workerinput else "main"
        self.is_worker = workerinput is not None
        self.run_id = ((workerinput or {}).get("testrunuid") or uuid.uuid4().hex)[:12]
        self.pool = ContainerPool(config, self.run_id, self.worker)
        self.signals = SignalGuard(closing=lambda: self._closing)
        self.reporter = ModelshipReporter(self.pool)
        config.pluginmanager.register(self.reporter, "modelship-report")

    @property
    def lifecycle(self) -> Lifecycle | None:
        """The lifecycle of the run's container (None until the image is prepared)."""
        return self.pool.main

    # -------------------------------------------------------------------------------- session start

    def begin(self) -> None:
        """Resolve the options now; inspect the image and boot the container in the background.

        Docker work is mostly waiting for the engine, so it overlaps pytest's own start-up and
        collection. Not for --collect-only, nor in an xdist controller (workers start their own).
        """
        self.settings = resolve_settings(self.config)
        if self.settings.attest_key:
            from .verdict import Verdict

            self.verdict = Verdict(self, self.settings.attest_key)
            self.config.pluginmanager.register(self.verdict, "modelship-verdict")
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
        self.signals.install()
        if starts:
            self._signature_at_start = self.pool.hook_signature()
            self._prep_thread = threading.Thread(
                target=self._prepare, args=(True,), name="modelship-prepare", daemon=True
            )
            self._prep_thread.start()

    def _prepare(self, boot: bool = False) -> None:
        """Connect, reap leftovers, inspect the image, fill the defaults; then maybe start the container."""
        from .container import connect
        from .errors import SetupError
        from .images import get_image
        from .reaper import reap_stale

        settings = self.settings
        assert settings is not None
        try:
            client = connect()
            self.image = get_image(client, settings.image, settings.pull)
            fill_from_image(settings, self.image)
            if self.verdict is not None:  # a tag resolved to its digest, before any container starts
                self.verdict.pin(client, self.image)
            if settings.model_image and not self._closing:
                from . import modelimage
                from .reaper import container_labels

                labels = container_labels(self.run_id, self.worker)
                self.model = modelimage.prepare(client, settings.model_image, settings.pull, labels)
                self.image = modelimage.with_model(self.image, self.model)
                if self.verdict is not None:  # the model image's digest: the verdict's second subject
                    self.verdict.pin_model(client, self.model)
            lifecycle = self.pool.open(settings, client, self.image, self.model)
            if boot and not self._closing:
                lifecycle.start_background(*self.pool.hooks())
            if settings.baseline and boot and not self._closing:  # booting while the candidate boots
                from .gate import open_baseline

                self.baseline = open_baseline(self, client)
            if not self.is_worker:  # the controller reaps once; workers would only race each other
                self.reporter.reaped = self._reap(client, reap_stale)  # while our own container boots
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
            self.reporter.warnings.append(f"could not look for containers left by killed runs: {e!r}")
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
        self.signals.install()

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

        checks = ImageChecks.from_parent(session, name="modelship-image", nodeid="modelship-image", run=self)
        if self.settings and self.settings.verify_keys:
            from .signature import signature_check

            checks.extra = (signature_check(self.settings.verify_keys),)
        nodes: list[pytest.Collector] = [checks]
        if self.settings and self.settings.cases:
            path = Path(self.settings.cases)
            # outside the rootdir pytest cannot derive a node id; a relative path keeps -k/--deselect usable
            nodeid = Path(os.path.relpath(path, self.config.rootpath)).as_posix()
            nodes.append(CasesFile.from_parent(session, path=path, nodeid=nodeid, run=self))
        if self.config.pluginmanager.hook.pytest_modelship_cases.get_hookimpls():
            nodes.append(HookCases.from_parent(session, name="modelship-cases", nodeid="modelship-cases", run=self))
        return nodes

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.lifecycle is None or self._signature_at_start is None:
            return
        from .gate import GateItem

        unused = not any(needs_container(item) for item in session.items)
        # a conftest.py met during collection may bring container/readiness hooks the early start missed
        stale = self.pool.hook_signature() != self._signature_at_start
        if unused or stale:
            self.lifecycle.cancel()  # starts afresh, with every hook, if a test asks for it after all
        baseline = self.baseline.lifecycle if self.baseline is not None else None
        if baseline is not None and (stale or not any(isinstance(item, GateItem) for item in session.items)):
            baseline.cancel()  # no compare section selected: no baseline container (or afresh, as above)

    # ------------------------------------------------------------------------- what the items see

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self._nodeid = nodeid

    def container(self, settings: Settings | None = None) -> ModelshipContainer:
        """The started, ready container (see ``ContainerPool.container``); fails the running test if none."""
        return self.pool.container(settings, self._nodeid)

    def client(self) -> ModelshipClient:
        from .client import ModelshipClient

        with self._client_lock:
            if self._client is None:
                self._client = ModelshipClient(self.container().url)
            return self._client

    def redact(self, text: str) -> str:
        return self.settings.redact(text) if self.settings else text

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
            self._stopper = threading.Thread(target=self.pool.stop_all, name="modelship-stop", daemon=True)
            self._stopper.start()

    def _cleanup(self) -> None:
        self._closing = True
        for thread in (self._prep_thread, self._stopper):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=30)  # the first may be about to create the container
        if self._client is not None:
            self._client.close()
            self._client = None
        self.pool.stop_all()
        if self.model is not None and self.lifecycle is not None:  # after the containers that mount it
            from . import modelimage

            modelimage.remove(self.lifecycle.client, self.model.volume)
        if self.baseline is not None and self.baseline.model is not None and self.lifecycle is not None:
            from . import modelimage

            modelimage.remove(self.lifecycle.client, self.baseline.model.volume)
        # only now: the cleanup above runs with the signals still handled
        self.signals.settle(self.session or self.config.pluginmanager.get_plugin("session"))
