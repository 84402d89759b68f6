"""modelship: resolve the latest model, fetch it verified, package app + model into an image, push it."""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from .errors import ModelshipError
from .logs import protect_library_loggers
from .manifest import FileEntry, Lock, Manifest, Resolution

if TYPE_CHECKING:
    from .build import BuiltImage, build, inspect, push
    from .fetch import fetch, lock, resolve
    from .oci.assemble import assemble, promote
    from .publish import publish

__version__ = "0.1.0"

# Loaded on first use: the store SDKs and the build machinery cost ~0.1-0.2 s to import, which `import
# modelship`, the CLI's --help and the pytest plugin (it needs one small helper of this package) should not pay.
_LAZY = {
    "BuiltImage": ".build",
    "build": ".build",
    "inspect": ".build",
    "push": ".build",
    "fetch": ".fetch",
    "lock": ".fetch",
    "resolve": ".fetch",
    "publish": ".publish",
    "assemble": ".oci.assemble",
    "promote": ".oci.assemble",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Keeps ``modelship.fetch`` (and ``build``, ``publish``) the function: importing a submodule makes the
    import system bind it on the package under its own name, which would hide the function of that name."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return  # the submodule stays reachable in sys.modules; the name is the function's
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

# The SDKs' own debug logs (urllib3 request lines) would show a SAS signature at -vv: mask it at the source.
protect_library_loggers()

__all__ = [
    "BuiltImage",
    "FileEntry",
    "Lock",
    "Manifest",
    "ModelshipError",
    "Resolution",
    "assemble",
    "build",
    "fetch",
    "inspect",
    "lock",
    "promote",
    "publish",
    "push",
    "resolve",
]
