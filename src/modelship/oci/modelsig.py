"""The model signature of a model image: ``model.sig`` (an OMS bundle, ``trust.oms``) in a layer of its own.

Layout (docs/trust.md says why this and not a ``sha256-<hex>.sig`` tag or a referrer): the image's last layer
is a deterministic tar (``oci.layers.data_layer``) holding ``<model dir>/model.sig`` and the dir's parents,
nothing else; the config's ``io.modelship.model.signature`` label names its digest, and it is not one of the
model layers (``io.modelship.model.layers``), so fetch never takes it for a model file. The signature is part
of the image: ``modelship copy``, ``docker pull`` and ``skopeo copy`` carry it, and the folder an image volume
or ``ctr images mount`` shows the app is a model folder that ``model_signing verify key`` accepts as it is.
The price: signing changes the image's digest (one more layer, a new config), so ``sign-model`` writes the
image again and moves its version tag; the model layers are already there, only two small blobs upload.

:func:`with_signature` and :func:`without_signature` are pure (dicts in, dicts out) and inverse, and both
``publish --sign-key`` and ``sign-model`` go through :func:`signed_image`: for one bundle, one digest.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..conventions import EPOCH, MODEL, MODEL_SIGNATURE_LABEL, OCI_TITLE
from ..errors import IntegrityError, ModelshipError, SignatureError, UsageError
from ..manifest import SIGNATURE_NAME, Manifest
from .layers import LAYER_MEDIA_TYPE, Layer, data_layer
from .reference import Reference
from .registry import OCI_CONFIG, RegistryClient, sha256_digest
from .tarread import entries, skip_padding
from .write import Blob, Image, RemoteBlob, Writer, blob, descriptor, dumps

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from ..trust.certs import Signer
    from .modelimage import ModelImage

log = logging.getLogger("modelship")

_CREATED_BY = f"modelship sign: {SIGNATURE_NAME}"  # its history entry, found again by this
_LAYER_MAX = 64 * 1024 * 1024 + 64 * 1024  # trust.oms.MAX_SIGNATURE_BYTES, and the tar around it


def signature_digest(config: Mapping[str, Any]) -> str | None:
    """The digest of the image's signature layer, from its config's label; None: the image is unsigned."""
    labels = (config.get("config") or {}).get("Labels") or {}
    value = labels.get(MODEL_SIGNATURE_LABEL)
    return str(value) if value else None


def with_signature(
    manifest: Mapping[str, Any], config: Mapping[str, Any], layer: Layer, digest: str
) -> tuple[dict, dict]:
    """Copies of an image's manifest and config with the signature ``layer`` appended: its descriptor, diff_id,
    history entry and label. The manifest's config descriptor is left to :func:`rebuild`."""
    m, c = copy.deepcopy(dict(manifest)), copy.deepcopy(dict(config))
    annotations = {f"{MODEL}.layer": layer.title, OCI_TITLE: SIGNATURE_NAME}
    m["layers"] = [*(m.get("layers") or []), _desc(digest, layer.size, annotations)]
    c["rootfs"] = {**(c.get("rootfs") or {"type": "layers"})}
    c["rootfs"]["diff_ids"] = [*(c["rootfs"].get("diff_ids") or []), digest]
    entry = {"created": c.get("created") or EPOCH, "created_by": _CREATED_BY, "comment": "model signature"}
    c["history"] = [*(c.get("history") or []), entry]
    c["config"] = {**(c.get("config") or {})}
    c["config"]["Labels"] = {**(c["config"].get("Labels") or {}), MODEL_SIGNATURE_LABEL: digest}
    return m, c


def _desc(digest: str, size: int, annotations: dict[str, str]) -> dict[str, Any]:
    return {"mediaType": LAYER_MEDIA_TYPE, "digest": digest, "size": size, "annotations": annotations}


def without_signature(manifest: Mapping[str, Any], config: Mapping[str, Any]) -> tuple[dict, dict]:
    """The inverse of :func:`with_signature` (copies; unchanged when the image has no signature layer)."""
    m, c = copy.deepcopy(dict(manifest)), copy.deepcopy(dict(config))
    digest = signature_digest(c)
    if digest is None:
        return m, c
    m["layers"] = [d for d in m.get("layers") or [] if not (isinstance(d, dict) and d.get("digest") == digest)]
    c["rootfs"]["diff_ids"] = [d for d in c["rootfs"].get("diff_ids") or [] if d != digest]
    c["history"] = [
        h for h in c.get("history") or [] if not (isinstance(h, dict) and h.get("created_by") == _CREATED_BY)
    ]
    del c["config"]["Labels"][MODEL_SIGNATURE_LABEL]
    return m, c


def _documents(manifest: Mapping[str, Any], config: Mapping[str, Any]) -> tuple[bytes, Blob]:
    """The manifest's bytes with the config's descriptor, and the config blob."""
    cfg = blob(dumps(config), str((manifest.get("config") or {}).get("mediaType") or OCI_CONFIG))
    return dumps({**manifest, "config": cfg.descriptor}), cfg


def rebuild(
    manifest: Mapping[str, Any], config: Mapping[str, Any], media_type: str, sources: Mapping[str, Blob]
) -> Image:
    """The image value of ``manifest`` over ``config``; ``sources``: each layer's Blob by digest."""
    data, cfg = _documents(manifest, config)
    return Image(data, cfg, tuple(sources[str(d["digest"])] for d in manifest["layers"]), media_type)


def signed_image(
    manifest: Mapping[str, Any],
    config: Mapping[str, Any],
    media_type: str,
    sources: Mapping[str, Blob],
    bundle: bytes,
    image_model_dir: str,
) -> Image:
    """The image with ``bundle`` as its signature layer (replacing one it has)."""
    layer = data_layer(image_model_dir, SIGNATURE_NAME, bundle)
    digest = layer.digest(memo=False)
    m, c = with_signature(*without_signature(manifest, config), layer, digest)
    return rebuild(m, c, media_type, {**sources, digest: Blob(m["layers"][-1], layer)})


def resubject(referrer: Image, subject: Image) -> Image:
    """``referrer`` (the ModelPack manifest) pointing at ``subject`` instead."""
    m = json.loads(referrer.data)
    m["subject"] = descriptor(subject)
    return Image(dumps(m), referrer.config, referrer.layers, referrer.media_type)


def sign_files(manifest: Manifest, key: ec.EllipticCurvePrivateKey | Signer, ref: Reference) -> bytes:
    """The OMS bundle of a model image's files, from the sha256s its manifest records (no file read)."""
    from ..trust import oms

    name = ref.repository.rsplit("/", 1)[-1]
    return oms.sign({f.path: f.sha256 for f in manifest.files if f.sha256}, key, name)


# ---- reading ------------------------------------------------------------------------------------------------


class _Bytes:
    """A tar stream over a small blob in memory (tarread.TarStream)."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.size = data, 0, len(data)

    def read_exact(self, n: int) -> bytes:
        if self.pos + n > self.size:
            raise IntegrityError("the tar ends early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def _malformed(where: str, why: str) -> SignatureError:
    return SignatureError(
        f"{where}: not a signature layer ({why}); sign the version again", kind=SignatureError.MALFORMED
    )


def read_signature(client: RegistryClient, img: ModelImage) -> bytes | None:
    """The ``model.sig`` a model image carries (its layer's digest checked); None when it carries none."""
    digest = signature_digest(img.config)
    if digest is None:
        return None
    where = f"{img.name}@{img.digest[:19]}…: signature layer {digest[:19]}…"
    desc = next(
        (d for d in img.manifest.get("layers") or [] if isinstance(d, dict) and d.get("digest") == digest), None
    )
    if desc is None:
        raise _malformed(where, "its config names a layer the manifest does not list")
    if desc.get("mediaType") != LAYER_MEDIA_TYPE or any(d.get("digest") == digest for d in img.layers):
        raise _malformed(where, f"a {desc.get('mediaType')} layer, or one of the model layers")
    if not isinstance(desc.get("size"), int) or not 0 < desc["size"] <= _LAYER_MAX:
        raise _malformed(where, f"size {str(desc.get('size'))[:20]}")
    return _bundle_of(client.get_blob(img.ref.repository, digest, _LAYER_MAX), img.image_model_dir, where)


def _bundle_of(data: bytes, image_model_dir: str, where: str) -> bytes:
    stream, base, bundle = _Bytes(data), image_model_dir.strip("/"), None
    try:
        for e in entries(stream, where):
            if e.kind == "dir":
                if e.name != base and not base.startswith(e.name + "/"):
                    raise _malformed(where, f"it holds folder {e.name!r}")
                continue
            if e.name != f"{base}/{SIGNATURE_NAME}" or bundle is not None:
                raise _malformed(where, f"it holds {e.name[:200]!r}")
            bundle = stream.read_exact(e.size)
            skip_padding(stream, e.size)
    except IntegrityError as err:
        raise _malformed(where, str(err).removeprefix(where + ": ")) from None
    if bundle is None:
        raise _malformed(where, f"no {SIGNATURE_NAME} in it")
    return bundle


def held_signed(
    client: RegistryClient,
    ref: Reference,
    unsigned: Image,
    manifest: Manifest,
    key: ec.EllipticCurvePrivateKey | Signer,
) -> Image | None:
    """The image at ``ref`` when it is ``unsigned`` plus a signature of ``manifest``'s files by ``key`` (publish
    --sign-key run again: nothing to write); None otherwise."""
    from ..trust import oms
    from .modelimage import read_model_image

    try:
        img = read_model_image(client, ref)
        bundle = read_signature(client, img)
        if bundle is None or _documents(*without_signature(img.manifest, img.config))[0] != unsigned.data:
            return None
        oms.verify(bundle, {f.path: f.sha256 or "" for f in manifest.files}, [key.public_key()])
    except ModelshipError:
        return None
    data, cfg = _documents(img.manifest, img.config)
    if sha256_digest(data) != img.digest:  # not written the way modelship writes: not "the same"
        return None
    return Image(data, cfg, (), img.media_type)


# ---- signing an image that is published ----------------------------------------------------------------------


def write_signed(client: RegistryClient, img: ModelImage, tag: str, bundle: bytes, modelpack_tag: str) -> Image:
    """Write ``img`` again with ``bundle`` as its signature layer, through the one image writer (only the new
    blobs upload), re-point its ModelPack manifest (``modelpack_tag``, when it refers to ``img``), and move
    ``tag`` to the signed image, last. Refuses when ``tag`` moved away from ``img`` meanwhile."""
    repo = img.ref.repository
    sources = {
        str(d["digest"]): Blob(d, RemoteBlob(client, repo, str(d["digest"]), int(d["size"])))
        for d in img.manifest.get("layers") or []
    }
    signed = signed_image(img.manifest, img.config, img.media_type, sources, bundle, img.image_model_dir)
    referrers = []
    if client.head_manifest(repo, modelpack_tag) is not None:
        got = client.get_manifest(repo, modelpack_tag)
        mp = got.json()
        if (mp.get("subject") or {}).get("digest") == img.digest:
            config = mp["config"]
            source = Blob(config, RemoteBlob(client, repo, str(config["digest"]), int(config["size"])))
            referrers.append(resubject(Image(got.data, source, (), got.media_type), signed))
    if client.head_manifest(repo, tag) != img.digest:
        raise UsageError(f"{img.ref.name}:{tag} moved while it was being signed; run it again")
    writer = Writer(client, repo, title=f"sign {img.ref.name}:{tag}")
    writer.upload(signed, *referrers)
    writer.put(signed, *referrers)
    for mp_image in referrers:
        writer.tag(mp_image, modelpack_tag)
    writer.tag(signed, tag)
    log.info(
        "%s:%s signed: %s → %s (%d bytes uploaded)", img.ref.name, tag, img.digest, signed.digest, writer.uploaded_bytes
    )
    return signed


__all__ = [
    "read_signature",
    "resubject",
    "signature_digest",
    "signed_image",
    "with_signature",
    "without_signature",
    "write_signed",
]
