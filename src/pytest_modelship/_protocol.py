"""What the plugin's items (cases.py, checks.py) need of the run, as a small protocol.

The items depend on this, not on plugin.py or session.py (which create them): no import circle, not
even one seen only by type checkers. ``session.ModelshipRun`` is the one implementation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .client import ModelshipClient
    from .container import ModelshipContainer
    from .images import ImageInfo


class Run(Protocol):
    """The run as the items see it: the image, its started container, a client on it, redaction."""

    image: ImageInfo

    def container(self) -> ModelshipContainer:
        """The started, ready container; fails the calling test in one message if there is none."""
        ...

    def client(self) -> ModelshipClient:
        """A client on the container, shared by the smoke cases."""
        ...

    def redact(self, text: str) -> str:
        """``text`` with the values of secret-named --modelship-env keys masked."""
        ...
