"""DSSE envelopes (secure-systems-lab/dsse v1.0): a payload, its type, and signatures over their PAE.

The envelope is ``{"payloadType": TYPE, "payload": base64(BODY), "signatures": [{"keyid": "", "sig":
base64(SIG)}]}`` in Go's field order and compact form (what cosign writes); ``SIG`` is ECDSA P-256/SHA-256
(ASN.1 DER) over :func:`pae`. ``keyid`` stays empty as cosign leaves it for a key: verifiers try every key
they were given. Keys are read by ``modelship.trust.oms`` (PEM files).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import SignatureError, UsageError

PAYLOAD_TYPE = "application/vnd.in-toto+json"
ENVELOPE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: ``DSSEv1 <len> <type> <len> <payload>`` (lengths in bytes)."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def sign(payload: bytes, key: ec.EllipticCurvePrivateKey, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """The envelope (JSON bytes) of ``payload`` signed by the P-256 ``key``."""
    if key.curve.name != "secp256r1":
        raise UsageError(f"signing key on {key.curve.name}; attestations take P-256 (prime256v1)")
    sig = key.sign(pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
    envelope = {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": "", "sig": base64.b64encode(sig).decode()}],
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def verifying_key(
    signatures: Sequence[bytes], data: bytes, keys: Sequence[ec.EllipticCurvePublicKey]
) -> ec.EllipticCurvePublicKey | None:
    """The first P-256 key of ``keys`` that one of the ECDSA/SHA-256 ``signatures`` (ASN.1 DER) verifies with over
    ``data``; None when none does. DSSE envelopes and cosign's simple signing check signatures this way."""
    for key in keys:
        if key.curve.name != "secp256r1":
            continue
        for sig in signatures:
            try:
                key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                continue
            return key
    return None


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope: the payload type, the payload bytes and the decoded signatures."""

    payload_type: str
    payload: bytes
    signatures: tuple[bytes, ...]

    def signer(self, keys: Sequence[ec.EllipticCurvePublicKey]) -> ec.EllipticCurvePublicKey | None:
        """The first of ``keys`` one of the signatures verifies with over the PAE; None when none does."""
        return verifying_key(self.signatures, pae(self.payload_type, self.payload), keys)


def parse(data: bytes, what: str) -> Envelope:
    """The envelope in ``data``; SignatureError (malformed) naming ``what`` when it is not one."""
    try:
        doc = json.loads(data)
        payload_type = doc["payloadType"]
        payload = base64.b64decode(doc["payload"], validate=True)
        sigs = tuple(base64.b64decode(s["sig"], validate=True) for s in doc["signatures"])
        if not isinstance(payload_type, str):
            raise TypeError("payloadType")
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
        why = "truncated or garbled JSON" if isinstance(e, json.JSONDecodeError) else f"bad field: {e}"[:200]
        raise SignatureError(f"{what}: not a DSSE envelope ({why})", kind=SignatureError.MALFORMED) from e
    if not sigs:
        raise SignatureError(f"{what}: a DSSE envelope with no signature", kind=SignatureError.MALFORMED)
    return Envelope(payload_type, payload, sigs)


__all__ = ["ENVELOPE_MEDIA_TYPE", "PAYLOAD_TYPE", "Envelope", "pae", "parse", "sign"]
