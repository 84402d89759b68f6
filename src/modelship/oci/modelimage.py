"""The model as its own image: ``modelship publish DIR oci://REGISTRY/REPO --version V``, and reading one back.

What is pushed, and why these media types (docs/model-image.md lists the readers checked and how):

- **The model image**, tagged ``V``: an OCI image manifest (``application/vnd.oci.image.manifest.v1+json``)
  whose ``artifactType`` is ModelPack's ``application/vnd.cncf.model.manifest.v1+json``, with an OCI *image*
  config (``application/vnd.oci.image.config.v1+json``) and uncompressed OCI tar layers
  (``application/vnd.oci.image.layer.v1.tar``). Container runtimes mount only what they can unpack as an
  image: containerd's image volumes refuse other config and layer types (containerd#11907, #11381), and so
  do Docker and podman when pulling. The layers are exactly the ones ``assemble`` appends (oci/layers.py):
  an app image and a model image of one model share those blobs. Each layer carries ModelPack's
  ``org.cncf.model.filepath`` (single-file layers) and ``org.opencontainers.image.title``.
- **A ModelPack manifest** over the same layer blobs, for strict ModelPack readers (their config is
  ``application/vnd.cncf.model.config.v1+json`` with ``modelfs.diffIds``, their layers
  ``application/vnd.cncf.model.weight.v1.tar`` / ``weight.config.v1.tar``), tagged ``V-modelpack`` and
  pointing at the model image as its ``subject`` (an OCI 1.1 referrer). It costs one small config blob.

The model image is data only: no shell, no command. It is mounted (image volume, ``podman image mount``,
``ctr images mount``) or pulled, never run. Everything written is deterministic JSON: the same model with
the same version gives the same digest on any machine, so publishing it again uploads nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import conventions, modeldir
from ..conventions import (
    EPOCH,
    MODEL,
    MODEL_DIR,
    MODEL_DIR_LABEL,
    MODEL_KIND_LABEL,
    MODEL_LAYERS_LABEL,
    MODEL_MANIFEST_LABEL,
    MODEL_SIGNATURE_LABEL,
    OCI,
    created,
    model_labels,
)
from ..errors import IntegrityError, ModelshipError, UsageError
from ..manifest import Manifest
from ..trust.evidence import now
from . import modelsig
from .auth import login
from .layers import LARGE_FILE, LAYER_MEDIA_TYPE, Layer, image_dir_parts, layer_digests, model_layers
from .reference import Reference, check_tag, parse_reference
from .registry import DOCKER_MANIFEST, INDEX_TYPES, OCI_CONFIG, OCI_MANIFEST, Fetched, RegistryClient
from .write import Blob, Image, Writer, blob, dumps, image

log = logging.getLogger("modelship")

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODELPACK_WEIGHT = "application/vnd.cncf.model.weight.v1.tar"
MODELPACK_WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.tar"
FILEPATH = "org.cncf.model.filepath"
TITLE = f"{OCI}.title"
MODELPACK_SUFFIX = "-modelpack"  # tag of the ModelPack manifest: V-modelpack (never a PEP 440 version)
# layers modelship can read files out of: uncompressed tar, under any of the names it is known by
TAR_TYPES = (
    LAYER_MEDIA_TYPE,
    "application/vnd.docker.image.rootfs.diff.tar",
    MODELPACK_WEIGHT,
    MODELPACK_WEIGHT_CONFIG,
)
SMALL_FILES_TITLE = "modelship-small-files"  # the title of the layer holding modelship.json and the small files


# ---- references -----------------------------------------------------------------------------------------


def repository_of(uri: str) -> Reference:
    """``oci://REGISTRY/REPO[:TAG|@sha256:…]`` (or ``REGISTRY/REPO…``) as an image reference."""
    text = uri.strip()
    body = text[len("oci://") :] if text.lower().startswith("oci://") else text
    if not body or "?" in body or "#" in body:
        raise UsageError(f"invalid model image URI {uri!r}: expected oci://REGISTRY/REPOSITORY[:TAG|@sha256:…]")
    ref = parse_reference(body.rstrip("/"))
    if "/" not in body.split("@", 1)[0]:
        raise UsageError(f"invalid model image URI {uri!r}: expected oci://REGISTRY/REPOSITORY (no registry named)")
    return ref


def check_version(version: str) -> str:
    """A version to publish is a tag and a PEP 440 version (``resolve`` orders tags by PEP 440)."""
    return check_tag(conventions.check_version(version, pep440=True))


# ---- the image's documents ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """The model image and its ModelPack manifest (a referrer of it), over the same layer blobs."""

    layers: list[tuple[Layer, str]]  # (layer, digest)
    image: Image
    modelpack: Image

    @property
    def digest(self) -> str:
        return self.image.digest


def _layer_descriptor(layer: Layer, digest: str, image_model_dir: str, media_type: str) -> dict[str, Any]:
    """A layer's descriptor. Its title is a plain file name, as ORAS and ModelPack readers use it as a path."""
    annotations = {f"{MODEL}.layer": layer.title, TITLE: SMALL_FILES_TITLE}
    files = layer.files
    if len(files) == 1 and files[0].data is None:  # a single-file layer: ModelPack names its file
        annotations[FILEPATH] = annotations[TITLE] = files[0].name[len(image_model_dir.strip("/")) + 1 :]
    return {"mediaType": media_type, "digest": digest, "size": layer.size, "annotations": annotations}


def _plan(manifest: Manifest, layers: list[tuple[Layer, str]], image_model_dir: str, ref: Reference) -> _Plan:
    when = created(EPOCH)  # never "now": an unchanged model keeps its digest
    digests = [d for _, d in layers]
    labels = dict(model_labels(manifest))
    labels.update(
        {
            MODEL_LAYERS_LABEL: ",".join(digests),
            MODEL_DIR_LABEL: image_model_dir,
            MODEL_KIND_LABEL: "model",
            f"{OCI}.created": when,
            f"{OCI}.title": ref.repository.rsplit("/", 1)[-1],
            f"{OCI}.version": str(manifest.version),
        }
    )
    config = {
        # data only, for any node: OCI requires an os and architecture; runtimes check only the os of a
        # single-manifest image (containerd and Docker), podman warns about the architecture at most
        "architecture": "amd64",
        "os": "linux",
        "created": when,
        "config": {"Labels": labels, "Env": [f"MODELSHIP_MODEL_DIR={image_model_dir}"]},
        "rootfs": {"type": "layers", "diff_ids": digests},  # uncompressed: diff_id == digest
        "history": [
            {"created": when, "created_by": f"modelship publish: {layer.title}", "comment": "model"}
            for layer, _ in layers
        ],
    }
    annotations = {
        f"{OCI}.created": when,
        f"{OCI}.title": labels[f"{OCI}.title"],
        f"{OCI}.version": str(manifest.version),
        f"{MODEL}.uri": labels[f"{MODEL}.uri"],
        f"{MODEL}.digest": manifest.digest,
        f"{MODEL}.version": str(manifest.version),
        MODEL_DIR_LABEL: image_model_dir,
    }
    model_image = image(
        blob(dumps(config), OCI_CONFIG),
        [Blob(_layer_descriptor(layer, d, image_model_dir, LAYER_MEDIA_TYPE), layer) for layer, d in layers],
        annotations=annotations,
        artifact_type=ARTIFACT_TYPE,
    )
    modelpack = {
        "descriptor": {
            "createdAt": when,
            "name": labels[f"{OCI}.title"],
            "version": str(manifest.version),
            "sourceURL": labels[f"{MODEL}.uri"],
        },
        "config": {},
        "modelfs": {"type": "layers", "diffIds": digests},
    }
    last = len(layers) - 1
    modelpack_image = image(
        blob(dumps(modelpack), MODELPACK_CONFIG),
        [
            Blob(
                _layer_descriptor(
                    layer, d, image_model_dir, MODELPACK_WEIGHT_CONFIG if i == last else MODELPACK_WEIGHT
                ),
                layer,
            )
            for i, (layer, d) in enumerate(layers)
        ],
        annotations=annotations,
        artifact_type=ARTIFACT_TYPE,
        subject=model_image,
    )
    return _Plan(layers, model_image, modelpack_image)


# ---- publish --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedImage:
    """What ``publish`` of an ``oci://`` URI produced, in docs/architecture.md's glossary names: ``image`` the
    version's tag, ``image_digest`` the model image's manifest digest and ``ref`` the image pinned by it (what
    to deploy, test and lock); the same three of the ModelPack manifest, a referrer of it."""

    image: str  # REGISTRY/REPO:V
    image_digest: str
    ref: str  # REGISTRY/REPO@DIGEST
    modelpack_image: str  # REGISTRY/REPO:V-modelpack
    modelpack_digest: str
    modelpack_ref: str  # REGISTRY/REPO@DIGEST of the ModelPack manifest
    manifest: Manifest
    image_model_dir: str
    layers: tuple[tuple[str, int, str], ...]  # (digest, size, title)
    uploaded_bytes: int
    unchanged: bool  # the tag already pointed at this digest: nothing was written
    signature_layer: str | None = None  # the digest of the model.sig layer of a signed image
    attestations: tuple[Any, ...] = ()  # trust.evidence.Evidence: its provenance and ML-BOM (a P-256 sign key)


def publish_image(
    model_dir: str | Path,
    uri: str,
    *,
    version: str,
    force: bool = False,
    image_model_dir: str = MODEL_DIR,
    username: str | None = None,
    password: str | None = None,
    timeout: float | None = None,
    large_file: int = LARGE_FILE,
    quiet: bool = True,
    progress: bool | None = None,
    azure_credential: Any = None,
    sign_key: str | Path | None = None,
    sign_cert: str | Path | None = None,
    cert_chain: Sequence[str | Path] = (),
) -> PublishedImage:
    """Push the model folder ``model_dir`` as the model image ``REGISTRY/REPO:version`` (see the module doc).

    Refuses to move an existing ``version`` tag to other content unless ``force``; a tag already on this very
    image is left as it is (0 bytes uploaded). Credentials: ``username``/``password``, else the docker config
    (and, for Azure Container Registry, an Entra ID token when azure-identity is installed), as for push.
    ``sign_key``: a PEM EC private key; the image then carries ``model.sig``, an OMS signature of its files
    (``modelship.oci.modelsig``; with ``sign_cert``/``cert_chain`` the certificates too, ``trust.certs``), and
    a tag already on this model signed by that key is left as it is. A P-256 ``sign_key`` also attests the
    image's provenance and ML-BOM (``modelship.trust.evidence``) before its tags move.
    """
    target = repository_of(uri)
    if target.tag or target.digest:
        raise UsageError(f"{uri}: give the repository only (oci://REGISTRY/REPO) and the version with --version")
    check_version(version)
    image_dir_parts(image_model_dir)
    key = None
    if sign_key is not None:  # a bad key is a usage error before anything is read or sent
        from ..trust import certs

        key = certs.load_signer(sign_key, sign_cert, cert_chain)
    external = {"uri": f"oci://{target.name}", "version": version, "imageModelDir": image_model_dir}
    evidence = _Evidence(key, external)
    creds = login(username, password)
    root = Path(model_dir).expanduser()
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder; give the model folder to publish")
    root = root.resolve()
    display = f"oci://{target.name}"
    manifest = modeldir.compute_manifest(root, display, version)
    _, layers = model_layers(root, image_model_dir=image_model_dir, large_file=large_file, manifest=manifest)
    plan = unsigned = _plan(manifest, list(zip(layers, layer_digests(layers), strict=True)), image_model_dir, target)
    if key is not None:
        plan = _signed(plan, modelsig.sign_files(manifest, key, target), image_model_dir)
    ref = target.with_tag(version)
    mp_ref = target.with_tag(version + MODELPACK_SUFFIX)
    with RegistryClient(target.registry, creds, timeout=timeout, azure_credential=azure_credential) as client:
        held = client.head_manifest(target.repository, version)
        if held == plan.digest:
            done = _published(ref, mp_ref, plan, manifest, image_model_dir, 0, True)
            return replace(done, attestations=evidence.attest(client, ref.with_digest(plan.digest), manifest, True))
        if key is not None and held is not None:  # signatures differ from run to run: the same model, same key?
            kept = modelsig.held_signed(client, target.with_digest(held), unsigned.image, manifest, key)
            if kept is not None:
                plan = replace(plan, image=kept, modelpack=modelsig.resubject(unsigned.modelpack, kept))
                done = _published(ref, mp_ref, plan, manifest, image_model_dir, 0, True)
                return replace(done, attestations=evidence.attest(client, ref.with_digest(kept.digest), manifest, True))
        if held is not None and not force:
            if key is not None and held == unsigned.digest:
                raise ModelshipError(
                    f"{ref} already holds this model, unsigned; sign it with 'modelship sign-model oci://{target.name} "
                    f"--version {version} --sign-key KEY.pem'"
                )
            raise ModelshipError(
                f"{ref} already exists ({held[:19]}…) with other content; publish a new version, "
                "or pass --force to move the tag"
            )
        writer = Writer(client, target.repository, title=f"publish {target.name}", show=False if quiet else progress)
        sent = writer.upload(plan.image, plan.modelpack)
        # both manifests by digest, then the ModelPack tag, the version tag last: a run that fails leaves the
        # version tag where it was
        writer.put(plan.image, plan.modelpack)
        attestations = evidence.attest(client, ref.with_digest(plan.digest), manifest, False)
        writer.tag(plan.modelpack, mp_ref.tag or "")
        writer.tag(plan.image, version)
    result = replace(_published(ref, mp_ref, plan, manifest, image_model_dir, sent, False), attestations=attestations)
    return result  # the caller says what happened (the CLI prints it once): a library call prints nothing


@dataclass(frozen=True)
class _Evidence:
    """What ``publish --sign-key`` writes about the image (a P-256 key only): its cosign signature, then its
    provenance and ML-BOM (modelship.trust.evidence), as assemble does for the images it writes."""

    signer: Any  # trust.certs.Signer, or None: no sign key
    external: dict[str, Any]
    started: str = field(default_factory=now)

    def attest(self, client: RegistryClient, r: Reference, manifest: Manifest, held: bool) -> tuple[Any, ...]:
        key = getattr(self.signer, "key", None)
        if key is None:
            return ()
        if key.curve.name != "secp256r1":
            log.warning(
                "%s: no provenance or ML-BOM attested: attestations take a P-256 key, not %s", r, key.curve.name
            )
            return ()
        from ..trust.cosign import sign_image
        from ..trust.evidence import Build, attest_build  # cryptography and cyclonedx only now
        from ..trust.oms import fingerprint

        sign_image(client, r, key)  # the image's cosign signature (what promote --require-key checks) first
        build = Build("publish", self.external, self.started)
        return attest_build(client, r, key, build, manifest, signer=fingerprint(key.public_key()), held=held)


def _signed(plan: _Plan, bundle: bytes, image_model_dir: str) -> _Plan:
    """``plan`` with ``bundle`` as the model image's signature layer; the ModelPack manifest refers to it."""
    config = json.loads(plan.image.config.source.open(0).read())
    sources = {b.digest: b for b in plan.image.layers}
    signed = modelsig.signed_image(
        json.loads(plan.image.data), config, plan.image.media_type, sources, bundle, image_model_dir
    )
    return replace(plan, image=signed, modelpack=modelsig.resubject(plan.modelpack, signed))


def _published(
    ref: Reference, mp_ref: Reference, plan: _Plan, manifest: Manifest, image_model_dir: str, sent: int, unchanged: bool
) -> PublishedImage:
    return PublishedImage(
        image=str(ref),
        image_digest=plan.digest,
        ref=f"{ref.name}@{plan.digest}",
        modelpack_image=str(mp_ref),
        modelpack_digest=plan.modelpack.digest,
        modelpack_ref=f"{mp_ref.name}@{plan.modelpack.digest}",
        manifest=manifest,
        image_model_dir=image_model_dir,
        layers=tuple((d, layer.size, layer.title) for layer, d in plan.layers),
        uploaded_bytes=sent,
        unchanged=unchanged,
        signature_layer=modelsig.signature_digest(json.loads(plan.image.config.source.open(0).read())),
    )


# ---- reading a model image ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelImage:
    """A model image as its registry holds it: where the model is in it, its files, and its model layers.

    Also an app image that ``assemble`` put a model on: it carries the same labels, and only its model layers
    are read.
    """

    ref: Reference  # as asked for (tag or digest)
    digest: str  # manifest digest
    media_type: str
    manifest: dict[str, Any] = field(repr=False)
    config: dict[str, Any] = field(repr=False)
    image_model_dir: str  # where the model is inside the image, e.g. /opt/modelship/model
    model: Manifest  # its modelship.json, from the config label (the config is checked against its digest)
    layers: tuple[dict[str, Any], ...]  # descriptors of the model layers, in manifest order
    data_only: bool  # no layers but the model's (published by modelship): nothing in it can run

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def pinned(self) -> str:
        return f"{self.ref.name}@{self.digest}"

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.config.get("config") or {}).get("Labels") or {})

    @property
    def version(self) -> str | None:
        ann = self.manifest.get("annotations") or {}
        return ann.get(f"{MODEL}.version") or self.model.version


def _not_model(ref: Reference, why: str) -> ModelshipError:
    return ModelshipError(
        f"{ref} is not a model image ({why}); publish one with 'modelship publish DIR oci://{ref.name} --version V'"
    )


def read_model_image(client: RegistryClient, ref: Reference, fetched: Fetched | None = None) -> ModelImage:
    """Manifest and config of ``ref`` (verified by digest), checked to be a model image; one line if not."""
    got = fetched or client.get_manifest(ref.repository, ref.reference)
    if got.media_type in INDEX_TYPES:
        raise _not_model(ref, "it is an image index; a model image is a single manifest")
    if got.media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise _not_model(ref, f"media type {got.media_type or 'unknown'}")
    m = got.json()
    config_desc = m.get("config") or {}
    if config_desc.get("mediaType") not in (OCI_CONFIG, "application/vnd.docker.container.image.v1+json"):
        raise _not_model(ref, f"config media type {config_desc.get('mediaType')!r}")
    digest = str(config_desc.get("digest") or "")
    if not digest.startswith("sha256:") or not isinstance(config_desc.get("size"), int):
        raise _not_model(ref, "its config descriptor has no sha256 digest or size")
    if config_desc["size"] > 16 * 1024 * 1024:
        raise _not_model(ref, f"its config is {config_desc['size']} bytes")
    config = client.blob_json(ref.repository, digest)
    labels = (config.get("config") or {}).get("Labels") or {}
    raw, image_model_dir, layer_list = (
        labels.get(MODEL_MANIFEST_LABEL),
        labels.get(MODEL_DIR_LABEL),
        labels.get(MODEL_LAYERS_LABEL),
    )
    if not raw or not image_model_dir or not layer_list:
        raise _not_model(ref, "its config has no io.modelship.model.manifest/.dir/.layers labels")
    try:
        model = Manifest.from_dict(json.loads(raw), f"{ref} label {MODEL_MANIFEST_LABEL}")
    except (ValueError, UsageError) as e:
        raise IntegrityError(f"{ref}: its {MODEL_MANIFEST_LABEL} label is not a valid model manifest ({e})") from None
    try:
        image_dir_parts(str(image_model_dir))
    except UsageError:
        raise IntegrityError(
            f"{ref}: its {MODEL_DIR_LABEL} label {image_model_dir!r} is not an absolute, plain path"
        ) from None
    wanted = [d for d in str(layer_list).split(",") if d]
    by_digest = {str(d.get("digest")): d for d in m.get("layers") or [] if isinstance(d, dict)}
    missing = [d for d in wanted if d not in by_digest]
    if missing:
        raise IntegrityError(f"{ref}: model layer {missing[0][:19]}… named by its labels is not in its manifest")
    layers = []
    for d in wanted:
        desc = by_digest[d]
        if desc.get("mediaType") not in TAR_TYPES:
            raise _not_model(ref, f"model layer {d[:19]}… is {desc.get('mediaType')}, not an uncompressed tar")
        if not isinstance(desc.get("size"), int) or desc["size"] < 1024 or not d.startswith("sha256:"):
            raise IntegrityError(f"{ref}: model layer {d[:19]}… has no valid size or sha256 digest")
        layers.append(desc)
    total = sum(f.size for f in model.files)
    if sum(int(d["size"]) for d in layers) > total + 64 * 1024 * (len(model.files) + 16) + (1 << 20):
        raise IntegrityError(f"{ref}: its model layers are far larger than the {total} bytes of files they hold")
    signature = labels.get(MODEL_SIGNATURE_LABEL)  # model.sig's own layer (oci.modelsig): data too
    data_only = len(by_digest) == len(wanted) + (signature in by_digest and signature not in wanted)
    return ModelImage(ref, got.digest, got.media_type, m, config, str(image_model_dir), model, tuple(layers), data_only)


def model_image(
    ref: str,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float | None = None,
) -> ModelImage:
    """Read the model image ``ref`` (``REGISTRY/REPO:TAG``, ``…@sha256:…`` or ``oci://…``) from its registry."""
    r = repository_of(ref)
    with RegistryClient(r.registry, login(username, password), timeout=timeout) as client:
        return read_model_image(client, r)


__all__ = [
    "ARTIFACT_TYPE",
    "MODELPACK_CONFIG",
    "ModelImage",
    "PublishedImage",
    "check_version",
    "model_image",
    "publish_image",
    "read_model_image",
    "repository_of",
]
