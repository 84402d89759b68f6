"""OpenSSF Model Signing (OMS) signatures built from, and checked against, the sha256s modelship records.

The format is the one ``model_signing`` 1.1 (sigstore/model-transparency) writes with ``sign key``: a Sigstore
bundle (v0.3 JSON) holding a DSSE envelope over an in-toto v1 statement whose predicate
(``https://model_signing/signature/v1.0``) lists every file as ``{name, algorithm: sha256, digest}``, and whose
one subject carries the sha256 over those digests in listing order. Signing here reads no model byte: the
statement is made from a manifest's digests, which publish and fetch already compute. ``model_signing verify
key`` accepts what ``sign`` writes, and ``verify`` accepts what ``model_signing sign key`` writes (file
serialization, sha256; tests/integration/test_model_signing_cli.py runs both directions).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import SignatureError, UsageError
from ..manifest import MANIFEST_NAME, MAX_SIGNATURE_BYTES, SIGNATURE_NAME
from . import cosign_key
from .certs import Roots, Signer, chain_key
from .dsse import PAYLOAD_TYPE, pae

VerifyKey = ec.EllipticCurvePublicKey | Roots  # what --verify-key and --verify-cert-chain give

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
# Recorded as ignored so that `model_signing verify key DEST` passes beside modelship's own files too.
_IGNORED = (MANIFEST_NAME, SIGNATURE_NAME)
_CURVES = {"secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384, "secp521r1": hashes.SHA512}


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """``sha256:<hex>`` of the key's DER SubjectPublicKeyInfo: how modelship names a signer."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _key_hint(key: ec.EllipticCurvePublicKey) -> str:
    # model_signing's bundle hint: sha256 of the PEM (not DER) public key, hex
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def _read_key_file(path: str | Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: cannot read the {what} ({e.strerror or e}); give the path of a PEM file") from e
    if len(data) > 1024 * 1024:
        raise UsageError(f"{path}: not a PEM {what} (larger than 1 MiB)")
    return data


def _hash_for(key: ec.EllipticCurvePublicKey, path: str | Path) -> hashes.HashAlgorithm:
    algorithm = _CURVES.get(key.curve.name)
    if algorithm is None:
        raise UsageError(f"{path}: an EC key on {key.curve.name}; use P-256 (openssl ecparam -name prime256v1)")
    return algorithm()


def load_private_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    """The EC private key at ``path``: unencrypted PEM (what ``openssl ecparam -genkey`` writes), or cosign's
    encrypted cosign.key opened with ``$COSIGN_PASSWORD`` (:mod:`.cosign_key`); UsageError naming the file else."""
    data = _read_key_file(path, "private key")
    if cosign_key.is_cosign_key(data):
        der = cosign_key.decrypt_file(data, path)
        try:  # cosign writes PKCS#8; cryptography also reads the SEC1 form, which cosign itself refuses
            key = serialization.load_der_private_key(der, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise UsageError(f"{path}: the cosign key opens but holds no DER private key; {cosign_key.MAKE}") from None
    else:
        key = _load_pem(data, path)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"{path}: not an EC private key; create one with openssl ecparam -name prime256v1")
    _hash_for(key.public_key(), path)
    return key


def _load_pem(data: bytes, path: str | Path) -> Any:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError as e:
        raise UsageError(
            f"{path}: the private key is encrypted; give an unencrypted PEM EC key, or cosign's cosign.key with "
            "COSIGN_PASSWORD set"
        ) from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise UsageError(f"{path}: not a PEM private key; create one with openssl ecparam -name prime256v1") from e


def load_public_keys(paths: Iterable[str | Path]) -> list[ec.EllipticCurvePublicKey]:
    """The PEM EC public keys at ``paths`` (``openssl ec -pubout``); UsageError naming the first bad file."""
    keys = []
    for path in paths:
        data = _read_key_file(path, "public key")
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as e:
            raise UsageError(f"{path}: not a PEM public key; export one with openssl ec -pubout") from e
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise UsageError(f"{path}: not an EC public key; export one with openssl ec -pubout")
        _hash_for(key, path)
        keys.append(key)
    return keys


def _path_key(name: str) -> tuple[str, ...]:
    # model_signing sorts resources as PurePosixPath objects (by components), not as strings: "a/b" < "a-c"
    return PurePosixPath(name).parts


def statement(files: Mapping[str, str], name: str) -> dict[str, Any]:
    """The in-toto statement of ``files`` (path -> sha256 hex), as model_signing's ``Payload`` makes it."""
    for path in _IGNORED:
        if path in files:
            raise UsageError(f"{path}: a model file with a name modelship keeps for itself; rename it")
    root = hashlib.sha256()
    resources = []
    for path in sorted(files, key=_path_key):
        digest = files[path]
        root.update(bytes.fromhex(digest))
        resources.append({"name": path, "algorithm": "sha256", "digest": digest})
    serialization_args = {
        "method": "files",
        "hash_type": "sha256",
        "ignore_paths": list(_IGNORED),
        "allow_symlinks": False,
    }
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": root.hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"serialization": serialization_args, "resources": resources},
    }


def sign(files: Mapping[str, str], key: ec.EllipticCurvePrivateKey | Signer, name: str = "model") -> bytes:
    """An OMS signature bundle (JSON bytes) of ``files`` (path -> sha256 hex) by ``key``; reads no file. A
    ``certs.Signer`` with certificates puts them in the bundle (``model_signing sign certificate``'s form)."""
    payload = (json.dumps(statement(files, name), indent=2) + "\n").encode()
    public = key.public_key()
    sig = key.sign(pae(PAYLOAD_TYPE, payload), ec.ECDSA(_hash_for(public, "signing key")))
    material: dict[str, Any] = {"publicKey": {"hint": _key_hint(public)}}
    if chain := getattr(key, "certificates", ()):
        der = [c.public_bytes(serialization.Encoding.DER) for c in chain]
        material = {"x509CertificateChain": {"certificates": [{"rawBytes": base64.b64encode(d).decode()} for d in der]}}
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {**material, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
        },
    }
    return (json.dumps(bundle, indent=2) + "\n").encode()


@dataclass(frozen=True)
class Verified:
    """A signature that verified: the signer's key fingerprint and the files it vouches for (path -> sha256)."""

    fingerprint: str
    files: Mapping[str, str]


def _malformed(what: str, why: str) -> SignatureError:
    line = f"{what}: not a model signature ({why}); sign the version again"
    return SignatureError(line, kind=SignatureError.MALFORMED)


def _envelope(bundle: bytes, what: str) -> tuple[bytes, list[bytes], list[bytes]]:
    """The DSSE payload and signatures of a bundle, and its certificates (DER, the signing one first; none for
    a key's bundle), checked for shape only."""
    if len(bundle) > MAX_SIGNATURE_BYTES:
        raise _malformed(what, f"larger than {MAX_SIGNATURE_BYTES} bytes")
    try:
        doc = json.loads(bundle)
        if doc.get("mediaType") != BUNDLE_MEDIA_TYPE:
            raise _malformed(what, f"media type {str(doc.get('mediaType'))[:80]!r}, not a Sigstore bundle v0.3")
        env = doc["dsseEnvelope"]
        if env.get("payloadType") != PAYLOAD_TYPE:
            raise _malformed(what, "the signed payload is not an in-toto statement")
        payload = base64.b64decode(env["payload"], validate=True)
        sigs = [base64.b64decode(s["sig"], validate=True) for s in env["signatures"]]
        chain = (doc.get("verificationMaterial") or {}).get("x509CertificateChain") or {}
        certs = [base64.b64decode(c["rawBytes"], validate=True) for c in chain.get("certificates") or []]
    except SignatureError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
        raise _malformed(what, "truncated or garbled JSON" if isinstance(e, ValueError) else f"missing {e}") from e
    if not sigs:
        raise _malformed(what, "no signature in the envelope")
    return payload, sigs, certs


def _signer(payload: bytes, sigs: Sequence[bytes], given: Sequence[VerifyKey], chain: list[bytes], what: str) -> str:
    keys = [k for k in given if isinstance(k, ec.EllipticCurvePublicKey)]
    roots = [r for r in given if isinstance(r, Roots)]
    why = ""
    for r in roots if chain else ():  # a certificate's bundle: its key, once the chain leads to a given root
        try:
            keys.append(chain_key(chain, r))
        except ValueError as e:
            why = f"; its certificate: {e}"
    for key in keys:
        algorithm = ec.ECDSA(_hash_for(key, "verify key"))
        for sig in sigs:
            try:
                key.verify(sig, pae(PAYLOAD_TYPE, payload), algorithm)
            except InvalidSignature:
                continue
            return fingerprint(key)
    prints = tuple(fingerprint(k) for k in given if isinstance(k, ec.EllipticCurvePublicKey))
    named = [f"any of the {len(prints)} verify key(s) ({', '.join(prints)})"] if prints else []
    if roots:
        named.append(f"a certificate of the root(s) in {', '.join(p for r in roots for p in r.paths)}")
    raise SignatureError(
        f"{what}: not signed by {' or '.join(named)}{why}; check the key or who published it",
        kind=SignatureError.UNKNOWN_KEY,
        fingerprints=prints,
    )


def _signed_files(payload: bytes, what: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """The files (path -> sha256) a verified statement lists, and the paths it says were left out."""
    try:
        st = json.loads(payload)
        if st["_type"] != STATEMENT_TYPE or st["predicateType"] != PREDICATE_TYPE:
            raise _malformed(what, f"statement type {str(st['predicateType'])[:80]!r}")
        ser = st["predicate"]["serialization"]
        if ser.get("method") != "files" or ser.get("hash_type") != "sha256":
            raise _malformed(what, "only per-file sha256 signatures can be checked against a manifest")
        files: dict[str, str] = {}
        root = hashlib.sha256()
        for r in st["predicate"]["resources"]:
            if r["algorithm"] != "sha256" or len(bytes.fromhex(r["digest"])) != 32 or r["name"] in files:
                raise _malformed(what, f"resource {str(r['name'])[:200]!r}")
            root.update(bytes.fromhex(r["digest"]))
            files[str(r["name"])] = r["digest"].lower()
        subjects = st["subject"]
        if len(subjects) != 1 or subjects[0]["digest"]["sha256"] != root.hexdigest():
            raise _malformed(what, "its subject digest does not match its files")
        ignored = tuple(str(p) for p in ser.get("ignore_paths", ()))
    except SignatureError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _malformed(what, "the statement is garbled") from e
    return files, ignored


def _is_ignored(path: str, ignored: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in ignored)


def verify(bundle: bytes, files: Mapping[str, str], keys: Sequence[VerifyKey], what: str = "signature") -> Verified:
    """Check an OMS bundle: signed by one of ``keys`` over exactly ``files`` (path -> sha256 hex). ``keys`` may
    hold ``certs.Roots``: a bundle whose certificate chains to one of them is signed by that certificate's key.

    SignatureError (``kind``: malformed, unknown key, bytes differ) otherwise; ``what`` names the signature
    in its one line. Files the signature says it ignored (.git, modelship.json, ...) may be present unsigned."""
    if not keys:
        raise UsageError("no verify key given; pass --verify-key PUB.pem")
    payload, sigs, chain = _envelope(bundle, what)
    signer = _signer(payload, sigs, keys, chain, what)
    signed, ignored = _signed_files(payload, what)
    present = {p: d.lower() for p, d in files.items() if p not in _IGNORED and not _is_ignored(p, ignored)}
    for path in sorted(set(signed) | set(present)):
        why = None
        if path not in present:
            why = f"signed file {path} is missing"
        elif path not in signed:
            why = f"file {path} is not signed"
        elif present[path] != signed[path]:
            why = f"file {path} has sha256 {present[path][:12]}…, signed {signed[path][:12]}…"
        if why:
            raise SignatureError(
                f"{what}: {why}; these are not the bytes its signer signed",
                kind=SignatureError.BYTES_DIFFER,
                fingerprints=(signer,),
            )
    return Verified(signer, signed)
