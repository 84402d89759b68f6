"""Certificate-based model signatures, as ``model_signing sign certificate`` / ``verify certificate`` make and
check them: the bundle carries the signing certificate and its chain (``x509CertificateChain``) instead of a
public-key hint, and a verifier trusts root certificates (``--verify-cert-chain ROOT.pem``) instead of keys.

The rules are model_signing 1.1's (OpenSSL's chain check there): the path from the signing certificate goes
through the bundle's certificates and the given ones to a self-signed certificate among the given ones; every
issuer is a CA (basicConstraints, keyCertSign when keyUsage is present) and signed the certificate below it;
every certificate is valid at the signing certificate's notBefore (signatures outlive short-lived certificates,
as in model_signing); the signing certificate allows signing (keyUsage digitalSignature, or extendedKeyUsage
codeSigning) and holds an EC key. Sigstore keyless signing (Fulcio certificates for an OIDC identity, a Rekor
transparency-log entry) needs the network and an identity token, and is not offered (docs/trust.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..errors import UsageError

_MAX_DEPTH = 8


@dataclass(frozen=True)
class Signer:
    """A private key and its certificate (first) with the chain to put beside it in the bundle. Signs and has a
    public key like the key itself, so it goes wherever a key goes (``oms.sign``)."""

    key: ec.EllipticCurvePrivateKey
    certificates: tuple[x509.Certificate, ...] = ()

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.key.public_key()

    def sign(self, data: bytes, algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        return self.key.sign(data, algorithm)


@dataclass(frozen=True)
class Roots:
    """Trusted certificates (``--verify-cert-chain``): a signature whose certificate chains to one verifies."""

    certificates: tuple[x509.Certificate, ...]
    paths: tuple[str, ...]


def _load(path: str | Path, what: str) -> list[x509.Certificate]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: cannot read the {what} ({e.strerror or e}); give a PEM certificate file") from e
    try:
        certs = x509.load_pem_x509_certificates(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise UsageError(f"{path}: not a PEM certificate (the {what})") from e
    return certs


def can_sign(cert: x509.Certificate) -> bool:
    """model_signing's rule: keyUsage digitalSignature, else extendedKeyUsage codeSigning."""
    try:
        if cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return True
    except x509.ExtensionNotFound:
        pass
    try:
        return ExtendedKeyUsageOID.CODE_SIGNING in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False


def load_signer(key_path: str | Path, cert_path: str | Path | None = None, chain: Sequence[str | Path] = ()) -> Signer:
    """The key at ``key_path``, with the certificate at ``cert_path`` (its public key must be the key's) and the
    certificates of ``chain`` to ship beside it; UsageError naming the file otherwise."""
    from .oms import load_private_key

    key = load_private_key(key_path)
    if cert_path is None:
        if chain:
            raise UsageError("--cert-chain needs --sign-cert (the certificate of --sign-key)")
        return Signer(key)
    leaf = _load(cert_path, "signing certificate")[0]
    if leaf.public_key() != key.public_key():
        raise UsageError(f"{cert_path}: the certificate is not of the key {key_path} (their public keys differ)")
    if not can_sign(leaf):
        raise UsageError(f"{cert_path}: the certificate does not allow signing (digitalSignature or codeSigning)")
    return Signer(key, (leaf, *(c for p in chain for c in _load(p, "certificate chain"))))


def load_roots(paths: Sequence[str | Path]) -> Roots | None:
    """The trusted certificates in ``paths`` (None when no path is given)."""
    if not paths:
        return None
    return Roots(tuple(c for p in paths for c in _load(p, "certificate chain")), tuple(str(p) for p in paths))


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _valid_at(cert: x509.Certificate, when: dt.datetime) -> bool:
    before = getattr(cert, "not_valid_before_utc", None) or _utc(cert.not_valid_before)
    after = getattr(cert, "not_valid_after_utc", None) or _utc(cert.not_valid_after)
    return before <= when <= after


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        return True


def chain_key(chain: Sequence[bytes], roots: Roots) -> ec.EllipticCurvePublicKey:
    """The signing certificate's key, once its chain (DER certificates, the signing one first) leads to one of
    ``roots`` by the rules in the module doc; ValueError saying why not."""
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError as e:
        raise ValueError("a certificate in the bundle does not parse") from e
    leaf = certs[0]
    when = getattr(leaf, "not_valid_before_utc", None) or _utc(leaf.not_valid_before)
    pool = [*certs[1:], *roots.certificates]
    trusted = {c.fingerprint(hashes.SHA256()) for c in roots.certificates}
    cur, depth = leaf, 0
    while True:
        if not _valid_at(cur, when):
            raise ValueError(f"certificate {cur.subject.rfc4514_string()!r} is not valid at the signing time")
        if cur.fingerprint(hashes.SHA256()) in trusted and _issued(cur, cur):
            break
        issuer = next((c for c in pool if c.subject == cur.issuer and _is_ca(c) and _issued(cur, c)), None)
        depth += 1
        if issuer is None or depth > _MAX_DEPTH:
            raise ValueError(f"certificate {cur.subject.rfc4514_string()!r} does not chain to a given root")
        cur = issuer
    if not can_sign(leaf):
        raise ValueError("the signing certificate does not allow signing (keyUsage digitalSignature or codeSigning)")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the signing certificate's key is not an EC key")
    return key
