"""modelship: resolve the latest model, fetch it verified, package app + model into an image, push it."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from .errors import ModelshipError
from .logs import protect_library_loggers
from .manifest import FileEntry, Lock, Manifest, Resolution

__version__ = "0.1.0"

# Loaded on first use (huggingface_hub's pattern): the store SDKs and the build machinery cost ~0.1-0.2 s to
# import, which `import modelship`, the CLI's --help and the pytest plugin (it needs one small helper of this
# package) should not pay. The implementation modules are private, so `import modelship.<module>` is always a
# module and `modelship.fetch` always the function.
_SUBMOD_ATTRS = {
    "_fetch": ["FetchResult", "fetch"],
    "_publish": ["publish"],
    "_resolve": ["lock", "resolve"],
    "repos.base": ["PublishResult"],
    "image": ["BuiltImage", "InspectResult", "PushResult", "build", "inspect", "push"],
    "appimage": ["AppImage"],
    "oci._assemble": ["AssembleResult", "assemble"],
    "oci._promote": ["PromoteResult", "promote"],
    "_verify": ["VerifyResult", "verify"],
    "trust.attestations": ["AttestResult", "attest"],
}
_ATTR_MODULE = {attr: module for module, attrs in _SUBMOD_ATTRS.items() for attr in attrs}


def __getattr__(name: str) -> Any:
    module = _ATTR_MODULE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_ATTR_MODULE})


if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports these on first use
    from ._fetch import FetchResult, fetch
    from ._publish import publish
    from ._resolve import lock, resolve
    from ._verify import VerifyResult, verify
    from .appimage import AppImage
    from .image import BuiltImage, InspectResult, PushResult, build, inspect, push
    from .oci._assemble import AssembleResult, assemble
    from .oci._promote import PromoteResult, promote
    from .repos.base import PublishResult
    from .trust.attestations import AttestResult, attest

# The SDKs' own debug logs (urllib3 request lines) would show a SAS signature at -vv: mask it at the source.
protect_library_loggers()
# Library calls print nothing: without a handler of its own, a warning of modelship's would reach Python's
# last-resort handler (stderr) in a program that configured no logging. The CLI's handler sits on the root
# logger, which these records still reach.
logging.getLogger("modelship").addHandler(logging.NullHandler())

__all__ = [
    "AppImage",
    "AssembleResult",
    "AttestResult",
    "BuiltImage",
    "FetchResult",
    "FileEntry",
    "InspectResult",
    "Lock",
    "Manifest",
    "ModelshipError",
    "PromoteResult",
    "PublishResult",
    "PushResult",
    "Resolution",
    "VerifyResult",
    "assemble",
    "attest",
    "build",
    "fetch",
    "inspect",
    "lock",
    "promote",
    "publish",
    "push",
    "resolve",
    "verify",
]
