"""The app image from wheels, no engine: ``build(..., builder="registry")`` writes it straight into a registry
(``build_in_registry``, given what ``modelship.image``'s ``build`` resolved for both builders).

Modules, one job each: ``base`` (the base image read from its registry: platform, config, what its files say),
``deps`` (the dependencies layer: the app user and /opt/venv with the wheels installed by ``installer``),
``tree`` (a folder as deterministic layer entries), ``imageconfig`` (the config the engine path's Dockerfile
would give), and ``_build`` (the plan and its write through the one image writer, ``modelship.oci.write``).
"""

from __future__ import annotations

from ._build import AppImage, AppLayer, build_in_registry

__all__ = ["AppImage", "AppLayer", "build_in_registry"]
