"""pytest-modelship: ``pytest --modelship-image IMAGE`` proves a built model image serves correct answers.

The plugin module (``pytest_modelship.plugin``) is loaded through the ``pytest11`` entry point. The
names below are imported lazily so that a pytest run without ``--modelship-image`` pays nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Case", "ModelshipClient", "ModelshipContainer", "Settings"]

_LAZY = {
    "Case": "pytest_modelship.cases",
    "ModelshipClient": "pytest_modelship.client",
    "ModelshipContainer": "pytest_modelship.container",
    "Settings": "pytest_modelship.settings",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pytest_modelship' has no attribute {name!r}")
