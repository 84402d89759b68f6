"""pytest plugin: ``pytest --modelship-image IMAGE`` starts the image and proves it serves correct answers.

Hooks and fixtures only, like pytest-xdist's and pytest-httpserver's plugin modules: the options live in
settings.py, the run in session.py (its containers in pool.py, its reports in report.py, its signals in
signals.py). Without an image the plugin only adds its options and fixtures: nothing is imported, started
or collected. Heavy imports (docker, testcontainers, requests) happen only when an image is given.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from .settings import Settings, add_options, image_given

if TYPE_CHECKING:
    from .client import ModelshipClient
    from .container import ModelshipContainer
    from .session import ModelshipRun

_RUN = pytest.StashKey["ModelshipRun"]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "modelship: the plugin's smoke cases and image checks (select with -m modelship)"
    )
    if not image_given(config):
        return  # no image: nothing registered, nothing imported, nothing started
    from .session import ModelshipRun

    run = ModelshipRun(config)
    config.stash[_RUN] = run
    config.pluginmanager.register(run, "modelship-run")
    if not config.option.help:
        run.begin()


def _run(config: pytest.Config) -> ModelshipRun:
    run = config.stash.get(_RUN, None)
    if run is None or run.lifecycle is None:
        pytest.fail("modelship: no image to test: pass --modelship-image IMAGE (or set MODELSHIP_IMAGE)", pytrace=False)
    return run


# ------------------------------------------------------------------------------------------ fixtures
# The configuration is offered as fixtures a conftest.py can override (pytest-httpserver's
# httpserver_listen_address pattern); not overridden, the fixtures share the run's one container.


@pytest.fixture(scope="session")
def modelship_settings(pytestconfig: pytest.Config) -> Settings:
    """The effective settings (options, then the image's defaults); override to start the container differently."""
    settings = _run(pytestconfig).settings
    assert settings is not None
    return replace(settings, env=dict(settings.env), sources=dict(settings.sources))


@pytest.fixture(scope="session")
def modelship_env(modelship_settings: Settings) -> dict[str, str]:
    """The container's environment (``--modelship-env``); override to add values known only at run time."""
    return dict(modelship_settings.env)


@pytest.fixture(scope="session")
def modelship_container(
    pytestconfig: pytest.Config, modelship_settings: Settings, modelship_env: Mapping[str, str]
) -> ModelshipContainer:
    """The running, ready container of ``--modelship-image`` (one per session / xdist worker)."""
    if not isinstance(modelship_settings, Settings):
        got = type(modelship_settings).__name__
        pytest.fail(f"modelship: the modelship_settings fixture returned a {got}, not a Settings", pytrace=False)
    if not isinstance(modelship_env, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in modelship_env.items()
    ):
        pytest.fail("modelship: the modelship_env fixture must return a mapping of names to strings", pytrace=False)
    return _run(pytestconfig).container(replace(modelship_settings, env=dict(modelship_env)))


@pytest.fixture(scope="session")
def modelship_url(modelship_container: ModelshipContainer) -> str:
    """Base URL of the app in the container, e.g. ``http://127.0.0.1:32768``."""
    return modelship_container.url


@pytest.fixture
def modelship_client(modelship_url: str) -> Iterator[ModelshipClient]:
    """A ``requests.Session`` on the container: relative paths, 30 s default timeout, ``predict(payload)``."""
    from .client import ModelshipClient

    with ModelshipClient(modelship_url) as client:
        yield client
