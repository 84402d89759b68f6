"""cosign's encrypted private keys (``cosign generate-key-pair``'s cosign.key), opened offline.

The file is one PEM block labelled ``ENCRYPTED SIGSTORE PRIVATE KEY`` (cosign before 2.x wrote ``ENCRYPTED COSIGN
PRIVATE KEY``; cosign reads both) whose body is the JSON that go-securesystemslib's ``encrypted.Encrypt`` makes
(sigstore/cosign pkg/cosign/keys.go, secure-systems-lab/go-securesystemslib encrypted/encrypted.go)::

    {"kdf": {"name": "scrypt", "params": {"N": 65536, "r": 8, "p": 1}, "salt": B64},
     "cipher": {"name": "nacl/secretbox", "nonce": B64}, "ciphertext": B64}

(B64: standard base64, as Go's encoding/json writes a []byte). The secretbox key is scrypt(password, salt, N, r,
p) of 32 bytes; the plaintext is the PKCS#8 DER private key. The password is ``$COSIGN_PASSWORD``, which cosign
also takes as it is when set, even empty (a key generated with an empty password). Like securesystemslib, only
its three scrypt parameter sets are accepted, so that an altered file cannot make the KDF take minutes or GiBs.

Why PyNaCl: secretbox is XSalsa20-Poly1305, which ``cryptography`` lacks (it has no Salsa20/XSalsa20 at all, and
its ChaCha20-Poly1305 is another construction); PyNaCl binds libsodium's ``crypto_secretbox``, the same as Go's
``nacl/secretbox``. The KDF is ``cryptography``'s Scrypt.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import UsageError

PEM_LABELS = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
VARIABLE = "COSIGN_PASSWORD"
# go-securesystemslib's legacy (2^15), standard (2^16, what cosign writes today) and OWASP (2^17) parameters
SCRYPT_PARAMS = frozenset({(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)})
_KEY_SIZE, _NONCE_SIZE = 32, 24
_PEM = re.compile(
    rb"-----BEGIN (?P<label>[A-Z0-9 ]+)-----\r?\n(?P<body>[A-Za-z0-9+/=\s]*?)-----END (?P=label)-----", re.DOTALL
)
MAKE = "make one with cosign generate-key-pair, or give an unencrypted PEM EC key"


def is_cosign_key(data: bytes) -> bool:
    """Whether ``data`` holds a PEM block with one of cosign's encrypted-key labels."""
    return any(b"-----BEGIN " + label.encode() + b"-----" in data for label in PEM_LABELS)


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("a field that should be base64 is not a string")
    return base64.b64decode(value, validate=True)


def _fields(data: bytes) -> tuple[tuple[int, int, int], bytes, bytes, bytes]:
    """(scrypt N r p, salt, nonce, ciphertext) of the PEM block; ValueError saying what is wrong (no key bytes)."""
    block = _PEM.search(data)
    if block is None or block["label"].decode() not in PEM_LABELS:
        raise ValueError("its PEM block is cut or malformed")
    try:
        doc = json.loads(base64.b64decode(re.sub(rb"\s+", b"", block["body"]), validate=True))
        kdf, cipher = doc["kdf"], doc["cipher"]
        if kdf["name"] != "scrypt":
            raise ValueError(f"its key derivation is {str(kdf['name'])[:40]!r}, not scrypt")
        if cipher["name"] != "nacl/secretbox":
            raise ValueError(f"its cipher is {str(cipher['name'])[:40]!r}, not nacl/secretbox")
        params = kdf["params"]
        nrp = (params["N"], params["r"], params["p"])
        salt, nonce, ciphertext = _b64(kdf["salt"]), _b64(cipher["nonce"]), _b64(doc["ciphertext"])
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError("its body is not the JSON of an encrypted key (kdf, cipher, ciphertext)") from e
    if not all(type(v) is int for v in nrp) or nrp not in SCRYPT_PARAMS:
        raise ValueError("its scrypt parameters are none of the three cosign writes (N 2^15..2^17, r 8, p 1)")
    if len(nonce) != _NONCE_SIZE:
        raise ValueError(f"its secretbox nonce is {len(nonce)} bytes, not {_NONCE_SIZE}")
    return nrp, salt, nonce, ciphertext


def decrypt(data: bytes, password: bytes) -> bytes:
    """The plaintext (a DER private key) of cosign's encrypted key ``data``.

    ValueError when the file is not one (its message says why, without key bytes); ``nacl.exceptions.CryptoError``
    when the password does not open it or the ciphertext was altered (secretbox's MAC cannot tell them apart).
    """
    from nacl.secret import SecretBox

    (n, r, p), salt, nonce, ciphertext = _fields(data)
    key = Scrypt(salt=salt, length=_KEY_SIZE, n=n, r=r, p=p).derive(password)
    return SecretBox(key).decrypt(ciphertext, nonce)


def decrypt_file(data: bytes, path: str | Path) -> bytes:
    """:func:`decrypt` with ``$COSIGN_PASSWORD``; UsageError naming ``path`` and what to do (never the password)."""
    from nacl.exceptions import CryptoError

    password = os.environ.get(VARIABLE)
    if password is None:
        raise UsageError(
            f"{path}: a cosign encrypted key; set {VARIABLE} to its password "
            "(empty if generated without one), as for cosign sign"
        )
    try:
        return decrypt(data, os.fsencode(password))  # the bytes of the variable, as Go's os.Getenv gives them
    except ValueError as e:
        raise UsageError(f"{path}: not a cosign encrypted key that modelship reads: {e}; {MAKE}") from None
    except CryptoError:
        raise UsageError(
            f"{path}: {VARIABLE} does not open this cosign encrypted key (a wrong password, or the file "
            "was altered); set it to the password given to cosign generate-key-pair"
        ) from None
