"""The local-engine path: app code + a fetched model into one image with provenance labels; push; inspect.

Modules, one job each: ``config`` (settings and their precedence), ``wheels`` (host-side dependency
resolution for the base image's interpreter), ``dockerfile`` (renders ``Dockerfile.template``), ``context``
(the reproducible build-context tar), ``labels`` (provenance), ``debris`` (what a failed build leaves in the
engine), ``registry`` (reads a remote image's labels over the registry API), and the engine jobs ``_build``,
``_push``, ``_inspect`` behind the functions of the same names. The layer order is in docs/layers.md.
"""

from __future__ import annotations

from ._build import BuiltImage, build
from ._inspect import InspectResult, inspect
from ._push import PushResult, push

__all__ = ["BuiltImage", "InspectResult", "PushResult", "build", "inspect", "push"]
