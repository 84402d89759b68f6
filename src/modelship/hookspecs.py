"""pluggy hookspecs of the modelship library (project name "modelship").

Third-party packages add model stores by exposing a plugin module in the ``modelship`` entry-point group;
a scheme is declared once, in the store table that ``modelship_stores`` extends::

    [project.entry-points.modelship]
    gcs = "modelship_gcs"

    # modelship_gcs.py
    import modelship.hookspecs

    @modelship.hookspecs.hookimpl
    def modelship_stores():
        return {"gs": "modelship_gcs.store:GcsSource"}   # or the class; implements modelship.stores.Source
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .stores.base import Source, StoreFactory
    from .uri import ModelURI

PROJECT = "modelship"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def modelship_stores() -> dict[str, StoreFactory]:
    """Schemes this plugin serves → a store factory (called with the parsed URI and the credential), or
    ``"module:attribute"`` naming one, imported on first use."""


@hookspec(firstresult=True)
def modelship_open_source(uri: ModelURI, credential: Any) -> Source | None:
    """Return a store for ``uri`` ahead of the scheme table (to wrap or replace one), or None to leave it."""
