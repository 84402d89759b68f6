"""publish(): upload a model folder as a new version of the model at a URI, through its repository
(``modelship.repos``): folders of files with a publish marker (az://, s3://, file://), or model images (oci://)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .repos import opened
from .repos.base import PublishRequest, PublishResult
from .trust import pickles
from .uri import parse


def publish(
    model_dir: str | Path,
    uri: str,
    *,
    version: str,
    force: bool = False,
    credential: Any = None,
    workers: int | None = None,
    progress: bool | None = None,
    image_model_dir: str | None = None,
    sign_key: str | Path | None = None,
    sign_cert: str | Path | None = None,
    cert_chain: Sequence[str | Path] = (),
    allow_unsafe_pickle: Sequence[str | Path] = (),
) -> PublishResult:
    """Upload ``model_dir`` as ``version`` of the model at ``uri``; it counts as published only once whole.

    A folder store gets ``URI/<version>/`` (an interrupted or failed publish of the same files is resumed by
    calling this again, without ``force``); ``oci://REGISTRY/REPO`` gets a model image tagged ``version``
    (``image_model_dir``: the model's folder in it; see modelship.oci.modelimage). ``force`` replaces a version that
    exists. ``workers``: files uploaded at once to a folder store (None: MODELSHIP_CONCURRENCY, else by file size).
    ``sign_key``: a PEM EC private key (``openssl ecparam -name prime256v1``); a folder store's version then gets
    ``model.sig``, an OpenSSF model signature (``model_signing verify key`` checks it), before its manifest.
    ``sign_cert`` (+ ``cert_chain``): the key's PEM certificate (and those up to the root), carried in the
    signature as ``model_signing sign certificate`` does (``verify_cert_chain`` then checks it).
    A pickle that imports a dangerous global (``os.system``) is refused before anything is written, unless named
    in ``allow_unsafe_pickle`` (see modelship.trust.pickles).
    """
    target = parse(uri)
    pickles.check_folder(Path(model_dir).expanduser(), allow_unsafe_pickle)
    with opened(target, credential) as repo:
        return repo.publish(
            PublishRequest(
                Path(model_dir),
                version,
                force=force,
                workers=workers,
                progress=progress,
                image_model_dir=image_model_dir,
                sign_key=Path(sign_key) if sign_key is not None else None,
                sign_cert=Path(sign_cert) if sign_cert is not None else None,
                cert_chain=tuple(Path(p) for p in cert_chain),
            )
        )
