"""modelship: resolve the latest model, fetch it verified, package app + model into an image, push it."""

from __future__ import annotations

# Imported eagerly on purpose: `from .fetch import fetch` rebinds the package attribute `fetch` from the
# submodule to the function, so `modelship.fetch(...)` is always the function (likewise build, publish).
from .build import BuiltImage, build, inspect, push
from .errors import ModelshipError
from .fetch import fetch, lock, resolve
from .logs import protect_library_loggers
from .manifest import FileEntry, Lock, Manifest, Resolution
from .publish import publish

# The SDKs' own debug logs (urllib3 request lines) would show a SAS signature at -vv: mask it at the source.
protect_library_loggers()

__version__ = "0.1.0"

__all__ = [
    "BuiltImage",
    "FileEntry",
    "Lock",
    "Manifest",
    "ModelshipError",
    "Resolution",
    "build",
    "fetch",
    "inspect",
    "lock",
    "publish",
    "push",
    "resolve",
]
