"""A second, minimal reader (and writer) of cosign attestations, written apart from modelship.trust.attestations.

It follows cosign's documented layout (sigstore/cosign ``specs/ATTESTATION_SPEC.md``, ``cmd/cosign/cli/attest``)
and the DSSE v1.0 spec (secure-systems-lab/dsse ``envelope.md``, ``protocol.md``), not modelship's code: plain
``requests`` calls of the distribution API, the PAE built here, ``cryptography``'s ECDSA. :func:`write_attestation`
appends one the way ``cosign attest --key`` does (Go's field order), for modelship to judge in turn.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support.cosign_reader import MANIFEST_TYPES, _blob, _push_blob, tagged_manifest

LAYER_TYPE = "application/vnd.dsse.envelope.v1+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


def att_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".att"


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's PAE, from the spec: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in ASCII decimal."""
    t = payload_type.encode("utf-8")
    return b" ".join([b"DSSEv1", str(len(t)).encode(), t, str(len(body)).encode(), body])


@dataclass(frozen=True)
class Found:
    """One attestation layer: its annotations, the envelope's payload (the statement) and signatures."""

    annotations: dict
    payload_type: str
    payload: bytes
    signatures: tuple[bytes, ...]

    @property
    def statement(self) -> dict:
        return json.loads(self.payload)


def attestation_manifest(registry: str, repo: str, digest: str) -> tuple[dict, str, str] | None:
    """The manifest at ``sha256-<hex>.att`` (its JSON, media type, digest), or None when there is no such tag."""
    return tagged_manifest(registry, repo, att_tag(digest))


def read_layers(registry: str, repo: str, manifest: dict) -> list[Found]:
    """Every layer of an attestation manifest, checked for cosign's shape: media type, the blob's digest and size,
    the ``predicateType`` annotation equal to the statement's, an empty signature annotation, a DSSE envelope."""
    out = []
    for layer in manifest["layers"]:
        assert layer["mediaType"] == LAYER_TYPE, layer
        data = _blob(registry, repo, layer["digest"])
        assert len(data) == layer["size"]
        envelope = json.loads(data)
        annotations = layer.get("annotations") or {}
        found = Found(
            annotations,
            envelope["payloadType"],
            base64.b64decode(envelope["payload"], validate=True),
            tuple(base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]),
        )
        assert found.payload_type == PAYLOAD_TYPE, found.payload_type
        assert annotations.get(SIGNATURE_ANNOTATION) == "", annotations
        assert annotations["predicateType"] == found.statement["predicateType"], annotations
        out.append(found)
    return out


def read_attestations(registry: str, repo: str, digest: str) -> list[Found]:
    """The attestation layers at the image's ``.att`` tag ([] when it has none)."""
    got = attestation_manifest(registry, repo, digest)
    if got is None:
        return []
    manifest, media_type, _ = got
    assert media_type.split(";")[0] in MANIFEST_TYPES, media_type
    return read_layers(registry, repo, manifest)


def accepts(found: Found, public_key: Path, digest: str, predicate_type: str | None = None) -> bool:
    """cosign verify-attestation --key's rule for one layer: an ECDSA P-256/SHA-256 signature over the PAE
    verifies, and the statement (in-toto v1) has a subject whose sha256 is exactly ``digest``'s."""
    key = serialization.load_pem_public_key(Path(public_key).read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    ok = False
    for sig in found.signatures:
        try:
            key.verify(sig, pae(found.payload_type, found.payload), ec.ECDSA(hashes.SHA256()))
            ok = True
        except InvalidSignature:
            continue
    st = found.statement
    hexdigest = digest.split(":", 1)[1]
    return (
        ok
        and st["_type"] == STATEMENT_V1
        and any(s["digest"].get("sha256") == hexdigest for s in st["subject"])
        and (predicate_type is None or st["predicateType"] == predicate_type)
    )


def verified_by(registry: str, repo: str, digest: str, public_key: Path, predicate_type: str | None = None) -> int:
    """How many attestations at the image's ``.att`` tag verify for ``digest`` with ``public_key``."""
    return sum(accepts(f, public_key, digest, predicate_type) for f in read_attestations(registry, repo, digest))


def write_attestation(
    registry: str,
    repo: str,
    digest: str,
    private_key: Path,
    predicate_type: str,
    predicate: dict,
    *,
    claimed_digest: str | None = None,
) -> None:
    """Append an attestation about ``digest`` (or, to forge one, about ``claimed_digest`` put at ``digest``'s
    tag) by ``private_key``, as cosign attest writes it."""
    key = serialization.load_pem_private_key(Path(private_key).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    hexdigest = (claimed_digest or digest).split(":", 1)[1]
    statement = {  # Go's struct order: _type, predicateType, subject, predicate
        "_type": STATEMENT_V1,
        "predicateType": predicate_type,
        "subject": [{"name": f"{registry}/{repo}", "digest": {"sha256": hexdigest}}],
        "predicate": predicate,
    }
    payload = json.dumps(statement, separators=(",", ":")).encode()
    sig = key.sign(pae(PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    envelope = json.dumps({
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": "", "sig": base64.b64encode(sig).decode()}],
    }).encode()  # fmt: skip
    got = attestation_manifest(registry, repo, digest)
    layers = [*(got[0]["layers"] if got else []), {
        "mediaType": LAYER_TYPE,
        "size": len(envelope),
        "digest": _push_blob(registry, repo, envelope),
        "annotations": {"predicateType": predicate_type, SIGNATURE_ANNOTATION: ""},
    }]  # fmt: skip
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]}}).encode()  # fmt: skip
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPES[0],
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                   "digest": _push_blob(registry, repo, config)},
        "layers": layers,
    }  # fmt: skip
    requests.put(
        f"http://{registry}/v2/{repo}/manifests/{att_tag(digest)}",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": MANIFEST_TYPES[0]},
        timeout=30,
    ).raise_for_status()
