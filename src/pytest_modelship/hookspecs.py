"""Hooks of the modelship pytest plugin; implement them in a conftest.py or a plugin.

Registered in ``pytest_addhooks`` (see plugin.py), like pytest-xdist's ``newhooks.py``. Examples for
each hook are in docs/plugin.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import requests
    from testcontainers.core.container import DockerContainer

    from .cases import Case
    from .container import ModelshipContainer
    from .settings import Settings


@pytest.hookspec(firstresult=True)
def pytest_modelship_container(
    config: pytest.Config, container: DockerContainer, settings: Settings
) -> DockerContainer | None:
    """Customise the container before it starts (volumes, env, command, resources...).

    ``container`` is the prepared testcontainers ``DockerContainer`` (image, env, port binding and the
    cleanup labels already set). Change it in place and return it, or return another ``DockerContainer``
    to start instead; keep the ``labels`` kwarg so the plugin can clean it up. The first non-None
    result wins; return None to leave it as it is.
    """


@pytest.hookspec(firstresult=True)
def pytest_modelship_ready(config: pytest.Config, container: ModelshipContainer, url: str) -> bool | None:
    """Replace the readiness probe: return True when ready, False when not yet, None for the default.

    Called on every poll (at least 20 times a second) until it returns True. ``url`` is the default
    probe URL (base URL + ready path). The plugin keeps the deadline and still fails at once if the
    container exits, so the probe only answers "ready now?" and must return quickly.
    """


def pytest_modelship_cases(config: pytest.Config) -> list[dict[str, Any]] | None:
    """Contribute extra smoke cases: a list of case mappings in the cases-file format.

    They are validated like the file's cases and become items under ``modelship-cases::<name>``.
    """


def pytest_modelship_check_response(
    config: pytest.Config, case: Case, response: requests.Response, latency_ms: float
) -> list[str] | str | None:
    """Add checks of a case's response: return the problems found (a string or a list), or None.

    Called for every case after the built-in expectations passed; every implementation runs and all
    problems are reported together with the request and response.
    """
