"""The run's containers: one for the run's settings, and one per other settings a conftest.py asks for.

Overridden config fixtures (``modelship_settings``, ``modelship_env``) get a container of their own, started
on first use and kept per settings. The pool also remembers which containers are down (never ready, or
exited while tests ran) and which item first said so: every later item that needs a down container fails
at once, naming that first report, which holds the details and the log tail.
"""

from __future__ import annotations

import atexit
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from .settings import Settings, fill_from_image

if TYPE_CHECKING:
    import docker

    from .container import Lifecycle, ModelshipContainer
    from .images import ImageInfo
    from .modelimage import ModelVolume

FIXTURES = frozenset({"modelship_container", "modelship_url", "modelship_client"})


def needs_container(item: pytest.Item) -> bool:
    """Whether ``item`` uses the container: a smoke case, a check that reads it, or a test with its fixtures."""
    from .cases import CaseItem
    from .checks import CheckItem
    from .gate import GateItem

    if isinstance(item, (CaseItem, GateItem)) or (isinstance(item, CheckItem) and item.check.needs_container):
        return True
    return bool(FIXTURES & set(getattr(item, "fixturenames", ())))


class ContainerPool:
    """The lifecycles of one pytest process: the run's (``main``) and one per other settings."""

    def __init__(self, config: pytest.Config, run_id: str, worker: str) -> None:
        self.config = config
        self.run_id = run_id
        self.worker = worker
        self.main: Lifecycle | None = None
        self._own: dict[tuple[Any, ...], Lifecycle] = {}  # containers of overridden config fixtures
        # per lifecycle (id): the item whose report first said the container is down, and that one-line reason
        self._down: dict[int, tuple[str, str]] = {}
        self.referred: set[str] = set()  # items failed by pointing at that first report (which has the log tail)

    def open(
        self, settings: Settings, client: docker.DockerClient, image: ImageInfo, model: ModelVolume | None
    ) -> Lifecycle:
        """The run's lifecycle (not started yet)."""
        from .container import Lifecycle

        self.main = Lifecycle(settings, client, image, run_id=self.run_id, worker=self.worker, model=model)
        return self.main

    def add(self, settings: Settings, image: ImageInfo, model: ModelVolume | None, worker: str) -> Lifecycle:
        """A lifecycle with an image prepared by the caller (the gate's baseline), not started; the caller
        starts it, ``stop_all`` removes its container."""
        from .container import Lifecycle

        assert self.main is not None
        lifecycle = Lifecycle(settings, self.main.client, image, run_id=self.run_id, worker=worker, model=model)
        atexit.register(lifecycle.stop)
        self._own[(worker, *container_key(settings))] = lifecycle  # its own even for the run's settings
        return lifecycle

    def lifecycles(self) -> list[Lifecycle]:
        return [lc for lc in (self.main, *self._own.values()) if lc is not None]

    # ------------------------------------------------------------------------------------------- hooks

    def hooks(self, settings: Settings | None = None) -> tuple[Any, Any]:
        """The container-customising and readiness hooks as plain callables for container.py."""
        config = self.config
        hook = config.hook
        probe = None
        if config.pluginmanager.hook.pytest_modelship_ready.get_hookimpls():

            def probe(c: ModelshipContainer, url: str) -> bool | None:
                return hook.pytest_modelship_ready(config=config, container=c, url=url)

        run_settings = self.main.settings if self.main is not None else None

        def customize(tc: Any) -> Any:
            return hook.pytest_modelship_container(config=config, container=tc, settings=settings or run_settings)

        return customize, probe

    def hook_signature(self) -> tuple[Any, ...]:
        """The implementations of the container hooks now (a conftest.py met later may add some)."""
        hooks = self.config.pluginmanager.hook
        return tuple(
            impl.function
            for h in (hooks.pytest_modelship_container, hooks.pytest_modelship_ready)
            for impl in h.get_hookimpls()
        )

    # --------------------------------------------------------------------------------------- containers

    def container(self, settings: Settings | None, nodeid: str | None) -> ModelshipContainer:
        """The started, ready container; starts it on first use. Fails the test ``nodeid`` in one clear message.

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
            if nodeid is not None:
                self.referred.add(nodeid)  # the log tail is in the first report
            pytest.fail(f"modelship: container not running: {reason} (details and log: {first})", pytrace=False)
        try:
            c = lifecycle.start(*self.hooks(lifecycle.settings))
        except ContainerError as e:
            reason = str(e)
        else:
            if not c.exited:
                return c
            # it stopped after it was ready (crash, OOM kill, restart policy): fail at once, never wait
            reason = c.exit_report()  # the log tail goes into the report (report.py)
        self.mark_down(lifecycle, nodeid or "the first test that needed it", reason)
        pytest.fail(f"modelship: {reason}", pytrace=False)  # outside the except: no "during handling..." chain

    def is_down(self, lifecycle: Lifecycle) -> bool:
        return id(lifecycle) in self._down

    def mark_down(self, lifecycle: Lifecycle, nodeid: str, reason: str) -> None:
        """Note that ``lifecycle``'s container is down, first reported by ``nodeid``."""
        self._down[id(lifecycle)] = (nodeid, reason)

    def _lifecycle_for(self, settings: Settings | None) -> Lifecycle:
        """The run's lifecycle, or for other settings one of their own (started on first use, kept per settings)."""
        main = self.main
        assert main is not None
        if settings is None or container_key(settings) == container_key(main.settings):
            return main
        key = container_key(settings)
        if key not in self._own:
            from .container import Lifecycle
            from .errors import SetupError
            from .images import get_image

            settings = replace(settings, env=dict(settings.env), sources=dict(settings.sources))
            problem = None
            try:
                same = settings.image == main.settings.image
                image = main.image if same else get_image(main.client, settings.image, settings.pull)
                fill_from_image(settings, image)
            except SetupError as e:
                problem = f"modelship: {e}"
            if problem is not None:
                pytest.fail(problem, pytrace=False)  # outside the except: no "during handling..." chain
            # a worker name of its own: each lifecycle's cleanup removes its containers by worker label
            worker = f"{self.worker}-{len(self._own) + 1}"
            lifecycle = Lifecycle(settings, main.client, image, run_id=self.run_id, worker=worker, model=main.model)
            atexit.register(lifecycle.stop)
            self._own[key] = lifecycle
        return self._own[key]

    def lifecycle_of(self, item: pytest.Item) -> Lifecycle | None:
        """The lifecycle of the container ``item`` got (the run's unless config fixtures are overridden)."""
        if not self._own:
            return self.main
        got = (getattr(item, "funcargs", None) or {}).get("modelship_container")
        for lifecycle in self.lifecycles():
            if got is not None and lifecycle.container is got:
                return lifecycle
        # a test whose container fixture failed cannot tell which container it was; the failure has its log tail
        return None if FIXTURES & set(getattr(item, "fixturenames", ())) else self.main

    def stop_all(self) -> None:
        for lifecycle in self.lifecycles():
            lifecycle.stop()


def container_key(s: Settings) -> tuple[Any, ...]:
    """What tells two containers apart (the cases file and the sources do not)."""
    return (s.image, s.port, s.ready_path, s.timeout, s.pull, s.model_image, tuple(sorted(s.env.items())))
