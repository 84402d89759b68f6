"""Packaging: app code + a fetched model into one image with provenance labels; push; inspect.

Modules, one job each: ``config`` (settings and their precedence), ``wheels`` (host-side dependency
resolution for the base image's interpreter), ``dockerfile`` (renders ``Dockerfile.template``), ``context``
(the reproducible build-context tar), ``labels`` (provenance), ``image`` (docker SDK build/push/inspect),
``registry`` (reads a remote image's labels over the registry API). The layer order is in docs/layers.md.
"""

from __future__ import annotations

from .image import BuiltImage, build, inspect, push

__all__ = ["BuiltImage", "build", "inspect", "push"]
