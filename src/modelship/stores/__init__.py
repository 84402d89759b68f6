"""Model stores behind one small protocol (``base.Source``), chosen by URI scheme from one table.

The table has MLflow's ``artifact_repository_registry`` shape: scheme → store factory, each scheme declared
once, with the kind of repository (``modelship.repos``) that keeps versions on that store: folders
(``PREFIX/<version>/``, the default, also for the schemes plugins add) or model images (``oci://``). Built-in
stores are named ``"module:Class"`` so that an unused SDK is never imported. Plugins in the ``modelship``
entry-point group extend the table through the ``modelship_stores`` hook and may wrap or replace any store
through ``modelship_open_source`` (see modelship.hookspecs).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

import pluggy

from .. import hookspecs
from ..errors import UsageError
from ..uri import ModelURI, parse
from .base import Login, RemoteFile, Source, StoreFactory

FOLDERS = "modelship.repos.folder:FolderRepository"  # versions as PREFIX/<version>/ over any Source


class StoreRegistry:
    """Scheme → store factory; ``open`` turns a parsed URI into an open store."""

    def __init__(self) -> None:
        self._factories: dict[str, StoreFactory] = {}
        self._repositories: dict[str, str] = {}

    def register(self, scheme: str, factory: StoreFactory, repository: str = FOLDERS) -> None:
        """``repository``: "module:Class" of the repository kind over this scheme's store (a class taking it)."""
        self._factories[scheme.lower()] = factory
        self._repositories[scheme.lower()] = repository

    def repository(self, scheme: str) -> Callable[[Any], Any]:
        """The repository class for ``scheme``'s store (folders for any scheme not declared otherwise)."""
        module, _, attr = self._repositories.get(scheme.lower(), FOLDERS).partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]

    def factories(self) -> dict[str, StoreFactory]:
        """Built-in schemes, then those plugins add (a plugin's entry for a built-in scheme replaces it)."""
        table = dict(self._factories)
        for added in reversed(plugin_manager().hook.modelship_stores()):  # pluggy calls the last registered first
            table.update({scheme.lower(): factory for scheme, factory in added.items()})
        return table

    def open(self, uri: ModelURI, credential: Any = None) -> Source:
        override = plugin_manager().hook.modelship_open_source(uri=uri, credential=credential)
        if override is not None:
            return override
        table = self.factories()
        factory = table.get(uri.scheme)
        if factory is None:
            raise UsageError(
                f"unknown model URI scheme {uri.scheme!r} in {uri.display!r}; "
                f"known: {', '.join(s + '://' for s in sorted(table))} (or install a plugin)"
            )
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        if isinstance(credential, Login) and not getattr(factory, "takes_login", False):
            raise UsageError(
                f"--username/--password-stdin are for registries (oci://); {uri.scheme}:// stores take their "
                "credential from the environment or the URI"
            )
        return factory(uri, credential)


registry = StoreRegistry()
registry.register("az", "modelship.stores.azure_blob:AzureBlobSource")
registry.register("s3", "modelship.stores.s3:S3Source")
registry.register("file", "modelship.stores.local:LocalSource")
registry.register("https", "modelship.stores.http:HttpSource")
registry.register("http", "modelship.stores.http:HttpSource")
registry.register("oci", "modelship.stores.oci:OciStore", "modelship.repos.oci:OciRepository")


@functools.lru_cache(maxsize=1)
def plugin_manager() -> pluggy.PluginManager:
    """The pluggy manager of modelship's hooks, with the ``modelship`` entry-point plugins loaded."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    return pm


def open_source(uri: str | ModelURI, credential: Any = None) -> Source:
    """The store serving ``uri`` (a string is parsed first)."""
    return registry.open(parse(uri) if isinstance(uri, str) else uri, credential)


__all__ = [
    "FOLDERS",
    "Login",
    "RemoteFile",
    "Source",
    "StoreFactory",
    "StoreRegistry",
    "open_source",
    "plugin_manager",
    "registry",
]
