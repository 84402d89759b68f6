"""The `modelship` command: thin; parses arguments, calls the public API, maps errors to exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__, logs, progress, settings
from .conventions import (
    MODEL_DIGEST_LABEL,
    MODEL_DIR_LABEL,
    MODEL_MANIFEST_LABEL,
    MODEL_URI_LABEL,
    MODEL_VERSION_LABEL,
)
from .errors import ModelshipError, UsageError
from .manifest import tree_digest
from .uri import redact

log = logging.getLogger("modelship")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so cleanup runs like on Ctrl-C."""


class _Parser(argparse.ArgumentParser):
    """Options anywhere on a verb's line, as users type them (``fetch URI --version 1.0.0 DEST``).

    A verb's parser (one without sub-commands) parses intermixed: argparse's plain parse takes positionals
    greedily in runs between options, so DEST after an option would be "unrecognized". The flag keeps
    ``parse_known_intermixed_args`` (which calls back into ``parse_known_args``) from recursing.
    """

    _intermixing = False
    # checks what argparse cannot express; returns the usage error's message, may settle the namespace
    validate: Callable[[argparse.Namespace], str | None] | None = None

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._subparsers is not None or self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            namespace, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
        problem = self.validate(namespace) if self.validate else None
        if problem:
            self.error(problem)
        return namespace, extras

    def error(self, message: str) -> NoReturn:
        """A usage error is one line too, like every other failure (argparse would print the usage first); exit 2."""
        self.exit(2, f"modelship: error: {message} (see '{self.prog} --help')\n")


def _fetch_positionals(a: argparse.Namespace) -> str | None:
    """URI DEST, or DEST alone with --lock (the lock names the model): a missing DEST is named as such."""
    if a.dest is None:
        if a.lock is None or a.uri is None:
            missing = "DEST" if a.uri is not None or a.lock is not None else "URI and DEST"
            line = "modelship fetch [URI] --lock FILE DEST" if a.lock else "modelship fetch URI DEST"
            return f"missing {missing}: {line} (DEST: the folder to put the model in)"
        a.uri, a.dest = None, a.uri
    return None


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _human(n: int) -> str:
    return progress.human_bytes(n)


def _one_line(message: str, limit: int = 1000) -> str:
    """The promise is one line: fold any newline an SDK message carried, and cut a huge echo of user input."""
    message = redact(" | ".join(part.strip() for part in message.splitlines() if part.strip()))
    if len(message) > limit:
        message = f"{message[: limit - 300]} …({len(message)} characters)… {message[-250:]}"
    return message


def pinned(image: str, digest: str) -> str:
    """``REGISTRY/REPO@sha256:…`` of ``image`` (a tag, or a digest, dropped): the glossary's ``ref``."""
    name = image.split("@", 1)[0]
    repo, slash, last = name.rpartition("/")  # a registry port has a ':' too: only the last segment's is a tag
    return f"{repo}{slash}{last.split(':', 1)[0]}@{digest}"


def _lookup(data: dict[str, Any], key: str) -> Any:
    """``key`` of a ``--json`` result, dotted for a nested block (``model.version``)."""
    value: Any = data
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _pipeline_variable(spec: str) -> tuple[str, str]:
    name, eq, key = spec.partition("=")
    if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name) or not key:
        raise argparse.ArgumentTypeError(f"{spec!r} is not NAME=KEY (e.g. imageRef=ref)")
    return name, key


def _size(text: str) -> int:
    from .cache import parse_size

    try:
        return parse_size(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _emit(a: argparse.Namespace, data: dict[str, Any], human: Callable[[], None]) -> None:
    """A verb's result: ``--json`` (the glossary's keys), else the human lines; then any pipeline variables.

    ``--pipeline-variable NAME=KEY`` prints Azure Pipelines' logging command for KEY's value, as an output
    variable of the step (``$(STEP.NAME)``, ``dependencies.JOB.outputs['STEP.NAME']``) and as a variable of the
    later steps of the job (``$(NAME)``): what the templates need, so that no template parses JSON itself.
    """
    if a.json:
        _print_json(data)
    elif getattr(a, "print", None):
        print(_single(data, a.print, "--print"))  # for a shell: REF=$(modelship push IMAGE --print ref)
        return
    else:
        human()
    wanted = getattr(a, "pipeline_variable", None) or []
    values = [(name, _single(data, key, f"--pipeline-variable {name}={key}")) for name, key in wanted]
    for name, text in values:
        print(f"##vso[task.setvariable variable={name};isOutput=true]{text}")
        print(f"##vso[task.setvariable variable={name}]{text}")


def _single(data: dict[str, Any], key: str, option: str) -> str:
    """The value of one ``--json`` key as text (booleans as ``true``/``false``), or a usage error naming the keys."""
    value = _lookup(data, key)
    if value is None or isinstance(value, (dict, list)):
        keys = ", ".join(sorted(k for k, v in data.items() if v is not None and not isinstance(v, (dict, list))))
        raise UsageError(f"{option}: this result has no single value {key!r}; its keys: {keys}")
    return str(value).lower() if isinstance(value, bool) else str(value)


def _model_json(d: dict[str, Any]) -> dict[str, Any]:
    """A manifest or lock as printed by --json: its tree digest is ``model_digest`` (``image_digest`` is an image's)."""
    out = {k: v for k, v in d.items() if k != "digest"}
    out["model_digest"] = d.get("digest")
    return out


# ------------------------------------------------------------------------------------------ commands


def _login(a: argparse.Namespace) -> Any:
    """``--username`` with ``--password-stdin`` as the credential of resolve/lock/fetch/publish (registries take
    it; the other stores refuse it in one line)."""
    if a.username is None and not a.password_stdin:
        return None
    if a.username is None or not a.password_stdin:
        raise UsageError("give both --username and --password-stdin (the password on stdin), or neither")
    from .stores.base import Login

    return Login(a.username, sys.stdin.readline().rstrip("\n"))


def cmd_publish(a: argparse.Namespace) -> None:
    from ._publish import publish

    r = publish(
        a.model_dir,
        a.uri,
        version=a.version,
        force=a.force,
        workers=a.workers,
        credential=_login(a),
        image_model_dir=a.image_model_dir,
        sign_key=a.sign_key,
    )

    def human() -> None:
        files = f"{len(r.files)} files, {_human(sum(f.size for f in r.files))}"
        if r.image is None:
            print(f"published {a.model_dir} as {r.location} ({files}) {r.model_digest}")
            return
        how = "unchanged, 0 bytes uploaded" if r.unchanged else f"{_human(r.uploaded_bytes)} uploaded"
        print(f"published {a.model_dir} as {r.image} ({files}; {how}) {r.image_digest}")

    _emit(a, r.to_dict(), human)


def cmd_sign_model(a: argparse.Namespace) -> None:
    from .trust.published import sign_version

    r = sign_version(a.uri, version=a.version, sign_key=a.sign_key, force=a.force)
    data = {"uri": r.uri, "version": r.version, "signature": r.signature, "signer": r.fingerprint}
    _emit(a, data, lambda: print(f"signed {r.uri} version {r.version}: {r.signature} (key {r.fingerprint})"))


def cmd_resolve(a: argparse.Namespace) -> None:
    from ._resolve import resolve

    res = resolve(a.uri, version=a.version, pre=a.pre, credential=_login(a), verify_keys=a.verify_key)
    known = all(f.sha256 for f in res.files)
    digest = tree_digest((f.path, f.sha256) for f in res.files) if known else None  # type: ignore[misc]
    # the model block as inspect and build print it; model_digest is null when the store has no sha256s
    data = {**res.to_dict(), "model": {"uri": res.uri, "version": res.version, "model_digest": digest}}

    def human() -> None:
        print(f"{res.uri} version {res.version or '(unversioned)'}: {len(res.files)} files, {_human(res.size)}")
        for f in res.files:
            print(f"  {f.path}  {f.size}  etag={f.etag or '-'}  sha256={f.sha256 or '-'}")

    _emit(a, data, human)


def cmd_lock(a: argparse.Namespace) -> None:
    from ._resolve import lock

    lk = lock(a.uri, version=a.version, pre=a.pre, output=a.output, credential=_login(a), verify_keys=a.verify_key)
    data = _model_json(lk.to_dict())
    if lk.pin:  # a version that is an image (oci://): the image, pinned, is what deploy mounts
        data["ref"] = pinned(lk.uri.split("://", 1)[-1], lk.pin)

    def human() -> None:
        version = lk.version or "(unversioned)"
        print(f"locked {lk.uri} version {version} ({len(lk.files)} files) {lk.digest} → {a.output}")

    _emit(a, data, human)


def cmd_fetch(a: argparse.Namespace) -> None:
    from ._fetch import fetch

    r = fetch(
        a.uri,
        a.dest,
        version=a.version,
        lock=a.lock,
        pre=a.pre,
        workers=a.workers,
        credential=_login(a),
        verify_keys=a.verify_key,
    )
    m = r.manifest
    data = {
        **_model_json(m.to_dict()),
        "dest": str(r.dest),
        "downloaded_files": r.downloaded_files,
        "downloaded_bytes": r.downloaded_bytes,
        "cached_files": r.cached_files,
        "unchanged": r.unchanged,
    }

    def human() -> None:
        how = (
            "unchanged"
            if r.unchanged
            else f"{r.downloaded_files} downloaded ({_human(r.downloaded_bytes)}), {r.cached_files} from cache"
        )
        version = m.version or "(unversioned)"
        print(f"fetched {m.uri} version {version} → {r.dest} ({len(m.files)} files; {how}) {m.digest}")

    _emit(a, data, human)


def cmd_build(a: argparse.Namespace) -> None:
    from .image import build
    from .image import labels as image_labels
    from .image._inspect import model_block

    img = build(
        a.app_dir,
        a.model,
        a.tag,
        base_image=a.base_image,
        requirements=a.requirements,
        dockerfile=a.dockerfile,
        entrypoint=a.entrypoint,
        port=a.port,
        ready_path=a.ready_path,
        live_path=a.live_path,
        tag_model_version=a.tag_model_version,
        pull=a.pull,
        quiet=a.quiet or a.json,
    )
    # "id" is the engine's image id; the registry's image_digest (and so a ref) exists only once pushed
    data = {
        "id": img.id,
        "tags": list(img.tags),
        "labels": img.labels,
        "model": model_block(img.labels),
        "app": image_labels.app_settings(img.labels),
    }

    def human() -> None:
        if a.model is None:
            image_model_dir = img.labels.get(MODEL_DIR_LABEL) or "its MODELSHIP_MODEL_DIR"
            print(
                f"built {', '.join(img.tags)} ({img.id[:19]}) app-only: "
                f"'modelship assemble' puts a model at {image_model_dir}"
            )
        else:
            version = img.labels.get(MODEL_VERSION_LABEL) or "(unversioned)"
            print(
                f"built {', '.join(img.tags)} ({img.id[:19]}) with model {img.labels.get(MODEL_URI_LABEL)} "
                f"version {version} {img.labels.get(MODEL_DIGEST_LABEL)}"
            )

    _emit(a, data, human)


def cmd_push(a: argparse.Namespace) -> None:
    from .image import push

    digest = push(a.image, username=a.username, password=_registry_password(a), quiet=a.quiet or a.json)
    data = {"image": a.image, "ref": pinned(a.image, digest), "image_digest": digest}
    _emit(a, data, lambda: print(f"pushed {a.image} {digest}"))


def cmd_inspect(a: argparse.Namespace) -> None:
    from .image import inspect

    info = inspect(a.image, platform=a.platform)
    digest = info.get("image_digest")
    data = {**info, "image": a.image, "ref": pinned(a.image, digest) if digest else None}

    def human() -> None:
        model = data.get("model") or {}
        where = data.get("source", "?")
        if data.get("platforms"):  # an index: say which of its images was read
            where += f", {data['platform']} of {', '.join(data['platforms'])}; --platform picks another"
        print(f"{data['ref'] or a.image} ({where})")
        print(
            f"  model: {model.get('uri') or '-'} version {model.get('version') or '-'} "
            f"{model.get('model_digest') or '-'}"
        )
        for k, v in sorted((data.get("labels") or {}).items()):
            if k != MODEL_MANIFEST_LABEL:
                print(f"  {k}={v}")

    _emit(a, data, human)


def _registry_password(a: argparse.Namespace) -> str | None:
    """The password ``--password-stdin`` reads (the library checks it comes with a ``--username``)."""
    return sys.stdin.readline().rstrip("\n") if a.password_stdin else None


def cmd_assemble(a: argparse.Namespace) -> None:
    from .oci._assemble import assemble

    password = _registry_password(a)
    r = assemble(a.app_image, a.model, a.tag, platform=a.platform, username=a.username, password=password, quiet=a.json)
    d = r.to_dict()
    data = {
        **{k: v for k, v in d.items() if k not in ("ref", "pinned", "digest", "base")},
        "image": d["ref"],
        "ref": d["pinned"],
        "image_digest": d["digest"],
        "app_ref": d["base"],
        "model": {k: v for k, v in d["model"].items() if k != "digest"} | {"model_digest": d["model"].get("digest")},
    }

    def human() -> None:
        how = "unchanged, 0 bytes uploaded" if r.unchanged else f"{_human(r.uploaded_bytes)} uploaded"
        model = r.model.get("version") or "(unversioned)"
        print(f"assembled {data['image']} {data['image_digest']} ({how}; app {data['app_ref']}, model {model})")

    _emit(a, data, human)


def cmd_promote(a: argparse.Namespace) -> None:
    from .oci._promote import promote

    r = promote(a.ref, a.tag, username=a.username, password=_registry_password(a))
    data = r.to_dict()

    def human() -> None:
        for t in r.tags:
            print(f"promoted {t} -> {r.image_digest}")

    _emit(a, data, human)


def cmd_cache_prune(a: argparse.Namespace) -> None:
    from .cache import prune

    r = prune(keep_days=a.keep_days, max_size=a.max_size, dry_run=a.dry_run)
    data = {"removed": r.removed, "freed": r.freed, "kept": r.kept, "kept_bytes": r.kept_bytes, "cache": str(r.root)}
    how = "would remove" if r.dry_run else "removed"
    line = f"{how} {r.removed} cache entries ({_human(r.freed)}); {r.kept} ({_human(r.kept_bytes)}) kept in {r.root}"
    _emit(a, data, lambda: print(line))


def cmd_probes_record(a: argparse.Namespace) -> None:
    from .probes import record_file

    r = record_file(a.source, a.out)
    data = {"probes": len(r.probes), "skipped": r.skipped, "dropped_headers": sorted(r.dropped_headers), "out": a.out}
    dropped = f"; secret headers dropped: {', '.join(sorted(r.dropped_headers))}" if r.dropped_headers else ""
    line = f"recorded {len(r.probes)} probes to {a.out} ({r.skipped} other lines skipped{dropped})"
    _emit(a, data, lambda: print(line, file=sys.stderr))


def cmd_verify(a: argparse.Namespace) -> None:
    from ._verify import verify

    r = verify(a.target, allow_extra=a.allow_extra)

    def human() -> None:
        if r.ok:
            print(f"verified {r.target}: {r.files} files, {_human(r.size)}, model_digest {r.model_digest}")

    _emit(a, r.to_dict(), human)
    if not r.ok:
        raise ModelshipError(r.problem() or "")


def cmd_deploy_render(a: argparse.Namespace) -> None:
    from .deploy import render

    paths = render(
        a.image,
        a.out,
        name=a.name,
        replicas=a.replicas,
        template_dir=a.template_dir,
        port=a.port,
        ready_path=a.ready_path,
        live_path=a.live_path,
        model_image=a.model_image,
        mount=a.mount,
        image_model_dir=a.image_model_dir,
        on_note=lambda note: print(f"modelship: note: {note}", file=sys.stderr),
    )
    for p in paths:
        print(p)


# ------------------------------------------------------------------------------------------ parser


def _hidden_alias(sp: argparse.ArgumentParser, old: str, dest: str) -> None:
    """An option's spelling before the glossary (docs/architecture.md): still taken for one release, not listed."""
    sp.add_argument(old, dest=dest, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by tests to check command lines in the pipeline templates)."""
    p = _Parser(prog="modelship", description="Ship the latest model inside your app's image, verified.")
    p.add_argument("--version", action="version", version=f"modelship {__version__}")
    # -v and --no-progress work before and after the verb; SUPPRESS keeps the subcommand's default from
    # overwriting a value given before the verb.
    for parser, default in ((p, None), (common := _Parser(add_help=False), argparse.SUPPRESS)):
        parser.add_argument(
            "-v", "--verbose", action="count", default=default or 0, help="more log output (-vv for debug)"
        )
        parser.add_argument(
            "--no-progress", action="store_true", default=default or False, help="no progress bars (off when not a TTY)"
        )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], None], help: str, json_opt: bool = True
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, parents=[common])
        sp.set_defaults(func=fn)
        if json_opt:
            out = sp.add_mutually_exclusive_group()
            out.add_argument("--json", action="store_true", help="machine-readable output on stdout")
            out.add_argument(
                "--print",
                metavar="KEY",
                help="print only the value of this --json key (e.g. ref: REF=$(modelship push IMAGE --print ref))",
            )
            out.add_argument(
                "--pipeline-variable",
                action="append",
                type=_pipeline_variable,
                metavar="NAME=KEY",
                help="also set Azure Pipelines variable NAME to the --json key KEY (repeatable; e.g. imageRef=ref)",
            )
        return sp

    def registry_login(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--username", "-u", help="registry user (default: the docker config, or ACR via Entra ID)")
        sp.add_argument("--password-stdin", action="store_true", help="read the registry password from stdin")

    sp = add("publish", cmd_publish, "upload a model folder as a new version")
    sp.add_argument("model_dir", metavar="DIR", help="the model folder to upload")
    sp.add_argument("uri", metavar="URI", help="where: az://, s3://, file:// or a path, oci://REGISTRY/REPO")
    sp.add_argument("--version", required=True, dest="version", help="the version to create, e.g. 1.2.0")
    sp.add_argument("--force", action="store_true", help="replace the version if it exists")
    sp.add_argument(
        "--sign-key",
        metavar="KEY.pem",
        help="sign the version with this PEM EC private key (openssl ecparam -name prime256v1): model.sig beside it",
    )
    sp.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="files uploaded at once (default: $MODELSHIP_CONCURRENCY, else 16 for small files, 4 for large ones)",
    )
    sp.add_argument(
        "--image-model-dir",
        metavar="PATH",
        help="oci:// only: the model's folder in the image (default /opt/modelship/model)",
    )
    _hidden_alias(sp, "--image-dir", "image_model_dir")
    registry_login(sp)

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--version", dest="version", help="pin this version instead of the latest")
        sp.add_argument("--pre", action="store_true", help="let 'latest' be a pre-release")

    def verify_key(sp: argparse.ArgumentParser, what: str) -> None:
        sp.add_argument(
            "--verify-key",
            action="append",
            metavar="PUB.pem",
            help=f"{what}: a PEM EC public key (repeatable; default: $MODELSHIP_VERIFY_KEYS, a path list)",
        )

    sp = add("sign-model", cmd_sign_model, "sign a published model version (OpenSSF model signing): model.sig")
    sp.add_argument("uri", metavar="URI", help="the model: az://, s3://, file:// or a path")
    sp.add_argument("--version", required=True, dest="version", help="the published version to sign")
    sp.add_argument("--sign-key", required=True, metavar="KEY.pem", help="PEM EC private key (openssl ecparam)")
    sp.add_argument("--force", action="store_true", help="replace the version's existing signature")

    sp = add("resolve", cmd_resolve, "show which model version 'latest' (or --version) is")
    sp.add_argument("uri", metavar="URI", help="the model: az://, https://, s3://, file:// or a path, oci://")
    model_args(sp)
    verify_key(sp, "refuse a version not signed by one of these keys")
    registry_login(sp)

    sp = add("lock", cmd_lock, "pin the resolved version and its sha256s in a lock file")
    sp.add_argument("uri", metavar="URI", help="the model: az://, https://, s3://, file:// or a path, oci://")
    model_args(sp)
    verify_key(sp, "lock only a version signed by one of these keys")
    registry_login(sp)
    sp.add_argument("-o", "--output", default="modelship.lock", help="lock file to write (default modelship.lock)")

    sp = add("fetch", cmd_fetch, "download a model verified, cached and atomically")
    sp.usage = "%(prog)s [options] URI DEST\n       %(prog)s [options] [URI] --lock FILE DEST"
    sp.add_argument("uri", metavar="URI", nargs="?", help="model URI (optional with --lock)")
    # optional for argparse only: a missing DEST gets its own message (_fetch_positionals), not argparse's
    sp.add_argument("dest", metavar="DEST", nargs="?", help="folder to put the model in")
    sp.validate = _fetch_positionals
    model_args(sp)
    sp.add_argument("--lock", metavar="FILE", help="fetch exactly what this lock file pins")
    verify_key(sp, "install only a version signed by one of these keys; DEST gets the signature as model.sig")
    registry_login(sp)
    sp.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="parallel connections (default: $MODELSHIP_CONCURRENCY, else as many as the link rewards)",
    )

    sp = add("build", cmd_build, "build an image of the app (and the model, with --model), with provenance labels")
    sp.add_argument("app_dir", metavar="APP_DIR", help="the app's folder (its requirements, [tool.modelship])")
    sp.add_argument(
        "--model",
        metavar="DIR",
        help="model folder (as written by 'modelship fetch'); without it an app-only image for 'modelship assemble'",
    )
    sp.add_argument("--tag", "-t", required=True, action="append", metavar="IMAGE", help="image tag (repeatable)")
    sp.add_argument(
        "--base-image", help="base image (default: [tool.modelship], $MODELSHIP_BASE_IMAGE, python:3.11-slim)"
    )
    sp.add_argument("--requirements", metavar="FILE", help="requirements file (default APP_DIR/requirements.txt)")
    sp.add_argument("--dockerfile", metavar="FILE", help="your own Dockerfile instead of the generated one")
    sp.add_argument("--entrypoint", metavar="CMD", help='command to run, e.g. "gunicorn -b 0.0.0.0:8000 app:app"')
    sp.add_argument("--port", type=int, help="port the app listens on (default 8000)")
    sp.add_argument(
        "--ready-path", help="readiness path, for the HEALTHCHECK and deploy render (default /health/ready)"
    )
    sp.add_argument("--live-path", help="liveness path, for deploy render's probes (default /health/live)")
    sp.add_argument("--tag-model-version", action="store_true", help="also tag IMAGE:<tag>-model-<version>")
    sp.add_argument(
        "--pull", action="store_true", help="pull the base image even when the engine has it (default: only if missing)"
    )
    sp.add_argument("--quiet", "-q", action="store_true", help="no build log")

    sp = add("push", cmd_push, "push an image to its registry and print the digest")
    sp.add_argument("image", metavar="IMAGE", help="REGISTRY/REPO:TAG, as built")
    sp.add_argument("--username", "-u")
    sp.add_argument("--password-stdin", action="store_true", help="read the registry password from stdin")
    sp.add_argument("--quiet", "-q", action="store_true", help="no push progress")

    sp = add("inspect", cmd_inspect, "show an image's model and provenance labels (local or in a registry)")
    sp.add_argument("image", metavar="IMAGE", help="a local image, or REGISTRY/REPO:TAG or @sha256:… in a registry")
    sp.add_argument(
        "--platform", metavar="OS/ARCH", help="of a multi-platform image, this platform's (default: this machine's)"
    )

    sp = add("assemble", cmd_assemble, "append a model's layers to an app image in its registry (no Docker engine)")
    sp.add_argument("app_image", metavar="APP_IMAGE", help="the app image in a registry (tag or @sha256 digest)")
    sp.add_argument("--model", required=True, metavar="DIR", help="model folder (as written by 'modelship fetch')")
    sp.add_argument("--tag", "-t", required=True, metavar="REF", help="REGISTRY/REPO:TAG to write")
    sp.add_argument("--platform", metavar="OS/ARCH", help="only this platform of a multi-platform APP_IMAGE")
    registry_login(sp)

    sp = add("promote", cmd_promote, "tag a tested digest (manifest PUT only) and verify the tags")
    sp.add_argument("ref", metavar="REF@DIGEST", help="the tested image, REGISTRY/REPO@sha256:…")
    sp.add_argument(
        "--tag", "-t", required=True, action="append", metavar="TAG", help="tag to point at it (repeatable)"
    )
    registry_login(sp)

    sp = add("verify", cmd_verify, "check a model folder against its modelship.json (sizes, sha256s, nothing else)")
    sp.add_argument("target", metavar="DIR", help="a folder written by 'modelship fetch'")
    sp.add_argument("--allow-extra", action="store_true", help="accept files its modelship.json does not list")

    cp = sub.add_parser("cache", help="the local download cache")
    csub = cp.add_subparsers(dest="cache_command", required=True, metavar="COMMAND")
    sp = csub.add_parser(
        "prune", help="remove cache entries not used lately (model folders keep their files)", parents=[common]
    )
    sp.set_defaults(func=cmd_cache_prune)
    sp.add_argument("--keep-days", type=float, metavar="DAYS", help="remove entries not used for this many days")
    sp.add_argument(
        "--max-size", type=_size, metavar="SIZE", help="then remove the least recently used until the rest fit (20G)"
    )
    sp.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    pp = sub.add_parser("probes", help="request captures for the pytest plugin's gate")
    psub = pp.add_subparsers(dest="probes_command", required=True, metavar="COMMAND")
    sp = psub.add_parser(
        "record", help="access-log or JSON-lines captures -> a probes file (secret headers dropped)", parents=[common]
    )
    sp.set_defaults(func=cmd_probes_record)
    sp.add_argument("--from", dest="source", required=True, metavar="LOGFILE", help="the capture, or - for stdin")
    sp.add_argument(
        "--out", required=True, metavar="FILE", help="the probes file to write (JSON lines; must not exist)"
    )
    sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    dp = sub.add_parser("deploy", help="Kubernetes deployment helpers")
    dsub = dp.add_subparsers(dest="deploy_command", required=True, metavar="COMMAND")
    sp = dsub.add_parser("render", help="write Kubernetes manifests pinned to an image digest", parents=[common])
    sp.set_defaults(func=cmd_deploy_render)
    sp.add_argument("--image", required=True, metavar="REPO@sha256:DIGEST")
    sp.add_argument("--out", required=True, metavar="DIR")
    sp.add_argument("--name", default="modelship-app")
    sp.add_argument("--replicas", type=int, default=2)
    sp.add_argument("--template-dir", metavar="DIR", help="your own manifest templates (default: the built-in ones)")
    sp.add_argument("--port", type=int, help="containerPort and PORT (default: the image's io.modelship.app.port)")
    sp.add_argument("--ready-path", help="readiness probe path (default: the image's io.modelship.app.ready-path)")
    sp.add_argument("--live-path", help="startup/liveness probe path (default: the image's io.modelship.app.live-path)")
    sp.add_argument(
        "--model-image", metavar="MODEL@sha256:DIGEST", help="mount this model image at the app's model dir"
    )
    sp.add_argument(
        "--mount", choices=("image-volume", "init-container", "kserve"), default="image-volume",
        help="how the model image reaches the app (default image-volume: Kubernetes >= 1.33)",
    )  # fmt: skip
    sp.add_argument(
        "--image-model-dir",
        metavar="PATH",
        help="the model's folder in the app image (default: its io.modelship.model.dir label)",
    )
    _hidden_alias(sp, "--model-dir", "image_model_dir")
    return p


def _left_behind(e: BaseException) -> str:
    """What an interrupted command left, as the API noted it on the interrupt (a publish's incomplete version)."""
    notes = [n for n in getattr(e, "__notes__", ()) if isinstance(n, str)]
    return "; ".join(notes) or "nothing half-written was left behind"


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a usage error (2), --help or --version (0): already printed
        return e.code if isinstance(e.code, int) else 2
    verbose = getattr(args, "verbose", 0)
    with logs.cli_logging(verbose):
        return _run(args, verbose)


def _run(args: argparse.Namespace, verbose: int) -> int:
    if getattr(args, "no_progress", False) or getattr(args, "json", False):
        progress.set_enabled(False)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        settings.current()  # a malformed MODELSHIP_* variable is refused (exit 2) before anything starts
        args.func(args)
    except ModelshipError as e:
        if verbose >= 2:
            print(redact(traceback.format_exc()), file=sys.stderr, end="")
        print(f"modelship: error: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print(f"modelship: interrupted; {_left_behind(e)}", file=sys.stderr)
        return 130
    except Terminated as e:
        print(f"modelship: terminated; {_left_behind(e)}", file=sys.stderr)
        return 143
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, no secrets
        if verbose:
            print(redact(traceback.format_exc()), file=sys.stderr)
        print(
            f"modelship: error: unexpected {e.__class__.__name__}: {_one_line(str(e))} (run with -v for details)",
            file=sys.stderr,
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
