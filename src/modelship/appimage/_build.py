"""build(..., builder="registry"): the app image written straight into its registry, no Docker engine.

Layers as Jib lays them, each changing less often than the next: the base image's (reused by digest,
mounted or copied from its repository) → dependencies (the app user, /opt/venv with the wheels resolved for
the base's interpreter and platform, and the requirements file(s) at their place in /app; changes when the
requirements or the base change) → the app's code (the rest of /app; changes on every commit) → the model's
layers with ``--model`` (the deterministic layers of ``modelship.oci.layers``, as ``modelship assemble`` writes
them). Every new layer is an uncompressed tar of
sorted entries with fixed modes, owners and mtimes (``SOURCE_DATE_EPOCH``, else the commit time, else the
epoch); the config says what the engine path's Dockerfile says (``imageconfig``). The image goes through the
one image writer: only blobs the registry lacks are sent, then the manifest by digest, then the tags. A
multi-platform base gives an index of the platforms asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..conventions import MODEL_DIR, MODEL_DIR_LABEL, MODEL_LAYERS_LABEL, OCI, OCI_CREATED, dependencies_label
from ..errors import UsageError
from ..image import config as config_mod
from ..image import context as ctx
from ..image import labels as labels_mod
from ..image import wheels as wheels_mod
from ..image.dockerfile import APP_DIR
from ..manifest import Manifest
from ..oci.auth import login
from ..oci.layers import LAYER_MEDIA_TYPE, Layer, layer_digests, model_layers
from ..oci.reference import Reference, parse_reference
from ..oci.registry import DOCKER_TO_OCI_LAYER, RegistryClient
from ..oci.remote import host_platform
from ..oci.write import Blob, Image, Index, RemoteBlob, blob, dumps, image, index, write
from .base import Base, platform_manifests, read_base
from .deps import VENV, dependency_entries, requirement_files, wheel_summary
from .imageconfig import build_time, created, image_config
from .tree import folder_entries, ordered

BASE_DIGEST, BASE_NAME = f"{OCI}.base.digest", f"{OCI}.base.name"


@dataclass(frozen=True)
class AppLayer:
    """A layer this build made: what it holds, its digest and size, and whether it was sent."""

    title: str
    digest: str
    size: int
    uploaded: bool


@dataclass(frozen=True)
class AppImage:
    """What the registry builder wrote: the first tag, the pinned reference, and what it cost."""

    image: str  # REGISTRY/REPO:TAG (the first --tag)
    ref: str  # REGISTRY/REPO@sha256:…
    image_digest: str
    id: str  # the config digest (what `docker images` shows as the id) of the first platform
    tags: tuple[str, ...]
    labels: dict[str, str]
    base_ref: str  # the base image, REGISTRY/REPO@DIGEST (an index digest for a multi-platform base)
    platforms: tuple[str, ...]
    layers: tuple[AppLayer, ...] = ()
    uploaded_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tags"], d["platforms"] = list(self.tags), list(self.platforms)
        d["layers"] = [asdict(x) for x in self.layers]
        return d


def _targets(tags: Sequence[str]) -> list[Reference]:
    out = []
    for t in tags:
        r = parse_reference(t)
        if r.digest:
            raise UsageError(f"--tag {t}: give a tag to write, not a digest")
        out.append(r.with_tag(r.tag or "latest"))
    return out


def build_in_registry(
    cfg: config_mod.BuildConfig,
    model: Path | None,
    manifest: Manifest | None,
    signature: tuple[bytes | None, str | None],
    tags: list[str],
    *,
    platform: str | Sequence[str] | None = None,
    username: str | None = None,
    password: str | None = None,
    quiet: bool = True,
) -> AppImage:
    """Write the app of ``cfg`` (+ the model in MODEL, already checked: ``manifest``, ``signature`` = its
    model.sig and verified signer) onto ``cfg.base_image`` into the registry of ``tags``. ``build(...,
    builder="registry")`` (modelship.image) resolves the options and the model once for both builders."""
    targets = _targets(tags)
    platforms = [platform] if isinstance(platform, str) else list(platform or [])
    base_ref = parse_reference(cfg.base_image)
    dst = RegistryClient(targets[0].registry, login(username, password))
    src = dst if base_ref.registry == targets[0].registry else RegistryClient(base_ref.registry, None)
    try:
        top, chosen = platform_manifests(src, base_ref, [p.strip().lower() for p in platforms] or [host_platform()])
        bases = [read_base(src, base_ref, digest, top, asked) for asked, digest in chosen]
        mount = base_ref.repository if src is dst else None
        new, layers, labels = _plan(cfg, bases, src, mount, model, manifest, signature, quiet=quiet)
        return _write(dst, targets, new, layers, labels, bases, quiet=quiet)
    finally:
        dst.close()
        if src is not dst:
            src.close()


def _plan(
    cfg: config_mod.BuildConfig,
    bases: list[Base],
    src: RegistryClient,
    mount: str | None,
    model: Path | None,
    manifest: Manifest | None,
    signature: tuple[bytes | None, str | None],
    *,
    quiet: bool,
) -> tuple[Image | Index, list[tuple[Layer, str]], dict[str, str]]:
    """The image (or index) to write, the new layers with their digests, and the labels; ``signature``: the
    model's model.sig (None: it has none) and its verified signer (None: no verify key)."""
    seconds = build_time(cfg.app_dir)
    when = created(seconds)
    labels = labels_mod.image_labels(
        cfg.app_dir, manifest, config_mod.project_metadata(cfg.app_dir),
        labels_mod.app_labels(cfg.port, cfg.ready_path, cfg.live_path), signature[1],
    )  # fmt: skip
    labels[OCI_CREATED] = when
    labels[MODEL_DIR_LABEL] = MODEL_DIR
    files = ctx.app_files(cfg.app_dir, skip=[model] if model else [], include=cfg.include, exclude=cfg.exclude)
    listed = set(files)
    reqs = [f for f in requirement_files(cfg.requirements, cfg.app_dir) if f in listed]  # in the deps layer
    app = APP_DIR.lstrip("/")
    code_files = [f for f in files if f not in reqs]
    code = Layer(f"app code: {APP_DIR}", ordered(folder_entries(cfg.app_dir, app, code_files)), seconds)
    req_entries = folder_entries(cfg.app_dir, app, reqs) if reqs else []
    req_title = f", {', '.join(f'{APP_DIR}/{r}' for r in reqs)}" if reqs else ""
    model_plan: list[Layer] = []
    if model is not None and manifest is not None:
        _, model_plan = model_layers(model, image_model_dir=MODEL_DIR, manifest=manifest, signature=signature[0])
    images: list[tuple[Image, dict[str, Any] | None]] = []
    made: dict[str, tuple[Layer, str]] = {}
    for base in bases:
        wheel_dir = wheels_mod.wheelhouse(cfg.requirements, base.target, quiet=quiet)
        deps = Layer(
            f"dependencies: app user, {VENV} with {wheel_summary(wheel_dir)}{req_title}",
            ordered([*dependency_entries(wheel_dir, base.facts), *req_entries]),
            seconds,
        )
        ours = [deps, code, *model_plan]
        digests = layer_digests(ours)
        for layer, d in zip(ours, digests, strict=True):
            made.setdefault(d, (layer, d))
        if model_plan:
            labels[MODEL_LAYERS_LABEL] = ",".join(digests[2:])
        history = [{"created": when, "created_by": f"modelship build: {x.title}"[:4000], "comment": "modelship"}
                   for x in ours]  # fmt: skip
        config = image_config(
            base.config, command=config_mod.image_command(cfg, wheel_dir), port=cfg.port, ready_path=cfg.ready_path,
            healthcheck_interval=cfg.healthcheck_interval, diff_ids=digests, history=history, when=when,
            labels={**labels, **dependencies_label(wheels_mod.installed(wheel_dir))},
        )  # fmt: skip
        kept = [
            Blob(
                {**d, "mediaType": DOCKER_TO_OCI_LAYER.get(d.get("mediaType", ""), d.get("mediaType"))},
                RemoteBlob(src, base.ref.repository, str(d["digest"]), int(d["size"])),
                mount,
            )
            for d in base.manifest.get("layers") or []
        ]
        new = [
            Blob({"mediaType": LAYER_MEDIA_TYPE, "digest": d, "size": x.size}, x)
            for x, d in zip(ours, digests, strict=True)
        ]
        annotations = {OCI_CREATED: when, BASE_DIGEST: base.digest, BASE_NAME: f"{base.ref.name}@{base.digest}"}
        img = image(blob(dumps(config)), kept + new, annotations=annotations)
        images.append((img, _platform_dict(base.platform)))
    if len(images) == 1:
        return images[0][0], list(made.values()), labels
    top = bases[0]
    annotations = {BASE_DIGEST: top.digest, BASE_NAME: f"{top.ref.name}@{top.digest}"}
    return index(images, annotations=annotations), list(made.values()), labels


def _platform_dict(platform: str) -> dict[str, Any]:
    parts = platform.split("/")
    out = {"os": parts[0], "architecture": parts[1] if len(parts) > 1 else ""}
    if len(parts) > 2:
        out["variant"] = parts[2]
    return out


def _write(
    dst: RegistryClient,
    targets: list[Reference],
    new: Image | Index,
    layers: list[tuple[Layer, str]],
    labels: dict[str, str],
    bases: list[Base],
    *,
    quiet: bool,
) -> AppImage:
    """Every blob the registry lacks, the manifest(s), then each tag (per repository named by a tag)."""
    sent: dict[str, int] = {}
    for repo in dict.fromkeys(t.repository for t in targets):
        repo_tags = [t.tag or "latest" for t in targets if t.repository == repo]
        w = write(dst, repo, new, repo_tags[0], title=f"build {dst.registry}/{repo}", show=False if quiet else None)
        for t in repo_tags[1:]:
            w.tag(new, t)
        for d, n in w.sent.items():
            sent[d] = sent.get(d, 0) + n
    first = targets[0]
    config = (new if isinstance(new, Image) else new.images[0]).config
    return AppImage(
        image=str(first),
        ref=f"{first.name}@{new.digest}",
        image_digest=new.digest,
        id=config.digest,
        tags=tuple(str(t) for t in targets),
        labels=labels,
        base_ref=f"{bases[0].ref.name}@{bases[0].digest}",
        platforms=tuple(b.platform for b in bases),
        layers=tuple(AppLayer(x.title[:200], d, x.size, bool(sent.get(d))) for x, d in layers),
        uploaded_bytes=sum(sent.values()),
    )


__all__ = ["AppImage", "AppLayer", "build_in_registry"]
