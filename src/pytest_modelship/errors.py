"""The plugin's two failures; plugin and session turn them into one-line pytest errors."""

from __future__ import annotations

from modelship.errors import ModelshipError


class ContainerError(ModelshipError):
    """The container could not be started or never became ready; ``str()`` is the message shown."""


class SetupError(ModelshipError):
    """Docker or the image is not usable: one line naming the problem and the fix."""
