"""The ``model_signature`` image check (``--modelship-verify-key PUB.pem``): the model in the running container
is the one its signer signed.

The model folder's files are read out of the container (``docker cp``, no tool needed in the image), their
sha256s computed here, and the folder's ``model.sig`` (an OpenSSF model signature, modelship.trust.oms) verified
against the given keys over exactly those sha256s: an unsigned model, one signed by another key, and a byte
changed in the image after it was signed each fail in one line. ``modelship.json`` is not a model file (the
signature ignores it, and ``model_files_sha256`` checks it against the files).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .checks import MANIFEST_NAME, SIGNATURE_NAME, Check

if TYPE_CHECKING:
    from .container import ModelshipContainer
    from .images import ImageInfo


def signature_check(key_paths: Sequence[str]) -> Check:
    """The check against the PEM public keys at ``key_paths`` (loaded once, here)."""
    from modelship.trust.oms import load_public_keys

    keys = load_public_keys(key_paths)

    def run(image: ImageInfo, container: ModelshipContainer | None) -> list[str]:
        from modelship.errors import SignatureError
        from modelship.manifest import MAX_SIGNATURE_BYTES
        from modelship.trust import oms

        assert container is not None
        shas: dict[str, str] = {}
        bundle = None
        for member, reader in container.iter_files(image.model_dir):
            if member.name == SIGNATURE_NAME:
                if reader is None:  # a link (or anything else) could name another model's signature
                    return [f"{image.model_dir}/{SIGNATURE_NAME} is not a regular file; a signature is read from one"]
                bundle = reader.read(MAX_SIGNATURE_BYTES + 1)  # a larger one is refused by verify
            elif reader is not None and member.name != MANIFEST_NAME:
                h = hashlib.sha256()
                for chunk in iter(lambda r=reader: r.read(1 << 20), b""):
                    h.update(chunk)
                shas[member.name] = h.hexdigest()
        what = f"{image.model_dir}/{SIGNATURE_NAME}"
        if bundle is None:
            return [f"no {what}: the model is unsigned; build or assemble it from a folder fetched with --verify-key"]
        try:
            oms.verify(bundle, shas, keys, what)
        except SignatureError as e:
            return [str(e)]
        return []

    doc = "the model's model.sig verifies against the verify key(s) over the sha256s of its files in the image"
    return Check("model_signature", doc, True, run)
