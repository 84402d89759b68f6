"""Repositories: versions of a model above the byte stores (see ``repos.base.Repository``).

``opened(uri, credential)`` gives the repository that keeps the model at ``uri``: the store for the URI's scheme
(``modelship.stores``, where plugins may add or wrap stores) under the repository kind the scheme table names
for it: ``repos.folder`` (``PREFIX/<version>/`` with a publish marker) or ``repos.oci`` (model images by tag).
Nothing above this package asks which scheme a URI has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..stores import open_source, registry
from ..uri import ModelURI
from .base import Fetched, PublishResult, Repository


def open_repository(uri: ModelURI, credential: Any = None) -> Repository:
    """The repository at ``uri`` (its store opened with ``credential``); close it after use."""
    source = open_source(uri, credential)
    try:
        return registry.repository(uri.scheme)(source)  # type: ignore[no-any-return]
    except BaseException:
        source.close()
        raise


@contextlib.contextmanager
def opened(uri: ModelURI, credential: Any = None) -> Iterator[Repository]:
    repo = open_repository(uri, credential)
    try:
        yield repo
    finally:
        repo.close()


__all__ = ["Fetched", "PublishResult", "Repository", "open_repository", "opened"]
