"""The plugin manager: built-in sources plus those registered in the ``modelship`` entry-point group."""

from __future__ import annotations

import functools
from typing import Any

import pluggy

from . import hookspecs
from .errors import UsageError
from .sources.base import Source
from .uri import ModelURI, parse


class BuiltinSources:
    """The stores modelship ships; imported lazily so an unused SDK costs nothing."""

    @hookspecs.hookimpl
    def modelship_source_schemes(self) -> list[str]:
        return ["az", "s3", "file", "https", "http"]

    @hookspecs.hookimpl(trylast=True)
    def modelship_open_source(self, uri: ModelURI, credential: Any) -> Source | None:
        if uri.scheme == "az":
            from .sources.azure_blob import AzureBlobSource

            return AzureBlobSource(uri, credential)
        if uri.scheme == "s3":
            from .sources.s3 import S3Source

            return S3Source(uri, credential)
        if uri.scheme == "file":
            from .sources.local import LocalSource

            return LocalSource(uri, credential)
        if uri.scheme in ("https", "http"):
            from .sources.http import HttpSource

            return HttpSource(uri, credential)
        return None


@functools.lru_cache(maxsize=1)
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(BuiltinSources(), name="builtin-sources")
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    return pm


def open_source(uri: str | ModelURI, credential: Any = None) -> Source:
    """The Source serving ``uri`` (a string is parsed first)."""
    parsed = parse(uri) if isinstance(uri, str) else uri
    pm = plugin_manager()
    source = pm.hook.modelship_open_source(uri=parsed, credential=credential)
    if source is None:
        schemes = sorted({s for group in pm.hook.modelship_source_schemes() for s in group})
        raise UsageError(
            f"unknown model URI scheme {parsed.scheme!r} in {parsed.display!r}; "
            f"known: {', '.join(s + '://' for s in schemes)} (or install a plugin)"
        )
    return source
