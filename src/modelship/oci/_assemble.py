"""assemble(): the model's layers appended to an app image in its registry, no Docker engine.

The app image stays as it is (its layers are reused by digest: HEAD, else mounted from its repository, else
copied from its registry); model layers it already carries -- those named by its config label
``io.modelship.model.layers`` -- are replaced. The new image's config gets ``rootfs.diff_ids`` and
``history`` for the new layers, the ``io.modelship.model.*`` labels that ``modelship build`` writes,
``MODELSHIP_MODEL_DIR`` and a ``created`` that is never "now" (``SOURCE_DATE_EPOCH``, else the app's own).
The result is always an **OCI image manifest** (an OCI index for a multi-platform app): it is the one format
with a standard media type for uncompressed layers (``application/vnd.oci.image.layer.v1.tar``) and with
manifest annotations (``org.opencontainers.image.base.digest``/``.base.name``); a Docker v2 app's layers are
the same bytes under OCI's equivalent media types, so they are reused as they are.

Order of writes: blobs the registry lacks, then each manifest by digest, then the tag -- so a run that fails
leaves the tag where it was, and one that succeeds leaves it on a complete image. Everything is JSON with
sorted keys and no spaces: same app digest + same model ⇒ same image digest, and a run with nothing changed
uploads nothing. The writes are the one image writer's (``modelship.oci.write``): this module is the plan -- the new
config and manifest per platform, the app layers reused, the model layers added.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..conventions import (
    EPOCH,
    MODEL,
    MODEL_DIR,
    MODEL_DIR_LABEL,
    MODEL_LAYERS_LABEL,
    MODEL_SIGNER_LABEL,
    OCI,
    created,
    model_labels,
)
from ..errors import ModelshipError, NotFoundError, UsageError
from ..manifest import Manifest
from .auth import login
from .layers import LARGE_FILE, LAYER_MEDIA_TYPE, Layer, layer_digests, model_layers
from .reference import Reference, parse_reference
from .registry import CHUNK, DOCKER_TO_OCI_LAYER, INDEX_TYPES, MANIFEST_TYPES, OCI_MANIFEST, Fetched, RegistryClient
from .remote import platform_of
from .write import Blob, Image, Index, RemoteBlob, Writer, blob, dumps, image, index

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from ..trust.cosign import ImageSignature
    from ..trust.evidence import Build, Evidence

log = logging.getLogger("modelship")

LAYER_ANNOTATION = f"{MODEL}.layer"  # on each model layer's descriptor: what it holds
BASE_DIGEST = f"{OCI}.base.digest"
BASE_NAME = f"{OCI}.base.name"


@dataclass(frozen=True)
class ModelLayer:
    digest: str
    size: int
    title: str
    uploaded: bool


@dataclass(frozen=True)
class AssembleResult:
    """What ``assemble`` produced: the tag, the digest it now points to, and what it cost.

    The names are docs/architecture.md's glossary: ``image`` the tag written, ``image_digest`` its manifest
    digest, ``ref`` the image pinned by it (what to test, promote and deploy), ``app_ref`` the app it started
    from, pinned; ``model`` the model's ``uri``, ``version`` and ``model_digest`` (its tree digest).
    """

    image: str  # REGISTRY/REPO:TAG
    image_digest: str
    ref: str  # REGISTRY/REPO@DIGEST
    media_type: str
    app_ref: str  # the app image, REGISTRY/REPO@DIGEST (an index digest for a multi-platform app)
    platforms: tuple[str, ...]
    layers: tuple[ModelLayer, ...]
    uploaded_bytes: int
    unchanged: bool  # the tag already pointed at this digest: nothing was written
    model: dict[str, Any] = field(default_factory=dict)
    image_signature: ImageSignature | None = None  # with a sign key: the image's cosign signature
    attestations: tuple[Evidence, ...] = ()  # with a sign key: its provenance and ML-BOM, attested

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` view."""
        d = asdict(self)
        d["platforms"] = list(self.platforms)
        return d


@dataclass(frozen=True)
class _Signing:
    """``--sign-key``: the key, and what the provenance says about this run."""

    key: ec.EllipticCurvePrivateKey
    build: Build


@dataclass(frozen=True)
class _Signed:
    """The model's model.sig (None: it has none) and who signed it (None: not verified, no verify key)."""

    bundle: bytes | None
    signer: str | None


def _created(app_config: dict[str, Any]) -> str:
    """``SOURCE_DATE_EPOCH``, else the app's own ``created``, else the Unix epoch."""
    own = app_config.get("created")
    return created(own if isinstance(own, str) and own else EPOCH)


def _model_dir_in(config: dict[str, Any], explicit: str | None) -> str:
    if explicit:
        return explicit
    cfg = config.get("config") or {}
    labels = cfg.get("Labels") or {}
    if labels.get(MODEL_DIR_LABEL):
        return str(labels[MODEL_DIR_LABEL])
    for item in cfg.get("Env") or []:
        if isinstance(item, str) and item.startswith("MODELSHIP_MODEL_DIR="):
            return item.split("=", 1)[1]
    return MODEL_DIR


def _new_image(
    app: Reference,
    base: Fetched,
    config_bytes: bytes,
    manifest: Manifest,
    plan: list[tuple[Layer, str]],
    image_dir: str,
    src: RegistryClient,
    mount: str | None,
    signer: str | None,
) -> Image:
    """The new image of one platform: the app's config with the model's labels, its layers and the model's.

    App layers the target lacks come from the app's repository (mounted from it when ``mount``, else copied
    from its registry, checked against their digests on the way); so may model layers an earlier assemble
    left there.
    """
    layers, digests = [p[0] for p in plan], [p[1] for p in plan]
    m = base.json()
    try:
        config = json.loads(config_bytes)
    except ValueError:
        raise ModelshipError(f"{app}: the image config is not JSON") from None
    cfg = config.get("config") or {}
    labels = dict(cfg.get("Labels") or {})
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    app_layers = list(m.get("layers") or [])
    if len(diff_ids) != len(app_layers):
        raise ModelshipError(f"{app}: its config lists {len(diff_ids)} layers, its manifest {len(app_layers)}")
    old_model = {d for d in (labels.get(MODEL_LAYERS_LABEL) or "").split(",") if d}
    if not old_model and labels.get(f"{MODEL}.digest"):
        raise UsageError(
            f"{app} already has a model built into its layers ('modelship build --model'): assemble onto an app "
            "image built without --model"
        )
    keep = [i for i, d in enumerate(diff_ids) if d not in old_model]
    created = _created(config)

    history = list(config.get("history") or [])
    filled = [j for j, h in enumerate(history) if not (isinstance(h, dict) and h.get("empty_layer"))]
    if len(filled) == len(diff_ids):
        dropped = {filled[i] for i in range(len(diff_ids)) if i not in keep}
        history = [h for j, h in enumerate(history) if j not in dropped]
    elif old_model:
        log.warning("%s: history does not match its layers; the replaced model layers' entries stay", app)
    for layer in layers:
        history.append({"created": created, "created_by": f"modelship assemble: {layer.title}", "comment": "model"})

    for key in [k for k in labels if k.startswith(f"{MODEL}.")]:
        del labels[key]
    labels.update(model_labels(manifest))
    if signer is not None:
        labels[MODEL_SIGNER_LABEL] = signer
    labels[MODEL_LAYERS_LABEL] = ",".join(digests)
    labels[MODEL_DIR_LABEL] = image_dir
    labels[f"{OCI}.created"] = created
    env = [e for e in (cfg.get("Env") or []) if not str(e).startswith("MODELSHIP_MODEL_DIR=")]
    env.append(f"MODELSHIP_MODEL_DIR={image_dir}")
    config["config"] = {**cfg, "Labels": labels, "Env": env}
    config["created"] = created
    config["history"] = history
    config["rootfs"] = {"type": "layers", "diff_ids": [diff_ids[i] for i in keep] + digests}
    config_data = dumps(config)

    kept = []
    for i in keep:
        d = dict(app_layers[i])
        d["mediaType"] = DOCKER_TO_OCI_LAYER.get(d.get("mediaType", ""), d.get("mediaType"))
        kept.append(Blob(d, RemoteBlob(src, app.repository, str(d["digest"]), int(d["size"])), mount))
    model = [
        Blob(
            {
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": dg,
                "size": layer.size,
                "annotations": {LAYER_ANNOTATION: layer.title},
            },
            layer,
            mount,
        )
        for layer, dg in plan
    ]
    annotations = {
        k: v for k, v in (m.get("annotations") or {}).items() if not k.startswith((f"{OCI}.base.", f"{MODEL}."))
    }
    annotations.update(
        {
            f"{OCI}.created": created,
            BASE_DIGEST: base.digest,
            BASE_NAME: f"{app.name}@{base.digest}",
            f"{MODEL}.uri": labels[f"{MODEL}.uri"],
            f"{MODEL}.digest": labels[f"{MODEL}.digest"],
        }
    )
    if f"{MODEL}.version" in labels:
        annotations[f"{MODEL}.version"] = labels[f"{MODEL}.version"]
    return image(blob(config_data), kept + model, annotations=annotations)


def _select(app: Reference, index: dict[str, Any], platform: str | None) -> list[dict[str, Any]]:
    """The index entries to assemble: the one ``platform``, or every real platform."""
    entries = [
        e
        for e in index.get("manifests") or []
        if e.get("mediaType", OCI_MANIFEST) in MANIFEST_TYPES
        and (e.get("annotations") or {}).get("vnd.docker.reference.type") != "attestation-manifest"
        and platform_of(e) not in ("", "unknown/unknown")
    ]
    if not entries:
        raise NotFoundError(f"{app}: the image index lists no platform images")
    if platform is None:
        return entries
    want = platform.strip().lower()
    chosen = [e for e in entries if platform_of(e) == want or platform_of(e).startswith(want + "/")]
    if not chosen:
        have = ", ".join(sorted({platform_of(e) for e in entries}))
        raise NotFoundError(f"{app} has no {platform} image (it has {have}); pick one with --platform")
    return chosen[:1]


def assemble(
    app_image: str,
    model_dir: str | Path,
    image: str,
    *,
    platform: str | None = None,
    image_model_dir: str | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout: float | None = None,
    chunk_size: int = CHUNK,
    large_file: int = LARGE_FILE,
    quiet: bool = True,
    azure_credential: Any = None,
    allow_unsafe_pickle: Sequence[str | Path] = (),
    verify_keys: Sequence[str | Path] | None = None,
    sign_key: str | Path | None = None,
) -> AssembleResult:
    """Append the model in ``model_dir`` (a ``modelship fetch`` folder) to ``app_image`` and write it as ``image``.

    ``app_image`` is a tag or digest in a registry; ``image`` the ``REGISTRY/REPO[:TAG]`` to write (same or
    another registry; the CLI's ``--tag``). A multi-platform ``app_image`` gives a multi-platform result, or just
    ``platform`` (e.g. ``linux/amd64``). ``username``/``password`` are for ``image``'s registry; otherwise, and
    for ``app_image``'s registry, the docker config is used (and, for Azure Container Registry, an Entra ID
    token when azure-identity is installed). A pickle that imports a dangerous global is refused before any
    registry is contacted, unless named in ``allow_unsafe_pickle`` (see modelship.trust.pickles).
    ``verify_keys``: PEM public keys (None: MODELSHIP_VERIFY_KEYS); with any, ``model_dir``'s ``model.sig``
    must verify against one of them over its files' sha256s before any registry is contacted
    (SignatureError), and the image gets the label ``io.modelship.model.signer``. A ``model.sig`` goes into
    the image's model dir either way. ``sign_key``: a PEM EC P-256 private key (read first) that signs the
    image in cosign's format (modelship.trust.cosign) and attests its provenance and ML-BOM
    (modelship.trust.evidence) after its manifests are written and before its tag moves.
    """
    app = parse_reference(app_image)
    target = parse_reference(image)
    if target.digest:
        raise UsageError(f"--tag {image}: give a tag to write, not a digest")
    target = target.with_tag(target.tag or "latest")
    signing = None
    if sign_key is not None:  # a usage error, so before the model is read
        from ..trust.cosign import load_sign_key
        from ..trust.evidence import Build, now

        external = {"app": app_image, "tag": str(target), "platform": platform, "imageModelDir": image_model_dir}
        signing = _Signing(load_sign_key(sign_key), Build("assemble", external, now()))
    creds = login(username, password)
    model_path = Path(model_dir).expanduser().resolve()
    from ..trust.check import image_model  # not at import: `import modelship` stays light (no cryptography)

    manifest, bundle, signer = image_model(model_path, verify_keys, allow_unsafe_pickle)
    signed = _Signed(bundle, signer)
    opts: dict[str, Any] = {"timeout": timeout, "chunk_size": chunk_size, "azure_credential": azure_credential}
    dst = RegistryClient(target.registry, creds, **opts)
    src = dst if app.registry == target.registry else RegistryClient(app.registry, None, **opts)
    try:
        return _assemble(
            app, target, src, dst, model_path, manifest, signed, platform, image_model_dir, large_file, quiet, signing
        )
    finally:
        dst.close()
        if src is not dst:
            src.close()


def _assemble(
    app: Reference,
    target: Reference,
    src: RegistryClient,
    dst: RegistryClient,
    model_path: Path,
    manifest: Manifest,
    signed: _Signed,
    platform: str | None,
    image_model_dir: str | None,
    large_file: int,
    quiet: bool,
    signing: _Signing | None,
) -> AssembleResult:
    top = src.get_manifest(app.repository, app.reference)
    if top.media_type not in MANIFEST_TYPES + INDEX_TYPES:
        raise ModelshipError(f"{app} is not an image ({top.media_type or 'no media type'}; schema 1 is not supported)")
    entries = _select(app, top.json(), platform) if top.is_index else [None]
    images: list[tuple[Image, dict[str, Any] | None]] = []
    app_labels: list[dict[str, str]] = []  # each platform's app labels (what the ML-BOM reads)
    plans: dict[str, list[tuple[Layer, str]]] = {}  # model dir in the image -> its layers and their digests
    # a model layer may be in the app's repository already (an app assembled before): mounted from there too
    mount = app.repository if src is dst and app.repository != target.repository else None
    for entry in entries:
        base = top if entry is None else src.get_manifest(app.repository, entry["digest"])
        if base.is_index or base.media_type not in MANIFEST_TYPES:
            raise ModelshipError(f"{app}: {base.digest[:19]}… is not an image manifest")
        config_desc = base.json().get("config") or {}
        config_bytes = src.get_blob(app.repository, config_desc.get("digest", ""))
        app_config = json.loads(config_bytes)
        app_labels.append((app_config.get("config") or {}).get("Labels") or {})
        image_dir = _model_dir_in(app_config, image_model_dir)
        if image_dir not in plans:
            _, layers = model_layers(
                model_path, image_model_dir=image_dir, large_file=large_file, manifest=manifest, signature=signed.bundle
            )
            plans[image_dir] = list(zip(layers, layer_digests(layers), strict=True))
        img = _new_image(app, base, config_bytes, manifest, plans[image_dir], image_dir, src, mount, signed.signer)
        images.append((img, entry.get("platform") if entry else None))

    new: Image | Index = images[0][0]
    if len(images) > 1:
        new = index(images, annotations={BASE_DIGEST: top.digest, BASE_NAME: f"{app.name}@{top.digest}"})
    platforms = [platform_of(entry) for entry in entries if entry is not None]
    model_layers_out = [(layer, d) for plan in plans.values() for layer, d in plan]
    tag = target.tag or "latest"
    evidence = _Evidence(signing, f"{app.name}@{top.digest}", platforms, app_labels, manifest, signed.signer)
    if dst.head_manifest(target.repository, tag) == new.digest:
        done = _result(target, new, app, top, platforms, model_layers_out, set(), 0, True, manifest, signed.signer)
        signature = _sign(dst, target, new, signing)
        return replace(done, image_signature=signature, attestations=evidence.attest(dst, target, new, held=True))
    w = Writer(dst, target.repository, title=f"assemble {target}", show=False if quiet else None)
    w.upload(new)
    w.put(new)
    signature = _sign(dst, target, new, signing)  # before the tag moves: it never points at an unsigned image
    attestations = evidence.attest(dst, target, new, held=False)  # nor at one without its evidence
    w.tag(new, tag)
    uploaded = {d for d, n in w.sent.items() if n}
    # the caller says what happened (the CLI prints it once): a library call prints nothing
    done = _result(
        target, new, app, top, platforms, model_layers_out, uploaded, w.uploaded_bytes, False, manifest, signed.signer
    )
    return replace(done, image_signature=signature, attestations=attestations)


def _sign(
    client: RegistryClient, target: Reference, new: Image | Index, signing: _Signing | None
) -> ImageSignature | None:
    if signing is None:
        return None
    from ..trust.cosign import sign_image

    return sign_image(client, target.with_digest(new.digest), signing.key)


@dataclass(frozen=True)
class _Evidence:
    """What the attestations of the new image say: the app it started from, its platforms and labels."""

    signing: _Signing | None
    app_ref: str
    platforms: list[str]
    app_labels: list[dict[str, str]]
    manifest: Manifest
    signer: str | None

    def attest(self, client: RegistryClient, target: Reference, new: Image | Index, held: bool) -> tuple[Evidence, ...]:
        if self.signing is None:
            return ()
        from ..trust.evidence import app_dependencies, attest_build

        internal = {"platforms": [p for p in self.platforms if p]} if any(self.platforms) else None
        build = replace(self.signing.build, app_ref=self.app_ref, internal=internal)
        labels = app_dependencies(self.app_labels)
        r = target.with_digest(new.digest)
        return attest_build(client, r, self.signing.key, build, self.manifest, signer=self.signer, app_labels=labels,
                            held=held)  # fmt: skip


def _result(
    target: Reference,
    new: Image | Index,
    app: Reference,
    top: Fetched,
    platforms: list[str],
    plan: list[tuple[Layer, str]],
    uploaded: set[str],
    uploaded_bytes: int,
    unchanged: bool,
    manifest: Manifest,
    signer: str | None,
) -> AssembleResult:
    seen: dict[str, ModelLayer] = {}
    for layer, d in plan:
        seen.setdefault(d, ModelLayer(d, layer.size, layer.title, d in uploaded))
    model = {"uri": manifest.uri, "version": manifest.version, "model_digest": manifest.digest, "signer": signer}
    return AssembleResult(
        image=str(target),
        image_digest=new.digest,
        ref=f"{target.name}@{new.digest}",
        media_type=new.media_type,
        app_ref=f"{app.name}@{top.digest}",
        platforms=tuple(p for p in platforms if p),
        layers=tuple(seen.values()),
        uploaded_bytes=uploaded_bytes,
        unchanged=unchanged,
        model=model,
    )


__all__ = ["AssembleResult", "ModelLayer", "assemble"]
