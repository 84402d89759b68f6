"""pluggy hookspecs of the modelship library (project name "modelship").

Third-party packages add model stores by exposing a plugin module in the ``modelship`` entry-point group::

    [project.entry-points.modelship]
    gcs = "modelship_gcs"

    # modelship_gcs.py
    import modelship.hookspecs

    @modelship.hookspecs.hookimpl
    def modelship_source_schemes():
        return ["gs"]

    @modelship.hookspecs.hookimpl
    def modelship_open_source(uri, credential):
        if uri.scheme == "gs":
            return GcsSource(uri, credential)   # implements modelship.sources.Source
"""

from __future__ import annotations

from typing import Any

import pluggy

from .sources.base import Source
from .uri import ModelURI

PROJECT = "modelship"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def modelship_source_schemes() -> list[str]:
    """The URI schemes this plugin serves (for error messages and ``modelship --help``)."""


@hookspec(firstresult=True)
def modelship_open_source(uri: ModelURI, credential: Any) -> Source | None:
    """Return a Source for ``uri``, or None when the scheme is not yours."""
