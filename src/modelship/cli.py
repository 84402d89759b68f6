"""The `modelship` command: thin; parses arguments, calls the public API, maps errors to exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__, logs, progress
from .errors import ModelshipError
from .uri import redact

log = logging.getLogger("modelship")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so cleanup runs like on Ctrl-C."""


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


# ------------------------------------------------------------------------------------------ commands


def cmd_publish(a: argparse.Namespace) -> None:
    from .publish import publish

    m = publish(a.model_dir, a.uri, version=a.version, force=a.force)
    if a.json:
        _print_json(m.to_dict())
    else:
        size = sum(f.size for f in m.files)
        where = f"{m.uri.rstrip('/')}/{m.version}"
        print(f"published {a.model_dir} as {where} ({len(m.files)} files, {_human(size)}) {m.digest}")


def cmd_resolve(a: argparse.Namespace) -> None:
    from .fetch import resolve

    res = resolve(a.uri, version=a.version, pre=a.pre)
    if a.json:
        _print_json(res.to_dict())
        return
    print(f"{res.uri} version {res.version or '(unversioned)'}: {len(res.files)} files, {_human(res.size)}")
    for f in res.files:
        print(f"  {f.path}  {f.size}  etag={f.etag or '-'}  sha256={f.sha256 or '-'}")


def cmd_lock(a: argparse.Namespace) -> None:
    from .fetch import lock

    lk = lock(a.uri, version=a.version, pre=a.pre, output=a.output)
    if a.json:
        _print_json(lk.to_dict())
    else:
        print(
            f"locked {lk.uri} version {lk.version or '(unversioned)'} ({len(lk.files)} files) {lk.digest} → {a.output}"
        )


def cmd_fetch(a: argparse.Namespace) -> None:
    from .fetch import fetch

    r = fetch(a.uri, a.dest, version=a.version, lock=a.lock, pre=a.pre, workers=a.workers)
    if a.json:
        _print_json(
            {
                **r.manifest.to_dict(),
                "dest": str(r.dest),
                "downloaded_files": r.downloaded_files,
                "downloaded_bytes": r.downloaded_bytes,
                "cached_files": r.cached_files,
                "unchanged": r.unchanged,
            }
        )
        return
    m = r.manifest
    how = (
        "unchanged"
        if r.unchanged
        else f"{r.downloaded_files} downloaded ({_human(r.downloaded_bytes)}), {r.cached_files} from cache"
    )
    print(f"fetched {m.uri} version {m.version or '(unversioned)'} → {r.dest} ({len(m.files)} files; {how}) {m.digest}")


def cmd_build(a: argparse.Namespace) -> None:
    from .build import build

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
        tag_model_version=a.tag_model_version,
        pull=a.pull,
        quiet=a.quiet or a.json,
    )
    if a.json:
        _print_json({"id": img.id, "tags": list(img.tags), "labels": img.labels})
    else:
        print(
            f"built {', '.join(img.tags)} ({img.id[:19]}) with model "
            f"{img.labels.get('io.modelship.model.version', '?')} {img.labels.get('io.modelship.model.digest', '')}"
        )


def cmd_push(a: argparse.Namespace) -> None:
    from .build import push

    password = sys.stdin.readline().rstrip("\n") if a.password_stdin else None
    digest = push(a.image, username=a.username, password=password, quiet=a.quiet or a.json)
    if a.json:
        _print_json({"image": a.image, "digest": digest})
    else:
        print(f"pushed {a.image} {digest}")


def cmd_inspect(a: argparse.Namespace) -> None:
    from .build import inspect

    info = inspect(a.image)
    if a.json:
        _print_json(info)
        return
    model = info.get("model") or {}
    print(f"{info.get('ref', a.image)} ({info.get('source', '?')})")
    print(f"  model: {model.get('uri') or '-'} version {model.get('version') or '-'} {model.get('digest') or '-'}")
    for k, v in sorted((info.get("labels") or {}).items()):
        if k != "io.modelship.model.manifest":
            print(f"  {k}={v}")


def cmd_deploy_render(a: argparse.Namespace) -> None:
    from .deploy import render

    paths = render(a.image, a.out, name=a.name, replicas=a.replicas, template_dir=a.template_dir)
    for p in paths:
        print(p)


# ------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by tests to check command lines in the pipeline templates)."""
    p = argparse.ArgumentParser(
        prog="modelship", description="Ship the latest model inside your app's image, verified."
    )
    p.add_argument("--version", action="version", version=f"modelship {__version__}")
    # -v and --no-progress work before and after the verb; SUPPRESS keeps the subcommand's default from
    # overwriting a value given before the verb.
    for parser, default in ((p, None), (common := argparse.ArgumentParser(add_help=False), argparse.SUPPRESS)):
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
            sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        return sp

    sp = add("publish", cmd_publish, "upload a model folder as a new version")
    sp.add_argument("model_dir", metavar="DIR")
    sp.add_argument("uri", metavar="URI")
    sp.add_argument("--version", required=True, dest="version", help="the version to create, e.g. 1.2.0")
    sp.add_argument("--force", action="store_true", help="replace the version if it exists")

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--version", dest="version", help="pin this version instead of the latest")
        sp.add_argument("--pre", action="store_true", help="let 'latest' be a pre-release")

    sp = add("resolve", cmd_resolve, "show which model version 'latest' (or --version) is")
    sp.add_argument("uri", metavar="URI")
    model_args(sp)

    sp = add("lock", cmd_lock, "pin the resolved version and its sha256s in a lock file")
    sp.add_argument("uri", metavar="URI")
    model_args(sp)
    sp.add_argument("-o", "--output", default="modelship.lock", help="lock file to write (default modelship.lock)")

    sp = add("fetch", cmd_fetch, "download a model verified, cached and atomically")
    sp.add_argument("uri", metavar="URI", nargs="?", help="model URI (optional with --lock)")
    sp.add_argument("dest", metavar="DEST")
    model_args(sp)
    sp.add_argument("--lock", metavar="FILE", help="fetch exactly what this lock file pins")
    sp.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="parallel connections (default: $MODELSHIP_CONCURRENCY, else as many as the link rewards)",
    )

    sp = add("build", cmd_build, "build an image holding the app and the model, with provenance labels")
    sp.add_argument("app_dir", metavar="APP_DIR")
    sp.add_argument("--model", required=True, metavar="DIR", help="model folder (as written by 'modelship fetch')")
    sp.add_argument("--tag", "-t", required=True, action="append", metavar="IMAGE", help="image tag (repeatable)")
    sp.add_argument(
        "--base-image", help="base image (default: [tool.modelship], $MODELSHIP_BASE_IMAGE, python:3.11-slim)"
    )
    sp.add_argument("--requirements", metavar="FILE", help="requirements file (default APP_DIR/requirements.txt)")
    sp.add_argument("--dockerfile", metavar="FILE", help="your own Dockerfile instead of the generated one")
    sp.add_argument("--entrypoint", metavar="CMD", help='command to run, e.g. "gunicorn -b 0.0.0.0:8000 app:app"')
    sp.add_argument("--port", type=int, help="port the app listens on (default 8000)")
    sp.add_argument("--ready-path", help="readiness path for the HEALTHCHECK (default /health/ready)")
    sp.add_argument("--tag-model-version", action="store_true", help="also tag IMAGE:<tag>-model-<version>")
    sp.add_argument("--pull", action="store_true", help="pull the base image first (default: use the local one)")
    sp.add_argument("--quiet", "-q", action="store_true", help="no build log")

    sp = add("push", cmd_push, "push an image to its registry and print the digest")
    sp.add_argument("image", metavar="IMAGE")
    sp.add_argument("--username", "-u")
    sp.add_argument("--password-stdin", action="store_true", help="read the registry password from stdin")
    sp.add_argument("--quiet", "-q", action="store_true", help="no push progress")

    sp = add("inspect", cmd_inspect, "show an image's model and provenance labels (local or in a registry)")
    sp.add_argument("image", metavar="IMAGE")

    dp = sub.add_parser("deploy", help="Kubernetes deployment helpers")
    dsub = dp.add_subparsers(dest="deploy_command", required=True, metavar="COMMAND")
    sp = dsub.add_parser("render", help="write Kubernetes manifests pinned to an image digest", parents=[common])
    sp.set_defaults(func=cmd_deploy_render)
    sp.add_argument("--image", required=True, metavar="REPO@sha256:DIGEST")
    sp.add_argument("--out", required=True, metavar="DIR")
    sp.add_argument("--name", default="modelship-app")
    sp.add_argument("--replicas", type=int, default=2)
    sp.add_argument("--template-dir", metavar="DIR", help="your own manifest templates (default: the built-in ones)")
    return p


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", 0)
    logs.configure(verbose)
    if getattr(args, "no_progress", False) or getattr(args, "json", False):
        progress.set_enabled(False)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args.func(args)
    except ModelshipError as e:
        if verbose >= 2:
            print(redact(traceback.format_exc()), file=sys.stderr, end="")
        print(f"modelship: error: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("modelship: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except Terminated:
        print("modelship: terminated; nothing half-written was left behind", file=sys.stderr)
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
