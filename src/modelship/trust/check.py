"""Verify keys, and a resolved version's signature checked against them (``--verify-key``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NotFoundError, SignatureError
from ..manifest import SIGNATURE_NAME, Manifest, Resolution, Skipped

if TYPE_CHECKING:
    from ..repos import Repository
    from . import oms

log = logging.getLogger("modelship")

VERIFY_KEYS_ENV = "MODELSHIP_VERIFY_KEYS"  # a path list (os.pathsep-separated), for --verify-key not given
VERIFY_CERT_CHAINS_ENV = "MODELSHIP_VERIFY_CERT_CHAINS"  # the same, for --verify-cert-chain not given


def _env_paths(name: str) -> list[str]:
    return [p for p in os.environ.get(name, "").split(os.pathsep) if p]


def verify_keys(
    paths: Sequence[str | Path] | None, cert_chains: Sequence[str | Path] | None = None
) -> list[oms.VerifyKey]:
    """The public keys at ``paths`` (None: those MODELSHIP_VERIFY_KEYS names), and the trusted root certificates
    in ``cert_chains`` (None: MODELSHIP_VERIFY_CERT_CHAINS) as one ``certs.Roots``; [] means: verify nothing.
    The key readers (``cryptography``) are imported only when there is a key to read: 50 ms of every start."""
    paths = _env_paths(VERIFY_KEYS_ENV) if paths is None else paths
    cert_chains = _env_paths(VERIFY_CERT_CHAINS_ENV) if cert_chains is None else cert_chains
    if not paths and not cert_chains:
        return []
    from . import certs, oms

    keys: list[oms.VerifyKey] = list(oms.load_public_keys(paths))
    roots = certs.load_roots(cert_chains)
    return keys + ([roots] if roots is not None else [])


def _what(res: Resolution) -> str:
    return f"{res.uri} version {res.version or '(unversioned)'} {SIGNATURE_NAME}"


def signed_version(
    repo: Repository, res: Resolution, keys: Sequence[oms.VerifyKey], signer: str | None = None
) -> tuple[bytes, oms.Verified]:
    """``res``'s signature, read from ``repo`` and verified against ``keys`` and ``res``'s sha256s (and, with
    ``signer``, a lock's fingerprint, made by that key); SignatureError (unsigned, malformed, unknown key, bytes
    differ) in one line otherwise."""
    bundle = repo.signature(res)
    if bundle is None:
        raise SignatureError(
            f"{_what(res)}: the version is unsigned; publish it with --sign-key", kind=SignatureError.UNSIGNED
        )
    from . import oms

    done = oms.verify(bundle, {f.path: f.sha256 or "" for f in res.files}, keys, _what(res))
    if signer is not None and done.fingerprint != signer:
        raise SignatureError(
            f"{_what(res)}: signed by {done.fingerprint}, the lock says {signer}; re-lock to accept the new signer",
            kind=SignatureError.UNKNOWN_KEY,
            fingerprints=(done.fingerprint, signer),
        )
    return bundle, done


def latest_signed(
    resolve: Callable[[frozenset[str]], Resolution], repo: Repository, keys: Sequence[oms.VerifyKey]
) -> Resolution:
    """The newest version ``resolve`` (given the versions to leave out) finds whose signature verifies; newer
    ones that do not are skipped, saying which and why in one warning line and in the result's ``skipped``.
    SignatureError when none verifies."""
    skipped: list[tuple[str, SignatureError]] = []
    while True:
        try:
            res = resolve(frozenset(v for v, _ in skipped))
        except NotFoundError:
            if not skipped:
                raise
            why = ", ".join(f"{v} ({e.kind})" for v, e in skipped)
            raise SignatureError(
                f"no version verifies against the verify key(s): {why}; first: {skipped[0][1]}",
                kind=skipped[0][1].kind,
                fingerprints=skipped[0][1].fingerprints,
            ) from None
        try:
            signed_version(repo, res, keys)
        except SignatureError as e:
            if res.version is None:  # an unversioned model: nothing older to fall back to
                raise
            skipped.append((res.version, e))
            continue
        if skipped:
            why = ", ".join(f"{v} ({e.kind})" for v, e in skipped)
            log.warning("%s: skipped newer version(s) that do not verify: %s; latest is %s", res.uri, why, res.version)
        return replace(res, skipped=tuple(Skipped(v, e.kind) for v, e in skipped))


def check_bytes(bundle: bytes, res: Resolution, shas: Mapping[str, str], keys: Sequence[oms.VerifyKey]) -> None:
    """The signature again, over the sha256s of the bytes actually fetched (what is installed)."""
    from . import oms

    oms.verify(bundle, shas, keys, _what(res))


@dataclass(frozen=True)
class FolderSignature:
    """A local model folder's ``model.sig`` on its way into an image (``build --model``, ``assemble --model``):
    its bytes (None: the folder has none) and the keys to check it against (none: it is only carried along)."""

    root: Path
    bundle: bytes | None
    keys: Sequence[oms.VerifyKey]

    def signer(self, manifest: Manifest) -> str | None:
        """The signer's fingerprint, once the signature verifies against the keys over ``manifest``'s sha256s
        (the folder's, from modeldir); None without keys (nothing was checked). SignatureError otherwise."""
        if not self.keys:
            return None
        what = str(self.root / SIGNATURE_NAME)
        if self.bundle is None:
            raise SignatureError(
                f"{what}: the model folder is unsigned; fetch it with --verify-key (DEST gets model.sig)",
                kind=SignatureError.UNSIGNED,
            )
        from . import oms

        done = oms.verify(self.bundle, {f.path: f.sha256 or "" for f in manifest.files}, self.keys, what)
        log.info("%s is signed by %s", self.root, done.fingerprint)
        return done.fingerprint


def image_model(
    root: Path, key_paths: Sequence[str | Path] | None, allow_unsafe_pickle: Sequence[str | Path]
) -> tuple[Manifest, bytes | None, str | None]:
    """A model folder on its way into an image (``build --model``, ``assemble --model``), checked before any image
    work: its manifest (modeldir), its model.sig (None: it has none) and the signer that verified (None: no verify
    key). The keys and model.sig are read first, then the pickle scan, then the signature over the manifest."""
    from .. import modeldir
    from . import pickles

    sig = folder_signature(root, key_paths)
    pickles.check_folder(root, allow_unsafe_pickle)
    manifest = modeldir.model_manifest(root)
    return manifest, sig.bundle, sig.signer(manifest)


def folder_signature(root: Path, key_paths: Sequence[str | Path] | None) -> FolderSignature:
    """The verify keys (None: MODELSHIP_VERIFY_KEYS; a bad key file is a UsageError) and ``root``'s
    ``model.sig``, read before anything else looks at the folder: a symlinked one is refused by name."""
    from .. import modeldir

    keys = verify_keys(key_paths)
    return FolderSignature(root, modeldir.signature(root), keys)
