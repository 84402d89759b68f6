"""Kubernetes documents as parsed YAML: the walk that deploy render and the Kyverno policy both need."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def mappings(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in a document, at any depth (labels, selectors, matchLabels, volume sources)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from mappings(value)
    elif isinstance(node, list):
        for value in node:
            yield from mappings(value)
