"""Model stores behind one small protocol; see base.Source and modelship.plugins.open_source."""

from .base import RemoteFile, Source

__all__ = ["RemoteFile", "Source"]
