"""build(): app + model into an image with the docker SDK (any Docker-API engine; classic builder, no buildx)."""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .. import modeldir, progress
from .._docker import docker_host, engine, short_reason, unreachable
from .._fs import write_atomic
from ..conventions import MODEL_DIR, MODEL_DIR_LABEL, dependencies_label
from ..errors import BuildError, DockerError, UsageError
from ..manifest import Manifest
from ..oci.reference import split_tag
from ..uri import redact, strip_secrets
from . import config as config_mod
from . import context as ctx
from . import debris
from . import dockerfile as dockerfile_mod
from . import labels as labels_mod
from . import wheels as wheels_mod

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is 3.11's; annotations are not evaluated at run time

    from ..appimage import AppImage

log = logging.getLogger("modelship")
BUILDERS = ("engine", "registry")  # engine: the Docker engine builds; registry: modelship.appimage writes it
# gunicorn's --no-control-socket: the default command passes it when the wheelhouse's gunicorn has it


@dataclass(frozen=True)
class BuiltImage:
    """A built image: its id (``sha256:...``), the tags it got, and its labels."""

    id: str
    tags: tuple[str, ...]
    labels: dict[str, str]


def normalise_tags(tag: str | Sequence[str]) -> list[str]:
    from docker.utils.build import match_tag

    tags = [tag] if isinstance(tag, str) else list(tag)
    if not tags:
        raise UsageError("give at least one --tag IMAGE[:TAG]")
    out = []
    for t in tags:
        full = ":".join(split_tag(t))
        if "@" in t or not match_tag(full):
            raise UsageError(f"invalid image tag {t!r}: expected [REGISTRY/]NAME[:TAG], lower-case name")
        if full not in out:
            out.append(full)
    return out


def model_version_tag(tag: str, manifest: Manifest) -> str:
    """``IMAGE:<tag>-model-<version>`` (version sanitised to tag characters, short digest when unversioned)."""
    repo, app_tag = split_tag(tag)
    version = manifest.version or manifest.digest.split(":", 1)[1][:12]
    version = re.sub(r"[^A-Za-z0-9_.-]", "-", str(version))
    return f"{repo}:{app_tag}-model-{version}"[: len(repo) + 1 + 128]


class _ProgressReader:
    """Counts the build context as the SDK uploads it (the upload is the slow part for big models)."""

    def __init__(self, f: BinaryIO, size: int, bar: progress.Progress):
        self._f, self._size, self._bar = f, size, bar

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._bar.update(len(data))
        return data

    def __len__(self) -> int:  # lets requests send Content-Length instead of chunking
        return self._size


def _stream_build(
    client,
    fileobj: BinaryIO,
    size: int,
    *,
    tag: str | None,
    buildargs: dict[str, str],
    labels: dict[str, str],
    network_mode: str | None,
    quiet: bool,
    trace: debris.BuildTrace,
) -> str:
    """Run the build, stream its log to stderr, return the image id or raise BuildError.

    ``trace`` records what the engine made, so the caller can remove it if the build does not finish.
    """
    import docker.errors
    import requests

    bar = progress.Progress(size, "build context", show=None if not quiet else False)
    step, last_output, image_id = "", "", None
    response = None
    try:
        events = client.api.build(
            fileobj=_ProgressReader(fileobj, size, bar),
            custom_context=True,
            tag=tag,
            dockerfile=ctx.DOCKERFILE_PATH,
            buildargs=buildargs,
            labels=labels,
            rm=True,
            forcerm=True,
            pull=False,
            network_mode=network_mode,
            decode=True,
        )
        response = debris.response_of(events)
        # the context is sent once the engine answers: end the bar's line before the engine's log starts
        bar.close()
        for ev in events:
            if "stream" in ev:
                text = ev["stream"]
                if not quiet:
                    sys.stderr.write(_shown(text))
                    sys.stderr.flush()
                for line in text.splitlines():
                    line = line.strip()
                    trace.feed(line)
                    if line.startswith("Step "):
                        step = line
                    elif line and not line.startswith("--->") and not line.startswith("Removing intermediate"):
                        last_output = line
            elif "aux" in ev and isinstance(ev["aux"], dict) and "ID" in ev["aux"]:
                image_id = ev["aux"]["ID"]
            elif "error" in ev:
                trace.ended = True  # the engine stopped on its own: nothing lands after this
                error = ev.get("error", "").strip()
                # a failing RUN reports only "returned a non-zero code"; the command's last line says why
                reason = last_output if "non-zero code" in error and last_output else error
                where = f" at {step[:100]}" if step else ""
                raise BuildError(redact(f"image build failed{where}: {reason}"))
            elif "status" in ev and not quiet:
                sys.stderr.write(ev["status"] + "\n")
        trace.ended = True
    except (docker.errors.APIError, docker.errors.BuildError) as e:
        raise BuildError(f"image build failed: {short_reason(e)}") from None
    except requests.ConnectionError as e:
        raise unreachable(e) from None
    finally:
        bar.close()
        debris.hang_up(response)  # on an interrupt: at once, so the engine cancels the build
    if image_id is None:
        raise BuildError("image build finished without an image id; see the build log above")
    return image_id


def _shown(text: str, limit: int = 200) -> str:
    """The engine's log as shown: a step echoing a huge instruction (the LABEL with the model's manifest) is cut
    to its start and its size; 'modelship inspect' shows the labels in full."""
    return "".join(
        f"{line[:limit]} … ({len(line)} characters)\n" if len(line) > limit else line
        for line in text.splitlines(keepends=True)
    )


def _add_wheels(w: ctx.ContextWriter, wheel_dir: Path | None) -> None:
    if wheel_dir is not None:
        ctx.add_wheels(w, wheel_dir)
    else:  # no requirements: an empty wheelhouse, so a Dockerfile's COPY of it still works
        w.bytes(f"{ctx.WHEELS_PATH}/{wheels_mod.WHEELHOUSE_REQUIREMENTS}", b"")


def _build_context(
    client,
    fill: Callable[[ctx.ContextWriter], None],
    *,
    tag: str | None,
    labels: dict[str, str],
    buildargs: dict[str, str] | None = None,
    network_mode: str | None = None,
    quiet: bool,
    traces: list[debris.BuildTrace],
    holds: debris.Holds | None = None,
    title: str | None = None,
) -> str:
    """Write a context (``fill`` adds the entries) to a temp file and build it; returns the image id.

    ``title`` heads the build's log (not quiet): a generated Dockerfile is built in two engine builds, each
    with its own "Step 1/N", and the title says which one a step belongs to.
    """
    if title and not quiet:
        print(f"modelship: {title}", file=sys.stderr, flush=True)
    with tempfile.TemporaryFile(prefix="modelship-context-") as f:
        w = ctx.ContextWriter(f)
        fill(w)
        w.close()
        size = f.tell()
        f.seek(0)
        trace = debris.BuildTrace(holds=holds)
        traces.append(trace)
        return _stream_build(
            client,
            f,
            size,
            tag=tag,
            buildargs=buildargs or {},
            labels=labels,
            network_mode=network_mode,
            quiet=quiet,
            trace=trace,
        )


def _model_stage(
    client,
    text: str,
    base: str,
    wheel_dir: Path,
    model: Path | None,
    manifest: Manifest | None,
    signature: bytes | None,
    *,
    quiet: bool,
    traces: list[debris.BuildTrace],
    holds: debris.Holds,
) -> str:
    """The image of stage ``model`` (base + setup + deps + model): reused when its inputs are unchanged.
    Without a model (an app-only build) the model dir is there, empty.

    Its key covers everything that goes into it -- the rendered stages, the base image id, the wheelhouse,
    the manifest as it goes into the image, and each model file's stat (so a file edited in place after
    the fetch is re-verified) -- and maps to an image id in the modelship cache. A code-only rebuild then
    never sends the model to the engine again.
    """
    import docker.errors

    model_text, _ = dockerfile_mod.split_stages(text, "model")
    h = hashlib.sha256(b"modelship-model-stage-v1\0")
    h.update(model_text.encode() + b"\0" + client.images.get(base).id.encode() + b"\0" + wheel_dir.name.encode())
    if model is None or manifest is None:
        h.update(b"\0no model")
    else:
        h.update(b"\0" + manifest.without_timestamp().to_json().encode() + (signature or b""))  # + model.sig
        for f in manifest.files:
            h.update(modeldir.stat_signature(model / f.path).encode())
    index = wheels_mod.build_cache_dir() / "stages" / h.hexdigest()[:40]
    if index.is_file():
        image_id = index.read_text().strip()
        try:
            client.images.get(image_id)
            if not quiet:
                what = "dependencies and model" if model is not None else "dependencies"
                print(f"modelship: {what} unchanged, reusing {image_id[:19]}", file=sys.stderr)
            return image_id
        except docker.errors.ImageNotFound:
            pass  # pruned since: build it again

    def fill(w: ctx.ContextWriter) -> None:
        w.bytes(ctx.DOCKERFILE_PATH, model_text.encode())
        _add_wheels(w, wheel_dir)
        if model is not None and manifest is not None:
            ctx.add_model(w, model, manifest, ctx.MODEL_ROOTFS + MODEL_DIR, signature)
        else:
            w.dir(ctx.MODEL_ROOTFS + MODEL_DIR)

    title = "build 1 of 2, stage model: base, user, dependencies" + (", model" if model is not None else "")
    image_id = _build_context(
        client, fill, tag=None, labels={}, network_mode="none", quiet=quiet, traces=traces, holds=holds, title=title
    )
    write_atomic(index, image_id, durable=False)
    return image_id


def build(
    app_dir: str | Path,
    model_dir: str | Path | None,
    tag: str | Sequence[str],
    *,
    pull: bool = False,
    quiet: bool = True,
    docker_client=None,
    allow_unsafe_pickle: Sequence[str | Path] = (),
    builder: str = "engine",
    platform: str | Sequence[str] | None = None,
    verify_keys: Sequence[str | Path] | None = None,
    username: str | None = None,
    password: str | None = None,
    **app: Unpack[config_mod.AppSettings],
) -> BuiltImage | AppImage:
    """Package APP_DIR + the model in MODEL_DIR into an image; see docs/layers.md for the layer contract.

    ``app``: ``base_image``, ``requirements``, ``dockerfile``, ``entrypoint``, ``port``, ``ready_path``,
    ``live_path``, ``tag_model_version`` (:class:`modelship.image.config.AppSettings`); each one not given comes
    from ``[tool.modelship]`` in APP_DIR's pyproject.toml, the environment, or the default.

    ``builder="engine"`` (the default) builds with the Docker engine into its image store (``push`` sends it to
    a registry); ``builder="registry"`` contacts no engine: it reads ``base_image`` from its registry, writes
    the image straight to the registry of ``tag`` and returns a :class:`modelship.appimage.AppImage` (its
    ``ref`` is digest-pinned); ``platform`` (e.g. ``linux/arm64``, or several) picks the platforms of a
    multi-platform base; ``username``/``password`` log in to the registries it reads and writes (default: the
    docker config's, or ACR via Entra ID). ``pull`` and ``docker_client`` are the engine's, a ``dockerfile`` too.

    ``model_dir=None`` builds an app-only image: no model labels, an empty model dir that the image records
    (label ``io.modelship.model.dir``, env ``MODELSHIP_MODEL_DIR``), for ``modelship assemble`` to fill.

    Quiet by default, as a library call should be: ``quiet=False`` streams the engine's build log and a
    progress bar to stderr (the CLI asks for that). ``port``, ``ready_path`` and ``live_path`` are recorded in
    the image's ``io.modelship.app.*`` labels, where ``modelship deploy render`` reads them. A model pickle
    that imports a dangerous global is refused before the engine is used, unless named in
    ``allow_unsafe_pickle`` (see modelship.trust.pickles). ``verify_keys``: model.sig checked first (docs/trust.md).
    """
    if builder not in BUILDERS:
        raise UsageError(f"unknown builder {builder!r}: give one of {', '.join(BUILDERS)}")
    registry = builder == "registry"
    if registry and pull:
        raise UsageError(
            "--pull is the engine builder's: the registry builder always reads the base image from its registry"
        )
    if not registry and (username is not None or password is not None):
        raise UsageError("--username/--password-stdin need --builder registry: the engine pulls with 'docker login'")
    if not registry and platform:
        raise UsageError("--platform needs --builder registry: the engine builder builds for the engine's platform")
    cfg = config_mod.resolve(app_dir, **app)
    if registry and cfg.dockerfile is not None:
        raise UsageError(
            "a Dockerfile needs the engine builder (--builder engine): the registry builder runs no build steps, "
            "it writes the image from the resolved wheels and the app's files"
        )
    if not registry and cfg.requirements is None and cfg.dockerfile is None:
        log.warning(
            "no requirements file (APP_DIR/requirements.txt, --requirements or [tool.modelship] requirements): "
            "the image has no dependencies installed, only the base image's Python"
        )
    model = Path(model_dir).expanduser().resolve() if model_dir is not None else None
    manifest, signature, signer = None, None, None
    if model is not None:
        from ..trust.check import image_model  # not at import: cryptography only when a model is built

        manifest, signature, signer = image_model(model, verify_keys, allow_unsafe_pickle)
        manifest = replace(manifest, uri=strip_secrets(manifest.uri))  # digest covers files only, not the uri
    tags = normalise_tags(tag)
    if cfg.tag_model_version:
        if manifest is None:
            raise UsageError("--tag-model-version needs a model (--model DIR); an app-only image has no version")
        tags += [t for t in (model_version_tag(x, manifest) for x in list(tags)) if t not in tags]
    if registry:
        from ..appimage import build_in_registry

        return build_in_registry(
            cfg, model, manifest, (signature, signer), tags, platform=platform, username=username,
            password=password, quiet=quiet,
        )  # fmt: skip
    user_dockerfile = cfg.dockerfile.read_text() if cfg.dockerfile else None
    labels = labels_mod.image_labels(
        cfg.app_dir,
        manifest,
        config_mod.project_metadata(cfg.app_dir),
        labels_mod.app_labels(cfg.port, cfg.ready_path, cfg.live_path),
        signer,
    )
    if user_dockerfile is None:  # the generated Dockerfile's model dir (a user's Dockerfile says its own, in ENV)
        labels[MODEL_DIR_LABEL] = MODEL_DIR

    with engine(docker_client) as client:
        traces: list[debris.BuildTrace] = []  # every engine build call, for cleanup if one fails
        holds = debris.Holds(docker_host())  # what this build uses, for the other builds on the engine to leave
        try:
            # the target interpreter: needed to render our Dockerfile, and to resolve wheels for any Dockerfile
            base = cfg.base_image
            if user_dockerfile is not None and not cfg.base_image_explicit:
                base = dockerfile_mod.base_from_dockerfile(user_dockerfile) or base
            _ensure_base(client, base, pull=pull, quiet=quiet)
            target = None
            if user_dockerfile is None or cfg.requirements is not None:
                target = wheels_mod.detect_target(client, base)
            wheel_dir = wheels_mod.wheelhouse(cfg.requirements, target, quiet=quiet) if target else None
            if wheel_dir is not None:
                labels.update(dependencies_label(wheels_mod.installed(wheel_dir)))
            app_files = ctx.app_files(
                cfg.app_dir, skip=[model] if model is not None else [], include=cfg.include, exclude=cfg.exclude
            )

            if user_dockerfile is None:
                assert target is not None and wheel_dir is not None and cfg.entrypoint is not None
                text = dockerfile_mod.render(
                    base_image=base,
                    python=target.python,
                    cmd=config_mod.image_command(cfg, wheel_dir),
                    port=cfg.port,
                    ready_path=cfg.ready_path,
                    healthcheck_interval=cfg.healthcheck_interval,
                    labels=labels,
                )
                stage_id = _model_stage(
                    client, text, base, wheel_dir, model, manifest, signature, quiet=quiet, traces=traces, holds=holds
                )
                _, app_text = dockerfile_mod.split_stages(text, stage_id)

                def fill(w: ctx.ContextWriter) -> None:
                    w.bytes(ctx.DOCKERFILE_PATH, app_text.encode())
                    ctx.add_app(w, cfg.app_dir, ctx.APP_ROOTFS + dockerfile_mod.APP_DIR, app_files)

                # labels are in the rendered Dockerfile already (one LABEL step instead of one per label)
                image_id = _build_context(
                    client, fill, tag=tags[0], labels={}, network_mode="none", quiet=quiet, traces=traces, holds=holds,
                    title="build 2 of 2, stage app: code, command, labels",
                )  # fmt: skip
            else:
                assert cfg.dockerfile is not None

                def fill(w: ctx.ContextWriter) -> None:
                    w.bytes(ctx.DOCKERFILE_PATH, user_dockerfile.encode())
                    _add_wheels(w, wheel_dir)
                    if model is not None and manifest is not None:
                        ctx.add_model(w, model, manifest, ctx.MODEL_PATH, signature)
                    else:  # app-only: an empty model folder, so the Dockerfile's COPY of it still works
                        w.dir(ctx.MODEL_PATH)
                    ctx.add_app(w, cfg.app_dir, "", app_files)

                # the user's RUN steps may need the network (apt-get, ...): their choice, not forced off here
                buildargs = {"MODELSHIP_MODEL_DIR": ctx.MODEL_PATH, "MODELSHIP_WHEELS_DIR": ctx.WHEELS_PATH}
                image_id = _build_context(
                    client, fill, tag=tags[0], labels=labels, buildargs=buildargs, quiet=quiet, traces=traces,
                    holds=holds,
                )  # fmt: skip
            for t in tags[1:]:
                repo, name = split_tag(t)
                try:
                    client.api.tag(image_id, repo, name, force=True)
                except Exception as e:  # noqa: BLE001 - any engine failure here is a DockerError for the user
                    raise DockerError(f"tagging {image_id[:19]} as {t} failed: {short_reason(e)}") from None
            debris.keep_stages(client, traces)  # inside: an interrupt here must not leave a stage untagged
        except BaseException:
            # failed, interrupted (Ctrl-C, SIGTERM) or cancelled: leave no half-built images behind
            debris.discard(client, traces, quiet=quiet, holds=holds)
            raise
        finally:
            holds.close()
    return BuiltImage(image_id, tuple(tags), labels)


def _pull_base(client, image: str, *, quiet: bool) -> None:
    """Refresh the base image from its registry (off by default: builds use what the engine has)."""
    repo, tag = split_tag(image)
    if not quiet:
        print(f"modelship: pulling base image {image}", file=sys.stderr)
    try:
        client.images.pull(repo, tag=tag)
    except Exception as e:  # noqa: BLE001 - any engine failure here is a DockerError for the user
        raise DockerError(
            f"cannot pull base image {image}: {short_reason(e)}; check the name and 'docker login'"
        ) from None


def _ensure_base(client, image: str, *, pull: bool, quiet: bool) -> None:
    """Pull the base image when asked (``pull``) or when the engine does not have it, as `docker build` does."""
    import docker.errors

    if pull:
        _pull_base(client, image, quiet=quiet)
        return
    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError:
        return  # not a missing image: detecting the interpreter reports the engine's reason
    if not quiet:
        print(f"modelship: pulling base image {image} (not local)", file=sys.stderr)
    repo, tag = split_tag(image)
    try:
        client.images.pull(repo, tag=tag)
    except Exception as e:  # noqa: BLE001 - any engine failure here is a DockerError for the user
        raise DockerError(
            f"base image {image} is not local and pulling it failed ({short_reason(e)}): check the name and "
            "'docker login' to its registry, or build or load it locally first"
        ) from None
