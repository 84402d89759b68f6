"""The images the pytest plugin's tests run (test_plugin_lifecycle.py and test_plugin_config.py share them)."""

from __future__ import annotations

import pytest

from support.plugin_images import alias, build_image, remove_image


@pytest.fixture(scope="session")
def good_image(docker_client, base_image):
    tag = build_image(docker_client, base_image)
    yield tag
    remove_image(docker_client, tag)


@pytest.fixture
def own_tag(docker_client, good_image):
    with alias(docker_client, good_image, "modelship-plugin-test") as ref:
        yield ref
