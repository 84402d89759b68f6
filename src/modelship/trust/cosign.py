"""Image signatures in cosign's format (simple signing), written to and checked in a registry.

What cosign (sigstore/cosign ``pkg/oci/static``, ``pkg/cosign/verify.go``) writes for ``cosign sign --key``, and
what ``cosign verify --key`` accepts:

- the **payload**: ``{"critical":{"identity":{"docker-reference":REPO},"image":{"docker-manifest-digest":DIGEST},
  "type":"cosign container image signature"},"optional":null}`` (Go's compact JSON; its key order is sorted);
- the **signature**: ECDSA P-256 over the payload bytes with SHA-256, ASN.1 DER, base64 (standard alphabet);
- stored as a **layer** of media type ``application/vnd.dev.cosign.simplesigning.v1+json`` (the payload bytes
  are the blob) whose descriptor carries the signature in the annotation ``dev.cosignproject.cosign/signature``,
- in an OCI image manifest tagged ``sha256-<hex>.sig`` in the image's repository: one layer per signature, a new
  signature appended to those already there (cosign's ``AppendSignatures``), none dropped; the same key
  signing the same payload again adds nothing (cosign's dupe detector: same payload digest, and the
  signature there verifies with the key).

Where the registry answers the OCI 1.1 referrers API, the signature is also attached as a referrer: a manifest
whose ``subject`` is the image and whose ``artifactType`` is cosign's ``application/vnd.dev.cosign.artifact.sig.v1
+json`` (``cosign sign --registry-referrers-mode=oci-1-1``), holding the same layer. Both are written as
attestations are (``modelship.trust._store``), through the one image writer (``modelship.oci.write``).

Verification (:func:`verify`) passes only when a signature layer at the tag (or a referrer) verifies with one
of the keys over its payload bytes *and* that payload names exactly the digest asked about; cosign's
``SimpleClaimVerifier`` checks the same. Writing reads the ``.sig`` manifest first and then replaces it: two
signers at the same instant can still lose one signature (as with cosign); the tag is re-checked just before
the PUT to keep that window small, and :func:`verify` tells.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import NotFoundError, SignatureError, UsageError
from ..oci.reference import Reference
from ..oci.registry import RegistryClient, sha256_digest
from ..oci.write import dumps
from ._store import append, attach, candidates, kind_tag, open_client, pinned, read_held
from .dsse import verifying_key
from .oms import fingerprint, load_private_key, load_public_keys

log = logging.getLogger("modelship")

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
SIG_ARTIFACT_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"  # cosign's referrer artifactType
_PAYLOAD_MAX = 1024 * 1024  # a simple-signing payload is a few hundred bytes


def signature_tag(digest: str) -> str:
    """``sha256-<hex>.sig``: the tag cosign stores the signatures of ``digest`` under."""
    return kind_tag(digest, "sig")


def payload(repository: str, digest: str) -> bytes:
    """The simple-signing payload of the image ``digest`` in ``repository`` (REGISTRY/REPO), as cosign writes it."""
    critical = {
        "identity": {"docker-reference": repository},
        "image": {"docker-manifest-digest": digest},
        "type": SIGNATURE_TYPE,
    }
    return dumps({"critical": critical, "optional": None})


def sign_payload(data: bytes, key: ec.EllipticCurvePrivateKey) -> str:
    """The base64 ECDSA/SHA-256 (ASN.1 DER) signature of ``data``: the annotation's value."""
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


@dataclass(frozen=True)
class ImageSignature:
    """A signature of an image as written (or found already there): where it is and whose key made it."""

    signature: str  # REGISTRY/REPO:sha256-<hex>.sig
    signature_digest: str  # the .sig manifest's digest after the write
    signer: str  # sha256:<hex> fingerprint of the key
    unchanged: bool  # the same key had signed the same payload already: nothing written
    referrer: str | None  # digest of the referrer manifest, when the registry has the referrers API

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SignResult:
    """What ``modelship sign`` did: the image (pinned) and its signature."""

    ref: str
    image_digest: str
    image_signature: ImageSignature

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "image_digest": self.image_digest, **self.image_signature.to_dict()}


@dataclass(frozen=True)
class VerifyResult:
    """A signature that verified for exactly ``image_digest``: by which key, found where; and the attestations
    asked for (``modelship.trust.attestations.Attestation``), verified too."""

    ref: str
    image_digest: str
    signer: str
    signature: str  # REGISTRY/REPO:sha256-<hex>.sig, or REGISTRY/REPO@<referrer digest>
    attestations: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- signing ------------------------------------------------------------------------------------------------


def sign(
    ref: str,
    key: str | Path,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float | None = None,
    azure_credential: Any = None,
) -> SignResult:
    """Sign the image ``ref`` (REGISTRY/REPO@sha256:…) with the PEM EC private key at ``key`` (cosign format)."""
    r = pinned(ref, "sign")
    private = load_sign_key(key)
    with open_client(r, username, password, timeout=timeout, azure_credential=azure_credential) as client:
        signed = sign_image(client, r, private)
    return SignResult(f"{r.name}@{r.digest}", str(r.digest), signed)


def load_sign_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    """The PEM EC P-256 private key at ``path``, read before anything is sent (UsageError on a bad file)."""
    key = load_private_key(path)
    if key.curve.name != "secp256r1":
        raise UsageError(f"{path}: an EC key on {key.curve.name}; image signatures take P-256 (prime256v1)")
    return key


def sign_image(client: RegistryClient, r: Reference, key: ec.EllipticCurvePrivateKey) -> ImageSignature:
    """Append a signature of the image ``r`` (pinned) by ``key`` at its ``.sig`` tag, and attach it as a
    referrer where the registry has the API; nothing is written when ``key`` signed it already."""
    if key.curve.name != "secp256r1":
        raise UsageError(f"signing key on {key.curve.name}; image signatures take P-256 (prime256v1)")
    digest, repo = str(r.digest), r.repository
    subject = client.get_manifest(repo, digest)  # the image must exist (NotFoundError otherwise)
    data = payload(r.name, digest)
    tag = signature_tag(digest)
    where = f"{r.name}:{tag}"
    held = read_held(client, repo, tag, where, "a signature")
    public = key.public_key()
    layer = next((d for d in (held.json()["layers"] if held else []) if _verifies(d, data, [public])), None)
    unchanged = layer is not None
    if layer is None:
        layer = {
            "mediaType": SIMPLE_SIGNING,
            "digest": sha256_digest(data),
            "size": len(data),
            "annotations": {SIGNATURE_ANNOTATION: sign_payload(data, key)},
        }
        sig_digest = append(client, repo, tag, held, layer, data, "signing")
    else:
        assert held is not None
        sig_digest = held.digest
    referrer = attach(client, repo, subject, layer, data, SIG_ARTIFACT_TYPE)
    log.info("%s@%s signed: %s (%s)", r.name, digest, where, "already there" if unchanged else "appended")
    return ImageSignature(where, sig_digest, fingerprint(public), unchanged, referrer)


# ---- verifying ----------------------------------------------------------------------------------------------


def _verifies(desc: Any, data: bytes, keys: Sequence[ec.EllipticCurvePublicKey]) -> ec.EllipticCurvePublicKey | None:
    """The key (of ``keys``) whose signature the layer ``desc`` carries over ``data``; None otherwise."""
    if not isinstance(desc, dict) or desc.get("mediaType") != SIMPLE_SIGNING:
        return None
    if desc.get("digest") != sha256_digest(data):
        return None
    try:
        sig = base64.b64decode(str((desc.get("annotations") or {}).get(SIGNATURE_ANNOTATION, "")), validate=True)
    except (binascii.Error, ValueError):
        return None
    return verifying_key([sig], data, keys)


def _signed_digest(data: bytes) -> str | None:
    """The ``docker-manifest-digest`` a simple-signing payload names (None: not such a payload)."""
    try:
        critical = json.loads(data)["critical"]
        if critical["type"] != SIGNATURE_TYPE:
            return None
        return str(critical["image"]["docker-manifest-digest"])
    except (ValueError, KeyError, TypeError):
        return None


def verify(
    ref: str,
    keys: Sequence[str | Path],
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float | None = None,
    azure_credential: Any = None,
    attestations: Sequence[str] = (),
) -> VerifyResult:
    """Check that the image ``ref`` (REGISTRY/REPO@sha256:…) carries a cosign signature by one of ``keys`` (PEM
    EC public keys) for exactly its digest, and an attestation of each of ``attestations`` (slsa, cyclonedx,
    test-result or URIs; see ``modelship.trust.attestations``). SignatureError (``kind``: unsigned, unknown key,
    other image, malformed signature, failed verdict) otherwise, in one line."""
    from .attestations import predicate_uri, verify_attestations  # it imports this module

    r = pinned(ref, "verify")
    if not keys:
        raise UsageError(f"verify {ref}: give the public key to check with, --key PUB.pem")
    for name in attestations:
        predicate_uri(name)  # a usage error before any request
    public = load_public_keys(keys)
    with open_client(r, username, password, timeout=timeout, azure_credential=azure_credential) as client:
        result = verify_image(client, r, public)
        if attestations:
            found = verify_attestations(client, r, public, attestations)
            result = replace(result, attestations=tuple(found))
        return result


def verify_image(client: RegistryClient, r: Reference, keys: Sequence[ec.EllipticCurvePublicKey]) -> VerifyResult:
    """:func:`verify` over an open client."""
    digest, pinned = str(r.digest), f"{r.name}@{r.digest}"
    if client.head_manifest(r.repository, digest) is None:
        raise NotFoundError(f"{pinned}: no such image in {r.registry}")
    found = candidates(client, r, "sig", SIG_ARTIFACT_TYPE, "a signature")
    if not found:
        raise SignatureError(
            f"{pinned}: not signed (no {signature_tag(digest)} tag); sign it with modelship sign --key",
            kind=SignatureError.UNSIGNED,
        )
    other: tuple[str, str] | None = None
    seen = 0
    for where, layers in found:
        for desc in layers:
            if not isinstance(desc, dict) or desc.get("mediaType") != SIMPLE_SIGNING:
                continue
            seen += 1
            size = desc.get("size")
            if not isinstance(size, int) or not 0 < size <= _PAYLOAD_MAX:
                continue
            data = client.get_blob(r.repository, str(desc.get("digest")), _PAYLOAD_MAX)
            key = _verifies(desc, data, keys)
            if key is None:
                continue
            signed = _signed_digest(data)
            if signed == digest:
                return VerifyResult(pinned, digest, fingerprint(key), where)
            other = other or (fingerprint(key), str(signed))
    if other is not None:
        raise SignatureError(
            f"{pinned}: the signature by {other[0]} is for another image ({other[1][:19]}…), not this digest",
            kind=SignatureError.OTHER_IMAGE,
            fingerprints=(other[0],),
        )
    if not seen:
        raise SignatureError(
            f"{pinned}: {found[0][0]} holds no simple-signing layer; sign it with modelship sign --key",
            kind=SignatureError.MALFORMED,
        )
    prints = tuple(fingerprint(k) for k in keys)
    raise SignatureError(
        f"{pinned}: none of its {seen} signature(s) is by the given key(s) ({', '.join(prints)})",
        kind=SignatureError.UNKNOWN_KEY,
        fingerprints=prints,
    )


__all__ = [
    "SIGNATURE_ANNOTATION",
    "SIMPLE_SIGNING",
    "ImageSignature",
    "SignResult",
    "VerifyResult",
    "load_sign_key",
    "payload",
    "sign",
    "sign_image",
    "signature_tag",
    "verify",
    "verify_image",
]
