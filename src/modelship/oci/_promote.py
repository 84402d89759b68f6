"""promote(): point tags at a tested digest -- a manifest PUT per tag through the image writer, no blob moves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelshipError, UsageError
from .auth import login
from .reference import check_tag, parse_reference
from .registry import INDEX_TYPES, MANIFEST_TYPES, RegistryClient
from .write import Writer

if TYPE_CHECKING:
    from ..trust.cosign import ImageSignature


@dataclass(frozen=True)
class PromoteResult:
    ref: str  # REGISTRY/REPO@DIGEST
    image_digest: str
    tags: tuple[str, ...]  # REGISTRY/REPO:TAG, each verified to resolve to image_digest
    image_signature: ImageSignature | None = None  # with a sign key: the digest's cosign signature

    def to_dict(self) -> dict[str, Any]:
        signature = self.image_signature.to_dict() if self.image_signature else None
        return {
            "ref": self.ref,
            "image_digest": self.image_digest,
            "tags": list(self.tags),
            "image_signature": signature,
        }


def promote(
    ref: str,
    tags: Sequence[str],
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float | None = None,
    azure_credential: Any = None,
    sign_key: str | Path | None = None,
) -> PromoteResult:
    """Point each tag at the tested digest REF@sha256:… (a manifest PUT per tag, no blob moves), then verify it.

    A tag is ``TAG`` (same repository) or ``REGISTRY/REPO:TAG`` of the same repository. ``sign_key``: a PEM EC
    P-256 private key (read first) that signs the digest in cosign's format before any tag moves.
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
    key = None
    if sign_key is not None:
        from ..trust.cosign import load_sign_key

        key = load_sign_key(sign_key)
    creds = login(username, password)
    with RegistryClient(r.registry, creds, timeout=timeout, azure_credential=azure_credential) as client:
        got = client.get_manifest(r.repository, r.digest)
        if got.media_type not in MANIFEST_TYPES + INDEX_TYPES:
            raise ModelshipError(f"{ref} is not an image ({got.media_type})")
        signature = None
        if key is not None:
            from ..trust.cosign import sign_image

            signature = sign_image(client, r, key)
        writer = Writer(client, r.repository)
        done = []
        for t in dict.fromkeys(wanted):
            writer.tag(got, t)
            done.append(f"{r.name}:{t}")
    return PromoteResult(f"{r.name}@{r.digest}", r.digest, tuple(done), signature)


__all__ = ["PromoteResult", "promote"]
