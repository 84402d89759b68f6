"""Signing a version that is already published (by modelship or another tool): ``modelship sign-model``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._resolve import lock
from .._retry import retrying
from ..errors import UsageError
from ..manifest import SIGNATURE_NAME
from ..repos import opened
from ..uri import parse
from . import certs, oms


@dataclass(frozen=True)
class SignResult:
    """The version signed, where its signature went, and the signer's key fingerprint; for ``oci://`` also the
    signed model image (a new digest, which the version tag now names) and it pinned by that digest."""

    uri: str
    version: str | None
    signature: str
    fingerprint: str
    image_digest: str | None = None
    ref: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` view."""
        out = {"uri": self.uri, "version": self.version, "signature": self.signature, "signer": self.fingerprint}
        if self.image_digest is not None:
            out.update(image_digest=self.image_digest, ref=self.ref)
        return out


def sign_version(
    uri: str,
    *,
    version: str,
    sign_key: str | Path,
    force: bool = False,
    credential: Any = None,
    sign_cert: str | Path | None = None,
    cert_chain: Sequence[str | Path] = (),
) -> SignResult:
    """Write ``model.sig`` beside published ``version`` of ``uri``, over the sha256s its manifest records (a
    version published without them is hashed once through the cache); a model image (``oci://``) is written
    again with it as a layer and its version tag moved (``oci.modelsig``). An existing signature is replaced only
    with ``force``. ``sign_cert`` (+ ``cert_chain``): the key's certificate (and its chain) in the signature."""
    key = certs.load_signer(sign_key, sign_cert, cert_chain)
    pinned = lock(uri, version=version, credential=credential, verify_keys=[])
    parsed = parse(uri)
    with opened(parsed, credential) as repo:
        res = retrying(f"resolving {parsed.display}", lambda: repo.resolve(version, False))
        now = {f.path: f.sha256 for f in res.files}
        if (
            res.version != pinned.version
            or set(now) != {f.path for f in pinned.files}
            or any(now[f.path] not in (None, f.sha256) for f in pinned.files)
        ):
            raise UsageError(f"{parsed.display} version {version} changed while it was being signed; run it again")
        if not force and repo.signature(res) is not None:
            raise UsageError(f"{res.uri} version {version} is already signed; --force replaces its {SIGNATURE_NAME}")
        name = parsed.prefix.strip("/").rsplit("/", 1)[-1] or "model"
        bundle = oms.sign({f.path: f.sha256 for f in pinned.files if f.sha256}, key, name)
        where = repo.write_signature(res, bundle)
    fingerprint = oms.fingerprint(key.public_key())
    return SignResult(res.uri, res.version, where.location, fingerprint, where.image_digest, where.ref)
