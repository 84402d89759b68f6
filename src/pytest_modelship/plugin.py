"""pytest plugin: ``pytest --modelship-image IMAGE`` starts the image and proves it serves correct answers.

Hooks and fixtures only, like pytest-xdist's and pytest-httpserver's plugin modules: the options live in
settings.py, the run (one container per session, signals, summary) in session.py. Without an image the
plugin only adds its options and fixtures: nothing is imported, started or collected. Heavy imports
(docker, testcontainers, requests) happen only when an image is given.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .settings import add_options, image_given

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


@pytest.fixture(scope="session")
def modelship_container(pytestconfig: pytest.Config) -> ModelshipContainer:
    """The running, ready container of ``--modelship-image`` (one per session / xdist worker)."""
    return _run(pytestconfig).container()


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
