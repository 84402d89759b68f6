"""promote(): point tags at a tested digest, after checking the evidence it carries; or copy it (with that
evidence) to another registry first.

The order keeps a tag off a digest that has not earned it: the arguments and keys are read, then the
requirements are checked *at the source* (a signature by one of ``require_keys`` for exactly this digest), and
a refusal is one line naming the digest and what is missing, before anything is written. With ``to``, the image
is copied by digest (``_copy.send``: blobs HEAD-checked, mounted within one registry), then its signatures,
attestations and referrers (``_evidence``); a ``sign_key`` signs where the tags go; the tags move last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelshipError, NotFoundError, SignatureError, UsageError
from ._copy import send
from ._evidence import EvidenceCopy, copy_evidence
from .auth import login
from .modelimage import repository_of
from .reference import Reference, check_tag, parse_reference
from .registry import INDEX_TYPES, MANIFEST_TYPES, RegistryClient
from .write import Writer

if TYPE_CHECKING:
    from ..trust.cosign import ImageSignature


@dataclass(frozen=True)
class PromoteResult:
    ref: str  # REGISTRY/REPO@DIGEST where the tags are (the destination with ``to``)
    image_digest: str
    tags: tuple[str, ...]  # REGISTRY/REPO:TAG, each verified to resolve to image_digest
    image_signature: ImageSignature | None = None  # with a sign key: the digest's cosign signature
    verified: tuple[str, ...] = ()  # what was required and found: "signature by sha256:…", …
    source: str | None = None  # with ``to``: the REGISTRY/REPO@DIGEST copied from
    copied: EvidenceCopy | None = None  # with ``to``: the evidence carried over
    uploaded_bytes: int = 0  # with ``to``: bytes sent to the destination (0 on a re-run)

    def to_dict(self) -> dict[str, Any]:
        signature = self.image_signature.to_dict() if self.image_signature else None
        return {
            "ref": self.ref,
            "image_digest": self.image_digest,
            "tags": list(self.tags),
            "image_signature": signature,
            "verified": list(self.verified),
            "source": self.source,
            "copied": self.copied.to_dict() if self.copied else None,
            "uploaded_bytes": self.uploaded_bytes,
        }


def _tags(tags: Sequence[str], d: Reference) -> list[str]:
    wanted: list[str] = []
    for t in tags:
        if "/" in t or t.count(":") > 0:
            other = parse_reference(t)
            if (other.registry, other.repository) != (d.registry, d.repository) or other.digest or not other.tag:
                raise UsageError(f"--tag {t}: promote tags within {d.name}; give TAG or {d.name}:TAG")
            wanted.append(other.tag)
        else:
            wanted.append(check_tag(t))
    return list(dict.fromkeys(wanted))


def _destination(to: str, r: Reference) -> Reference:
    d = repository_of(to)
    if d.digest or d.tag:
        raise UsageError(f"--to {to}: give REGISTRY/REPO (tags go in --tag), not a tag or digest")
    if (d.registry, d.repository) == (r.registry, r.repository):
        raise UsageError(f"--to {to} is where {r.name}@… is already; leave out --to")
    return parse_reference(f"{d.registry}/{d.repository}@{r.digest}")


def promote(
    ref: str,
    tags: Sequence[str] = (),
    *,
    to: str | None = None,
    require_keys: Sequence[str | Path] = (),
    require_attestations: Sequence[str] = (),
    username: str | None = None,
    password: str | None = None,
    timeout: float | None = None,
    azure_credential: Any = None,
    sign_key: str | Path | None = None,
) -> PromoteResult:
    """Point each tag at the tested digest REF@sha256:… (a manifest PUT per tag), then verify it.

    A tag is ``TAG`` or ``REGISTRY/REPO:TAG`` of the repository the tags go to. ``require_keys``: PEM EC public
    keys; the digest must carry a cosign signature by one of them (at the source), and an attestation by one
    of them of each of ``require_attestations`` (slsa, cyclonedx, test-result or a predicate-type URI), else
    SignatureError in one line and nothing is written. A test-result by one of the keys that does not say
    PASSED refuses the digest whether it is required or not. ``to``: ``REGISTRY/REPO`` to copy the image to
    first, with its signatures, attestations and referrers (tags are then optional: none copies by digest
    only). ``sign_key``: a PEM EC P-256 private key that signs the digest where the tags go, before any tag
    moves. ``username``/``password`` are for the destination's registry (and the source's, when it is the same
    one).
    """
    r = parse_reference(ref)
    if not r.digest:
        raise UsageError(f"promote takes the digest that was tested, REPO@sha256:…, not {ref!r}")
    d = _destination(to, r) if to is not None else r
    if not tags and to is None:
        raise UsageError("give at least one --tag")
    wanted = _tags(tags, d)
    from ..trust.attestations import predicate_uri
    from ..trust.cosign import load_sign_key
    from ..trust.oms import load_public_keys

    types = list(dict.fromkeys(predicate_uri(t) for t in require_attestations))  # UsageError for no type
    if types and not require_keys:
        raise UsageError("--require-attestation needs --require-key PUB.pem: the key the attestations are signed by")
    keys = load_public_keys(require_keys)  # read before anything is sent: a bad file is a usage error
    key = load_sign_key(sign_key) if sign_key is not None else None
    creds = login(username, password)
    opts: dict[str, Any] = {"timeout": timeout, "azure_credential": azure_credential}
    dst = RegistryClient(d.registry, creds, **opts)
    src = dst if r.registry == d.registry else RegistryClient(r.registry, None, **opts)
    try:
        got = src.get_manifest(r.repository, r.digest)
        if got.media_type not in MANIFEST_TYPES + INDEX_TYPES:
            raise ModelshipError(f"{ref} is not an image ({got.media_type})")
        verified = _require(src, r, keys, types, wanted)
        copied, sent = None, 0
        if to is not None:
            _, w = send(src, r, got, dst, d.repository, title=f"promote to {d.name}")
            copied = copy_evidence(src, r, dst, d, str(r.digest))
            sent = w.uploaded_bytes + copied.uploaded_bytes
        signature = None
        if key is not None:
            from ..trust.cosign import sign_image

            signature = sign_image(dst, d, key)
        writer = Writer(dst, d.repository)
        done = []
        for t in wanted:
            writer.tag(got, t)
            done.append(f"{d.name}:{t}")
    finally:
        dst.close()
        if src is not dst:
            src.close()
    source = f"{r.name}@{r.digest}" if to is not None else None
    return PromoteResult(f"{d.name}@{d.digest}", str(d.digest), tuple(done), signature, verified, source, copied, sent)


def _require(
    client: RegistryClient, r: Reference, keys: Sequence[Any], types: Sequence[str], tags: Sequence[str]
) -> tuple[str, ...]:
    """Check what promote requires of ``r`` (at the source): a signature by one of ``keys``, an attestation of
    each of ``types`` (a test-result saying PASSED), and no test-result by those keys that says otherwise. A
    refusal is one SignatureError line naming the digest and what is missing, and says that no tag moved."""
    if not keys:
        return ()
    from ..trust.attestations import TEST_RESULT, type_name, verify_attestations
    from ..trust.cosign import verify_image

    moved = ", ".join(tags) if tags else "nothing"
    try:
        found = verify_image(client, r, keys)
        attested = verify_attestations(client, r, keys, types)  # a required test-result must say PASSED
        if TEST_RESULT not in types:  # one that was not required must not say otherwise either
            every = verify_attestations(client, r, keys) if types else attested
            if any(a.predicate_type == TEST_RESULT for a in every):
                verify_attestations(client, r, keys, [TEST_RESULT])
    except (SignatureError, NotFoundError) as e:
        kind = getattr(e, "kind", SignatureError.UNSIGNED)
        raise SignatureError(f"promote refused: {e} ({moved} not moved)", kind=kind) from None
    out = [f"signature by {found.signer}"]
    for uri in types:
        a = next(a for a in attested if a.predicate_type == uri)
        out.append(f"{type_name(uri)} attestation by {a.signer}")
    return tuple(out)


__all__ = ["PromoteResult", "promote"]
