"""copy_evidence(): what a registry holds about an image digest -- its cosign signatures (``sha256-<hex>.sig``),
its attestations (``sha256-<hex>.att``) and its OCI 1.1 referrers -- copied to another repository or registry,
so that ``modelship verify`` (and ``cosign verify``) pass there too. Promote's ``--to`` uses it.

Every manifest is copied as the source holds it (same bytes, same digest; cosign's ``copy`` does the same: the
payloads still name the source repository, which cosign's verification does not check). At a ``.sig``/``.att``
tag the destination already holds something else (signatures of its own), the source's layers are appended to
the destination's, none dropped. Referrers are copied where the source answers the referrers API and the
destination does too (a registry without the API keeps what a referrer carries at the tags only). Blobs the
destination holds are skipped after a HEAD, in one registry they are mounted: a re-run sends nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ModelshipError
from ..trust._store import kind_tag, layered_image
from ._copy import send
from .reference import Reference
from .registry import MANIFEST_TYPES, RegistryClient
from .write import Blob, RemoteBlob, Writer, dumps

KINDS = ("sig", "att")  # cosign's tags of an image digest: signatures, attestations


@dataclass(frozen=True)
class EvidenceCopy:
    """What :func:`copy_evidence` found at the source and left at the destination."""

    tags: tuple[str, ...]  # DST REGISTRY/REPO:sha256-<hex>.sig/.att now holding the source's evidence
    referrers: int  # referrer manifests of the digest at the destination (copied or there already)
    referrers_skipped: int  # referrers the source has that the destination cannot serve (no referrers API)
    uploaded_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def copy_evidence(src: RegistryClient, s: Reference, dst: RegistryClient, d: Reference, digest: str) -> EvidenceCopy:
    """Copy the evidence of the image ``digest`` from repository ``s`` at ``src`` to ``d`` at ``dst`` (the
    image itself must be at the destination already: a referrer's subject comes first)."""
    tags, sent = [], 0
    for kind in KINDS:
        tag = kind_tag(digest, kind)
        if src.head_manifest(s.repository, tag) is None:
            continue
        sent += _copy_tag(src, s, dst, d, tag)
        tags.append(f"{d.name}:{tag}")
    found = src.referrers(s.repository, digest)
    copied = skipped = 0
    if found:
        if dst.referrers(d.repository, digest) is None:
            skipped = len(found)
        for entry in found if not skipped else []:
            ref_digest = str(entry.get("digest", ""))
            if dst.head_manifest(d.repository, ref_digest) != ref_digest:
                got = src.get_manifest(s.repository, ref_digest)  # checked against the digest
                sent += send(src, s, got, dst, d.repository)[1].uploaded_bytes
            copied += 1
    return EvidenceCopy(tuple(tags), copied, skipped, sent)


def _copy_tag(src: RegistryClient, s: Reference, dst: RegistryClient, d: Reference, tag: str) -> int:
    """The source's manifest at ``tag`` at the destination's ``tag``; the bytes sent."""
    got = src.get_manifest(s.repository, tag)
    held = dst.head_manifest(d.repository, tag)
    if held == got.digest:
        return 0
    if held is None:
        value, w = send(src, s, got, dst, d.repository)
        w.tag(value, tag)
        return w.uploaded_bytes
    # the destination has evidence of its own there: append the source's layers it lacks, drop none
    theirs, mine = _layers(dst.get_manifest(d.repository, tag), f"{d.name}:{tag}"), _layers(got, f"{s.name}:{tag}")
    have = {dumps(x) for x in theirs}
    new = [x for x in mine if dumps(x) not in have]
    if not new:
        return 0
    mount = s.repository if src.registry == dst.registry and s.repository != d.repository else None
    blobs = [Blob(x, RemoteBlob(dst, d.repository, x["digest"], x["size"])) for x in theirs]
    blobs += [Blob(x, RemoteBlob(src, s.repository, x["digest"], x["size"]), mount) for x in new]
    merged = layered_image(blobs)
    w = Writer(dst, d.repository)
    w.upload(merged)
    w.put(merged)
    if dst.head_manifest(d.repository, tag) != held:
        raise ModelshipError(f"{d.name}:{tag} changed while copying to it (another writer?); promote again")
    w.tag(merged, tag)
    return w.uploaded_bytes


def _layers(got: Any, where: str) -> list[dict[str, Any]]:
    layers = got.json().get("layers")
    ok = isinstance(layers, list) and all(
        isinstance(x, dict) and str(x.get("digest", "")).startswith("sha256:") and isinstance(x.get("size"), int)
        for x in layers
    )
    if got.media_type not in MANIFEST_TYPES or not ok:
        raise ModelshipError(f"{where} is not a cosign signature/attestation manifest ({got.media_type})")
    return list(layers)


__all__ = ["EvidenceCopy", "copy_evidence"]
