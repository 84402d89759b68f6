"""deploy: render Kubernetes manifests that run exactly the image that was tested, pinned by digest.

The templates are ordinary manifests (``deploy_templates/`` in this package, or a folder of your own).
Rendering parses them and sets fields — the container image, ``metadata.name``, every
``app.kubernetes.io/name`` label and selector, ``spec.replicas``, and the app's port (``containerPort``,
``PORT``) and probe paths — rather than substituting text, so a template stays valid YAML a reviewer can
read and ``kubectl apply`` as it is.

The port and the readiness/liveness paths are the ones the image was built with: read from its
``io.modelship.app.*`` labels (local engine first, then its registry), unless given explicitly.

With ``model_image`` (the split shape: the model as its own image) the model is mounted at the app's model
dir by an image volume, an init container, or KServe (``mount``; see modelship._model_mount).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ._fs import no_space, write_files_atomic
from ._kube import mappings
from .errors import ModelshipError, UsageError

log = logging.getLogger("modelship")

DEFAULT_NAME = "modelship-app"
NAME_LABEL = "app.kubernetes.io/name"
APP_CONTAINER = "app"  # the container that gets the image; else the first one
# <registry/repo path>[:tag]@sha256:<64 hex>; the path rules follow the OCI distribution spec
_IMAGE = re.compile(
    r"^(?P<repo>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"@sha256:(?P<hex>[0-9a-f]{64})$"
)
# Service names must be DNS-1035 labels (the strictest of the kinds rendered here)
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# the app labels of an image that `modelship build` writes (modelship.image.labels) and the options for each
_APP_SETTINGS = (("port", "--port"), ("ready_path", "--ready-path"), ("live_path", "--live-path"))


@dataclass(frozen=True)
class AppSettings:
    """What the manifests need from the app: the port it listens on and its probe paths."""

    port: int
    ready_path: str
    live_path: str


def default_template_dir() -> Path:
    """The templates shipped with modelship (a Deployment and a LoadBalancer Service)."""
    return Path(str(resources.files("modelship") / "deploy_templates"))


def check_image(image: str) -> str:
    """Return ``image`` if it is pinned by ``@sha256:<64 hex>``; a tag alone can move, so it is refused."""
    if not _IMAGE.match(image or ""):
        if "@sha256:" not in (image or ""):
            raise UsageError(
                f"image {image!r} is not pinned by digest; pass REPO@sha256:<64 hex> "
                "(the image_digest printed by 'modelship push --json')"
            )
        raise UsageError(f"image {image!r} is not a valid REPO[:TAG]@sha256:<64 lowercase hex> reference")
    return image


def app_settings(
    image: str,
    *,
    port: int | None = None,
    ready_path: str | None = None,
    live_path: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> AppSettings:
    """The port and probe paths to deploy ``image`` with: the explicit ones, the rest from the image's labels.

    The image is read only when something is not given (local engine first, then its registry, with
    ``username``/``password`` or the docker login). An image without those labels (not built by
    ``modelship build``) is an error naming the options, never a silent default.
    """
    given = {"port": port, "ready_path": ready_path, "live_path": live_path}
    if any(v is None for v in given.values()):
        from .image import inspect

        try:
            app = inspect(image, username=username, password=password).app
        except ModelshipError as e:
            options = ", ".join(opt for key, opt in _APP_SETTINGS if given[key] is None)
            raise type(e)(
                f"{e} (deploy render reads the app's port and probe paths from the image; or pass {options})"
            ) from None
        missing = [opt for key, opt in _APP_SETTINGS if given[key] is None and app.get(key) in (None, "")]
        if missing:
            raise UsageError(
                f"image {image} does not say {', '.join(m.lstrip('-') for m in missing)} (no io.modelship.app.* "
                f"labels: not built by 'modelship build', or by an older one); pass {', '.join(missing)}"
            )
        given = {k: app.get(k) if v is None else v for k, v in given.items()}
    return AppSettings(_port(given["port"]), _path(given["ready_path"], "ready"), _path(given["live_path"], "live"))


def _port(value: object) -> int:
    try:
        port = int(str(value)) if not isinstance(value, bool) else 0
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise UsageError(f"port must be a whole number between 1 and 65535, got {value!r}")
    return port


def _path(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise UsageError(f"{what} path must start with '/' and contain no spaces, got {value!r}")
    return value


def render(
    image: str,
    out: str | Path,
    *,
    name: str = DEFAULT_NAME,
    replicas: int = 2,
    template_dir: str | Path | None = None,
    port: int | None = None,
    ready_path: str | None = None,
    live_path: str | None = None,
    username: str | None = None,
    password: str | None = None,
    model_image: str | None = None,
    mount: str = "image-volume",
    image_model_dir: str | None = None,
    on_note: Callable[[str], None] | None = None,
    policy: str | None = None,
    key: str | Path | None = None,
    require_attestations: Sequence[str] = (),
) -> list[Path]:
    """Write the manifests of ``template_dir`` (default: the built-in ones) to ``out`` with ``image`` set.

    ``port``, ``ready_path`` and ``live_path`` default to what the image was built with (its labels, see
    :func:`app_settings`). Returns the written files, one per template file, in name order (then the policy's).

    ``model_image`` (``REPO@sha256:…``) mounts that model image at the app's model dir (``image_model_dir``, else
    the app image's ``io.modelship.model.dir`` label, else modelship's default) the ``mount`` way:
    ``image-volume``, ``init-container`` or ``kserve`` (then one ``inferenceservice.yaml`` is written instead).
    What the cluster must offer for it goes to ``on_note`` and into the files' header.

    ``policy="kyverno"`` also writes a Kyverno ClusterPolicy (``clusterpolicy-kyverno.yaml``) requiring the cosign
    signature of the public key ``key`` (PEM) on the app image and on every model image, image volumes included,
    and on the app image each attestation of ``require_attestations`` (slsa, cyclonedx, test-result or a
    predicate-type URI) signed by that key; see modelship._kyverno.
    """
    from . import _kyverno, _model_mount

    admission = _kyverno.prepare(policy, key, require_attestations)
    check_image(image)
    if model_image is not None:
        check_image(model_image)
    _model_mount.check_mount(mount, model_image)
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError(
            f"name {name!r} is not a valid Kubernetes name: lowercase letters, digits and '-', "
            "starting with a letter, at most 63 characters"
        )
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise UsageError(f"replicas must be a whole number >= 1, got {replicas!r}")
    folder = Path(template_dir) if template_dir is not None else default_template_dir()
    templates = _template_files(folder)
    if admission is not None and any(t.name == _kyverno.FILE for t in templates):
        raise UsageError(f"template {_kyverno.FILE} has the name of the --policy kyverno file; rename it")
    out_dir = Path(out)
    if out_dir.resolve() == folder.resolve():
        raise UsageError(f"--out {out_dir} is the template folder; render into another folder")
    loaded = [(path, _load(path)) for path in templates]
    deployment = next((d for _, docs in loaded for d in docs if d["kind"] == "Deployment"), None)
    if deployment is None:
        raise UsageError(f"no Deployment in the templates of {templates[0].parent}; add one to put the image in")
    app = app_settings(
        image, port=port, ready_path=ready_path, live_path=live_path, username=username, password=password
    )
    # The template's own app name; only names and labels carrying it are renamed, so objects of
    # other apps that a template refers to (e.g. in a NetworkPolicy) keep theirs.
    original = str(deployment["metadata"].get("name", ""))
    for path, docs in loaded:
        for doc in docs:
            _rename(doc, original, name)
            if doc["kind"] == "Deployment":
                _set_deployment(doc, image, replicas, app, path)
    notes: list[str] = []
    if model_image is not None:
        app_dir = image_model_dir or _app_model_dir(image, username, password)
        m = _model_mount.model_mount(model_image, app_dir)
        container = _app_container(deployment)
        if mount == "image-volume":
            _model_mount.image_volume(deployment, container, m)
        elif mount == "init-container":
            _model_mount.init_container(deployment, container, m)
        else:
            isvc = _model_mount.inference_service(deployment, container, m, name, replicas)
            loaded = [(folder / "inferenceservice.yaml", [isvc])]
        notes = _model_mount.notes(m, mount)
        for note in notes:
            if on_note is not None:
                on_note(note)
    files = {}
    for path, docs in loaded:
        header = f"# Rendered by 'modelship deploy render' from {path.name}: edit the template, not this file.\n"
        header += "".join(f"# Needs: {note}\n" for note in notes)
        files[path.name] = header + yaml.dump_all(docs, Dumper=_NoAliases, sort_keys=False, default_flow_style=False)
    if admission is not None:
        volumes = _kyverno.image_volume_refs(d for _, docs in loaded for d in docs)
        models = [r for r in ([model_image] if model_image else []) + volumes if r != image]
        files[_kyverno.FILE] = _kyverno.policy_file(_kyverno.cluster_policy(name, [image], models, *admission))
    if admission is None:
        _stale_policy(out_dir / _kyverno.FILE, _kyverno.HEADER)
    return _write(out_dir, files)


def _stale_policy(path: Path, header: str) -> None:
    """A policy an earlier ``--policy kyverno`` render left in --out stays (it may have been edited), but is said:
    ``kubectl apply -f OUT`` would still apply it."""
    try:
        rendered = path.read_text(errors="replace").startswith(header)
    except OSError:
        return
    if rendered:
        log.warning(
            "%s is from an earlier 'deploy render --policy kyverno' and was left as it is; 'kubectl apply -f %s' "
            "still applies it: delete it, or render with --policy kyverno",
            path,
            path.parent,
        )


class _NoAliases(yaml.SafeDumper):
    """A value shared by two places (a copied securityContext's capabilities) is written out at each: people and
    tools read these manifests, and anchors (``capabilities: *id001``) are neither readable nor always supported."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _write(out_dir: Path, files: dict[str, str]) -> list[Path]:
    """All the manifests or none (see write_files_atomic); a failure is one line naming --out."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a folder")
    try:
        return write_files_atomic(out_dir, files)
    except IsADirectoryError as e:
        raise UsageError(f"cannot write {e.filename}: it is a folder; remove it or choose another --out") from None
    except OSError as e:
        raise no_space(e, f"on the device of {out_dir}", "free space or choose another --out") or ModelshipError(
            f"cannot write the manifests to {out_dir}: {e.strerror or e.__class__.__name__}; choose a writable --out"
        ) from None


def _template_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UsageError(f"template folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise UsageError(f"template folder {folder} holds no .yaml files")
    return files


def _load(path: Path) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not valid YAML ({e})") from e
    for doc in docs:
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("kind"), str)
            or not isinstance(doc.get("metadata"), dict)
        ):
            raise UsageError(f"{path}: every document must be a Kubernetes object with kind and metadata")
    return docs


def _rename(doc: dict[str, Any], original: str, name: str) -> None:
    """``original`` -> ``name`` in metadata.name (``original-suffix`` keeps its suffix) and in name labels."""
    current = doc["metadata"].get("name")
    if current == original:
        doc["metadata"]["name"] = name
    elif isinstance(current, str) and current.startswith(original + "-"):
        doc["metadata"]["name"] = name + current[len(original) :]
    for mapping in mappings(doc):
        if mapping.get(NAME_LABEL) == original:
            mapping[NAME_LABEL] = name


def _set_deployment(doc: dict[str, Any], image: str, replicas: int, app: AppSettings, path: Path) -> None:
    spec = doc.setdefault("spec", {})
    spec["replicas"] = replicas
    try:
        containers = spec["template"]["spec"]["containers"]
    except (KeyError, TypeError):
        containers = None
    if not isinstance(containers, list) or not containers:
        raise UsageError(f"{path}: the Deployment has no spec.template.spec.containers")
    target = _app_container(doc)
    target["image"] = image
    _set_app(target, app)


def _app_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next((c for c in containers if c.get("name") == APP_CONTAINER), containers[0])


def _app_model_dir(image: str, username: str | None, password: str | None) -> str:
    """Where the app image wants its model: its ``io.modelship.model.dir`` label, else modelship's default."""
    from .conventions import MODEL_DIR, MODEL_DIR_LABEL
    from .image import inspect

    try:
        labels = inspect(image, username=username, password=password).labels
    except ModelshipError as e:
        raise type(e)(f"{e} (deploy render reads the app's model dir from the image; or pass --model-dir)") from None
    return str(labels.get(MODEL_DIR_LABEL) or MODEL_DIR)


def _set_app(container: dict[str, Any], app: AppSettings) -> None:
    """The image's port and probe paths in the container: its ``http`` (or only) port, PORT, the probes.

    A template's own choices stay where they are not the app's to make (probe timings, port names).
    """
    ports = [p for p in container.get("ports") or [] if isinstance(p, dict)]
    http = next((p for p in ports if p.get("name") == "http"), ports[0] if len(ports) == 1 else None)
    if http is not None:
        http["containerPort"] = app.port
    for env in container.get("env") or []:
        if isinstance(env, dict) and env.get("name") == "PORT" and "valueFrom" not in env:
            env["value"] = str(app.port)
    for probe, probe_path in (
        ("startupProbe", app.live_path),
        ("livenessProbe", app.live_path),
        ("readinessProbe", app.ready_path),
    ):
        get = (container.get(probe) or {}).get("httpGet")
        if isinstance(get, dict):
            get["path"] = probe_path
            if isinstance(get.get("port"), int):  # a named port follows containerPort by itself
                get["port"] = app.port


__all__ = ["AppSettings", "app_settings", "check_image", "default_template_dir", "render"]
