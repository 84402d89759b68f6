"""promote(): point tags at a tested digest -- a manifest PUT per tag through the image writer, no blob moves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ModelshipError, UsageError
from .auth import login
from .reference import check_tag, parse_reference
from .registry import INDEX_TYPES, MANIFEST_TYPES, RegistryClient
from .write import Writer


@dataclass(frozen=True)
class PromoteResult:
    ref: str  # REGISTRY/REPO@DIGEST
    image_digest: str
    tags: tuple[str, ...]  # REGISTRY/REPO:TAG, each verified to resolve to image_digest

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "image_digest": self.image_digest, "tags": list(self.tags)}


def promote(
    ref: str,
    tags: Sequence[str],
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float | None = None,
    azure_credential: Any = None,
) -> PromoteResult:
    """Point each tag at the tested digest REF@sha256:… (a manifest PUT per tag, no blob moves), then verify it.

    A tag is ``TAG`` (same repository) or ``REGISTRY/REPO:TAG`` of the same repository.
    """
    r = parse_reference(ref)
    if not r.digest:
        raise UsageError(f"promote takes the digest that was tested, REPO@sha256:…, not {ref!r}")
    if not tags:
        raise UsageError("give at least one --tag")
    wanted: list[str] = []
    for t in tags:
        if "/" in t or t.count(":") > 0:
            other = parse_reference(t)
            if (other.registry, other.repository) != (r.registry, r.repository) or other.digest or not other.tag:
                raise UsageError(f"--tag {t}: promote tags within {r.name}; give TAG or {r.name}:TAG")
            wanted.append(other.tag)
        else:
            wanted.append(check_tag(t))
    creds = login(username, password)
    with RegistryClient(r.registry, creds, timeout=timeout, azure_credential=azure_credential) as client:
        got = client.get_manifest(r.repository, r.digest)
        if got.media_type not in MANIFEST_TYPES + INDEX_TYPES:
            raise ModelshipError(f"{ref} is not an image ({got.media_type})")
        writer = Writer(client, r.repository)
        done = []
        for t in dict.fromkeys(wanted):
            writer.tag(got, t)
            done.append(f"{r.name}:{t}")
    return PromoteResult(f"{r.name}@{r.digest}", r.digest, tuple(done))


__all__ = ["PromoteResult", "promote"]
