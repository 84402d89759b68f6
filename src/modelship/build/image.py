"""Build, push and inspect images with the docker SDK (any Docker-API engine; classic builder, no buildx)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, NoReturn

from .. import progress
from .._docker import docker_host, engine, short_reason, unreachable
from ..errors import AuthError, BuildError, DockerError, ModelshipError, NotFoundError, UsageError
from ..manifest import Manifest
from ..uri import redact, strip_secrets
from . import config as config_mod
from . import context as ctx
from . import debris
from . import dockerfile as dockerfile_mod
from . import labels as labels_mod
from . import registry as registry_mod
from . import wheels as wheels_mod


@dataclass(frozen=True)
class BuiltImage:
    """A built image: its id (``sha256:...``), the tags it got, and its labels."""

    id: str
    tags: tuple[str, ...]
    labels: dict[str, str]


# ---- build -------------------------------------------------------------------------------------------


def normalise_tags(tag: str | Sequence[str]) -> list[str]:
    from docker.utils.build import match_tag

    tags = [tag] if isinstance(tag, str) else list(tag)
    if not tags:
        raise UsageError("give at least one --tag IMAGE[:TAG]")
    out = []
    for t in tags:
        has_tag = ":" in t.rsplit("/", 1)[-1]  # a ":" before the last "/" is a registry port
        full = t if has_tag else f"{t}:latest"
        if "@" in t or not match_tag(full):
            raise UsageError(f"invalid image tag {t!r}: expected [REGISTRY/]NAME[:TAG], lower-case name")
        if full not in out:
            out.append(full)
    return out


def model_version_tag(tag: str, manifest: Manifest) -> str:
    """``IMAGE:<tag>-model-<version>`` (version sanitised to tag characters, short digest when unversioned)."""
    repo, _, app_tag = tag.rpartition(":")
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
        for ev in events:
            if "stream" in ev:
                text = ev["stream"]
                if not quiet:
                    sys.stderr.write(text)
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
) -> str:
    """Write a context (``fill`` adds the entries) to a temp file and build it; returns the image id."""
    with tempfile.TemporaryFile(prefix="modelship-context-") as f:
        w = ctx.ContextWriter(f)
        fill(w)
        w.close()
        size = f.tell()
        f.seek(0)
        trace = debris.BuildTrace()
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
    model: Path,
    manifest: Manifest,
    *,
    quiet: bool,
    traces: list[debris.BuildTrace],
) -> str:
    """The image of stage ``model`` (base + setup + deps + model): reused when its inputs are unchanged.

    Its key covers everything that goes into it -- the rendered stages, the base image id, the wheelhouse,
    the manifest as it goes into the image, and each model file's stat (so a file edited in place after
    the fetch is re-verified) -- and maps to an image id in the modelship cache. A code-only rebuild then
    never sends the model to the engine again.
    """
    import docker.errors

    model_text, _ = dockerfile_mod.split_stages(text, "model")
    h = hashlib.sha256(b"modelship-model-stage-v1\0")
    h.update(model_text.encode() + b"\0" + client.images.get(base).id.encode() + b"\0" + wheel_dir.name.encode())
    h.update(b"\0" + manifest.without_timestamp().to_json().encode())
    for f in manifest.files:
        h.update(ctx.stat_signature(model / f.path).encode())
    index = wheels_mod.build_cache_dir() / "stages" / h.hexdigest()[:40]
    if index.is_file():
        image_id = index.read_text().strip()
        try:
            client.images.get(image_id)
            if not quiet:
                print(f"modelship: dependencies and model unchanged, reusing {image_id[:19]}", file=sys.stderr)
            return image_id
        except docker.errors.ImageNotFound:
            pass  # pruned since: build it again

    def fill(w: ctx.ContextWriter) -> None:
        w.bytes(ctx.DOCKERFILE_PATH, model_text.encode())
        _add_wheels(w, wheel_dir)
        ctx.add_model(w, model, manifest, ctx.MODEL_ROOTFS + dockerfile_mod.MODEL_DIR)

    image_id = _build_context(client, fill, tag=None, labels={}, network_mode="none", quiet=quiet, traces=traces)
    index.parent.mkdir(parents=True, exist_ok=True)
    tmp = index.with_name(f".{index.name}.{os.getpid()}")
    tmp.write_text(image_id)
    os.replace(tmp, index)
    return image_id


def build(
    app_dir: str | Path,
    model_dir: str | Path,
    tag: str | Sequence[str],
    *,
    base_image: str | None = None,
    requirements: str | Path | None = None,
    dockerfile: str | Path | None = None,
    entrypoint: str | None = None,
    port: int | None = None,
    ready_path: str | None = None,
    tag_model_version: bool = False,
    pull: bool = False,
    quiet: bool = False,
    docker_client=None,
) -> BuiltImage:
    """Package APP_DIR + the model in MODEL_DIR into an image; see docs/layers.md for the layer contract."""
    cfg = config_mod.resolve(
        app_dir,
        base_image=base_image,
        requirements=requirements,
        dockerfile=dockerfile,
        entrypoint=entrypoint,
        port=port,
        ready_path=ready_path,
        tag_model_version=tag_model_version,
    )
    model = Path(model_dir).expanduser().resolve()
    manifest = ctx.model_manifest(model)
    manifest = replace(manifest, uri=strip_secrets(manifest.uri))  # digest covers files only, not the uri
    tags = normalise_tags(tag)
    if cfg.tag_model_version:
        tags += [t for t in (model_version_tag(x, manifest) for x in list(tags)) if t not in tags]
    user_dockerfile = cfg.dockerfile.read_text() if cfg.dockerfile else None
    labels = labels_mod.image_labels(cfg.app_dir, manifest, config_mod.project_metadata(cfg.app_dir))

    with engine(docker_client) as client:
        traces: list[debris.BuildTrace] = []  # every engine build call, for cleanup if one fails
        try:
            # the target interpreter: needed to render our Dockerfile, and to resolve wheels for any Dockerfile
            base = cfg.base_image
            if user_dockerfile is not None and not cfg.base_image_explicit:
                base = dockerfile_mod.base_from_dockerfile(user_dockerfile) or base
            if pull:
                _pull_base(client, base, quiet=quiet)
            target = None
            if user_dockerfile is None or cfg.requirements is not None:
                target = wheels_mod.detect_target(client, base)
            wheel_dir = wheels_mod.wheelhouse(cfg.requirements, target, quiet=quiet) if target else None
            app_files = ctx.app_files(cfg.app_dir, skip=[model])

            if user_dockerfile is None:
                assert target is not None and wheel_dir is not None and cfg.entrypoint is not None
                text = dockerfile_mod.render(
                    base_image=base,
                    python=target.python,
                    cmd=cfg.entrypoint,
                    port=cfg.port,
                    ready_path=cfg.ready_path,
                    healthcheck_interval=cfg.healthcheck_interval,
                    labels=labels,
                )
                stage_id = _model_stage(client, text, base, wheel_dir, model, manifest, quiet=quiet, traces=traces)
                _, app_text = dockerfile_mod.split_stages(text, stage_id)

                def fill(w: ctx.ContextWriter) -> None:
                    w.bytes(ctx.DOCKERFILE_PATH, app_text.encode())
                    ctx.add_app(w, cfg.app_dir, ctx.APP_ROOTFS + dockerfile_mod.APP_DIR, app_files)

                # labels are in the rendered Dockerfile already (one LABEL step instead of one per label)
                image_id = _build_context(
                    client, fill, tag=tags[0], labels={}, network_mode="none", quiet=quiet, traces=traces
                )
            else:
                assert cfg.dockerfile is not None

                def fill(w: ctx.ContextWriter) -> None:
                    w.bytes(ctx.DOCKERFILE_PATH, user_dockerfile.encode())
                    _add_wheels(w, wheel_dir)
                    ctx.add_model(w, model, manifest, ctx.MODEL_PATH)
                    ctx.add_app(w, cfg.app_dir, "", app_files)

                # the user's RUN steps may need the network (apt-get, ...): their choice, not forced off here
                buildargs = {"MODELSHIP_MODEL_DIR": ctx.MODEL_PATH, "MODELSHIP_WHEELS_DIR": ctx.WHEELS_PATH}
                image_id = _build_context(
                    client, fill, tag=tags[0], labels=labels, buildargs=buildargs, quiet=quiet, traces=traces
                )
            for t in tags[1:]:
                repo, _, name = t.rpartition(":")
                try:
                    client.api.tag(image_id, repo, name, force=True)
                except Exception as e:  # noqa: BLE001 - any engine failure here is a DockerError for the user
                    raise DockerError(f"tagging {image_id[:19]} as {t} failed: {short_reason(e)}") from None
            debris.keep_stages(client, traces)  # inside: an interrupt here must not leave a stage untagged
        except BaseException:
            # failed, interrupted (Ctrl-C, SIGTERM) or cancelled: leave no half-built images behind
            debris.discard(client, traces, quiet=quiet)
            raise
    if not quiet:
        print(f"modelship: built {image_id[:19]} tagged {', '.join(tags)}", file=sys.stderr)
    return BuiltImage(image_id, tuple(tags), labels)


def _pull_base(client, image: str, *, quiet: bool) -> None:
    """Refresh the base image from its registry (off by default: builds use what the engine has)."""
    repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    if not quiet:
        print(f"modelship: pulling base image {image}", file=sys.stderr)
    try:
        client.images.pull(repo, tag=tag)
    except Exception as e:  # noqa: BLE001 - any engine failure here is a DockerError for the user
        raise DockerError(
            f"cannot pull base image {image}: {short_reason(e)}; check the name and 'docker login'"
        ) from None


# ---- push --------------------------------------------------------------------------------------------

PUSH_ATTEMPTS = 3  # whole pushes; within each, the engine retries a failed layer upload itself (5 s, 10 s, ...)

# Engine messages of failures a new push gets past: the registry or the network to it failed on the way (5xx,
# reset, refused, EOF, timeout), or the registry rejected bytes damaged on the way (digest/manifest invalid,
# blob unknown). The engine does not retry its manifest PUT at all; a new push skips the layers already up.
_RETRYABLE = re.compile(
    r"unexpected http status: 5\d\d|connection reset|connection refused|broken pipe|\beof\b|timeout|timed out"
    r"|transport connection broken|malformed http|closed network connection|server closed"
    r"|deadline exceeded|digest invalid|manifest invalid|blob unknown|blob upload unknown|size invalid",
    re.IGNORECASE,
)


class _PushRetry(Exception):
    """One push attempt failed in a way the next attempt may get past."""


def _push_error(image: str, registry: str, message: str) -> ModelshipError:
    low = message.lower()
    if any(s in low for s in ("unauthorized", "denied", "authentication required", "no basic auth")):
        return AuthError(
            f"push of {image} denied by {registry}: run 'docker login {registry}' or pass --username/--password-stdin"
        )
    if "does not exist locally" in low or "no such image" in low:
        return NotFoundError(f"image {image} does not exist locally: build or tag it first (modelship build)")
    return DockerError(
        f"push of {image} failed: {redact(message)}; check the image name and the registry, then push again"
    )


def _push_reason(message: str) -> str:
    """An engine error as one short line (it may list several errors on several lines), without secrets."""
    lines = [s.strip() for s in redact(message).splitlines() if s.strip() and s.strip() != "errors:"]
    reason = "; ".join(lines) or "unknown error"
    reason = re.sub(r"(https?://[^\s\"?]+)\?[^\s\"]*", r"\1", reason)  # upload URLs carry signed state: drop it
    reason = re.sub(r"received unexpected HTTP status: ", "the registry answered HTTP ", reason)
    reason = re.sub(r"unexpected EOF", "connection closed early (EOF)", reason)
    return reason if len(reason) <= 300 else reason[:299] + "…"


def _pushed_manifest_problem(
    ref: registry_mod.Reference, digest: str, creds: registry_mod.Credentials | None
) -> str | None:
    """Why the registry's manifest for the tag is not the one the engine pushed; None when it is or cannot be read.

    Only for plain-http registries on this machine: without TLS nothing stops a byte damaged on the way from
    being stored, and the registry digests what arrived -- it accepts, say, a manifest whose size field changed,
    while the engine reports the digest of what it sent.
    """
    host = docker_host()
    local_engine = host.startswith("unix://") or re.match(r"tcp://(localhost|127\.0\.0\.1|\[::1\])[:/]?", host)
    if not local_engine or not registry_mod.base_url(ref.registry).startswith("http://"):
        return None  # TLS guards the bytes; or the engine's 127.0.0.1 is another machine than ours
    client = registry_mod.RegistryClient(ref.registry, creds or registry_mod.docker_credentials(ref.registry))
    try:
        held, _ = client.manifest(ref.repository, ref.reference)
    except AuthError:
        return None  # the engine had credentials we cannot read back with: nothing to compare
    except ModelshipError as e:
        return f"reading the pushed manifest back failed: {e}"
    finally:
        client.close()
    if held != digest:
        return f"{ref.registry} holds manifest {held[:19]}… for the tag, not the pushed {digest[:19]}…"
    return None


def push(
    image: str,
    *,
    username: str | None = None,
    password: str | None = None,
    quiet: bool = False,
    docker_client=None,
) -> str:
    """Push IMAGE[:TAG] to its registry; returns the manifest digest (``sha256:...``).

    A transient registry failure (5xx, reset, timeout, damaged upload) gets up to PUSH_ATTEMPTS whole pushes.
    """
    import docker.errors
    import requests

    ref = registry_mod.parse_reference(image)
    if ref.reference.startswith("sha256:"):
        raise UsageError(f"cannot push {image}: give a tag, not a digest")
    if (username is None) != (password is None):
        raise UsageError("give both --username and a password (--password-stdin), or neither")
    repo, tag = image.rsplit(":", 1) if ":" in image.rsplit("/", 1)[-1] else (image, "latest")
    name = f"{repo}:{tag}"
    auth = {"username": username, "password": password} if username is not None else None
    creds = registry_mod.Credentials(username, password) if username is not None else None

    def fail(message: str) -> NoReturn:
        reason = _push_reason(message)
        error = _push_error(name, ref.registry, reason)
        retryable = _RETRYABLE.search(message.replace(repo, ""))  # not fooled by a name like app/timeout-svc
        if isinstance(error, (AuthError, NotFoundError)) or not retryable:
            raise error
        raise _PushRetry(reason)

    def attempt(client) -> str:
        digest = None
        layers: dict[str, tuple[int, int]] = {}  # layer id -> (current, total) bytes
        bar = progress.Progress(None, f"push {name}", show=None if not quiet else False)
        done = 0
        waiting: set[str] = set()  # layers in the engine's own retry countdown
        try:
            for ev in client.api.push(repo, tag=tag, stream=True, decode=True, auth_config=auth):
                if "error" in ev:
                    fail(ev.get("error", ""))
                if isinstance(ev.get("aux"), dict) and ev["aux"].get("Digest"):
                    digest = ev["aux"]["Digest"]
                layer, status = ev.get("id"), ev.get("status", "")
                detail = ev.get("progressDetail") or {}
                if layer and detail.get("total"):
                    layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
                    bar.total = sum(t for _, t in layers.values())
                    now = sum(c for c, _ in layers.values())
                    if now > done:  # a layer upload the engine restarts counts from 0 again
                        bar.update(now - done)
                        done = now
                elif layer and not quiet and not progress.enabled() and status in ("Pushed", "Layer already exists"):
                    print(f"{layer}: {status}", file=sys.stderr)
                if layer and status.startswith("Retrying in"):  # a countdown, one event a second: say it once
                    if layer not in waiting and not quiet:
                        print(f"{layer}: upload failed, the engine retries it ({status.lower()})", file=sys.stderr)
                    waiting.add(layer)
                elif layer:
                    waiting.discard(layer)
        except docker.errors.APIError as e:
            fail(str(getattr(e, "explanation", None) or e))
        except requests.ConnectionError as e:
            raise unreachable(e) from None
        finally:
            bar.close()
        if not digest:
            raise DockerError(f"push of {name} finished without a digest; see the engine log")
        problem = _pushed_manifest_problem(ref, digest, creds)
        if problem:
            raise _PushRetry(problem)
        return digest

    digest = ""
    with engine(docker_client) as client:
        for n in range(1, PUSH_ATTEMPTS + 1):
            try:
                digest = attempt(client)
                break
            except _PushRetry as e:
                if n == PUSH_ATTEMPTS:
                    raise DockerError(
                        f"push of {name} failed {n} times, last: {e}; the registry {ref.registry} or the network "
                        "to it is failing: check it, then push again"
                    ) from None
                print(f"modelship: push of {name} failed ({e}); retrying ({n + 1}/{PUSH_ATTEMPTS})", file=sys.stderr)
                time.sleep(n * (0.5 + random.random()))  # short: the engine waited 5 s per layer retry
    if not quiet:
        print(f"modelship: pushed {name}@{digest}", file=sys.stderr)
    return digest


# ---- inspect -----------------------------------------------------------------------------------------


def describe(ref: str, source: str, image_id: str | None, digest: str | None, labels: dict[str, str]) -> dict:
    """The inspect result: labels plus the model they describe, parsed."""
    manifest = None
    raw = labels.get(f"{labels_mod.MODEL}.manifest")
    if raw:
        try:
            manifest = json.loads(raw)
        except ValueError:
            manifest = None  # a hand-made or truncated label: report the rest anyway
    return {
        "ref": ref,
        "source": source,
        "id": image_id,
        "digest": digest,
        "labels": labels,
        "model": {
            "uri": labels.get(f"{labels_mod.MODEL}.uri"),
            "version": labels.get(f"{labels_mod.MODEL}.version"),
            "digest": labels.get(f"{labels_mod.MODEL}.digest"),
        },
        "manifest": manifest,
    }


def _local(ref: str, client) -> dict | None:
    import docker.errors

    try:
        img = client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as e:
        raise DockerError(f"cannot inspect {ref}: {short_reason(e)}") from None
    repo_digests = img.attrs.get("RepoDigests") or []
    digest = repo_digests[0].split("@", 1)[1] if repo_digests else None
    return describe(ref, "local", img.id, digest, dict(img.labels or {}))


def inspect(ref: str, *, username: str | None = None, password: str | None = None, docker_client=None) -> dict:
    """Labels and model of an image: the local one if the engine has it, else read from its registry."""
    registry_mod.parse_reference(ref)  # fail early, with a usage error, on a malformed reference
    remote_ok = registry_mod.names_registry(ref)
    try:
        with engine(docker_client) as client:
            found = _local(ref, client)
            if found is not None:
                return found
    except DockerError:
        if not remote_ok:
            raise  # a local name: the engine was the only place to look
    if not remote_ok:
        # never guess Docker Hub for a name the user may simply have mistyped
        raise NotFoundError(
            f"image {ref} not found locally; to read it from a registry give the full reference "
            "(REGISTRY/NAME:TAG, e.g. myacr.azurecr.io/app:1 or docker.io/library/python:3.11)"
        )
    remote = registry_mod.remote_image(ref, username=username, password=password)
    return describe(ref, "registry", remote["id"], remote["digest"], remote["labels"])
