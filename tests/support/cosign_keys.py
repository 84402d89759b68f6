"""cosign's encrypted private keys written the way cosign writes them, apart from modelship's reader.

Follows sigstore/cosign pkg/cosign/keys.go (``marshalKeyPair``: PKCS#8 DER, ``encrypted.Encrypt``, a PEM block)
and secure-systems-lab/go-securesystemslib encrypted/encrypted.go (32-byte salt, scrypt to a 32-byte key,
a 24-byte random nonce, ``secretbox.Seal``; the JSON of Go's ``json.Marshal``, []byte fields in standard
base64). The KDF here is hashlib's (OpenSSL's scrypt) and the box libsodium's ``crypto_secretbox`` through
PyNaCl's bindings, where modelship uses cryptography's Scrypt and ``nacl.secret.SecretBox``. The document is a
dict before it is wrapped, so a test can alter one field of a file otherwise cosign's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import textwrap
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nacl import bindings

SIGSTORE_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_LABEL = "ENCRYPTED COSIGN PRIVATE KEY"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encrypt(plaintext: bytes, password: bytes, *, n: int = 65536, r: int = 8, p: int = 1) -> dict:
    """go-securesystemslib's ``encrypted.Encrypt`` document (cosign's default is N 2^16, r 8, p 1)."""
    salt, nonce = os.urandom(32), os.urandom(24)
    key = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=256 * 1024 * 1024)
    sealed = bindings.crypto_secretbox(plaintext, nonce, key)  # MAC (16 bytes) then ciphertext, as Go's Seal
    return {
        "kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p}, "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(sealed),
    }


def pem(doc: dict, label: str = SIGSTORE_LABEL) -> bytes:
    """The PEM block of ``doc`` as Go's ``pem.EncodeToMemory`` writes it (64-character lines)."""
    body = base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()
    return f"-----BEGIN {label}-----\n{textwrap.fill(body, 64)}\n-----END {label}-----\n".encode()


def pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    """``x509.MarshalPKCS8PrivateKey``: what cosign encrypts."""
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_key(
    path: Path, password: bytes, *, key: ec.EllipticCurvePrivateKey | None = None, label: str = SIGSTORE_LABEL, n=65536
) -> ec.EllipticCurvePrivateKey:
    """A cosign.key at ``path`` encrypted with ``password``, of ``key`` (a new P-256 key by default); the key."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(pem(encrypt(pkcs8(key), password, n=n), label))
    return key
