"""The `modelship` command line: the parser of every verb and its options (docs/cli.md is generated from it)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import NoReturn

from . import __version__
from ._cli_verbs import (
    cmd_assemble,
    cmd_attest,
    cmd_build,
    cmd_cache_prune,
    cmd_copy,
    cmd_deploy_render,
    cmd_fetch,
    cmd_inspect,
    cmd_lock,
    cmd_ls,
    cmd_probes_record,
    cmd_promote,
    cmd_publish,
    cmd_push,
    cmd_resolve,
    cmd_sign,
    cmd_sign_model,
    cmd_verify,
)
from .errors import UsageError


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


def _hidden_alias(sp: argparse.ArgumentParser, old: str, dest: str) -> None:
    """An option's spelling before the glossary (docs/architecture.md): still taken for one release, not listed."""
    sp.add_argument(old, dest=dest, help=argparse.SUPPRESS)


# a signing verb's private key (modelship.trust.oms.load_private_key reads both)
_PRIVATE_KEY_HELP = (
    "PEM EC P-256 private key (openssl ecparam), or cosign.key (cosign generate-key-pair) with $COSIGN_PASSWORD"
)
# a verb's output (_cli_output): --json, or one of its keys
_PRINT_HELP = "print only the value of this --json key (e.g. ref: REF=$(modelship push IMAGE --print ref))"
_VARIABLE_HELP = "also set Azure Pipelines variable NAME to the --json key KEY (repeatable; e.g. imageRef=ref)"


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
            out.add_argument("--print", metavar="KEY", help=_PRINT_HELP)
            out.add_argument(
                "--pipeline-variable", action="append", type=_pipeline_variable, metavar="NAME=KEY", help=_VARIABLE_HELP
            )
        return sp

    def add_under(
        group: str, group_help: str, name: str, fn: Callable[[argparse.Namespace], None], help: str
    ) -> argparse.ArgumentParser:
        """``modelship GROUP NAME``: the one verb of a group (cache prune, probes record, deploy render)."""
        gp = sub.add_parser(group, help=group_help)
        gsub = gp.add_subparsers(dest=f"{group}_command", required=True, metavar="COMMAND")
        sp = gsub.add_parser(name, help=help, parents=[common])
        sp.set_defaults(func=fn)
        return sp

    def registry_login(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--username", "-u", help="registry user (default: the docker config, or ACR via Entra ID)")
        sp.add_argument("--password-stdin", action="store_true", help="read the registry password from stdin")

    def sign_cert(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--sign-cert",
            metavar="CERT.pem",
            help="the PEM certificate of --sign-key: the signature carries it (model_signing sign certificate)",
        )
        sp.add_argument(
            "--cert-chain",
            action="append",
            default=[],
            metavar="CHAIN.pem",
            help="PEM certificates between --sign-cert and the root, carried too (repeatable)",
        )

    def allow_pickle(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--allow-unsafe-pickle",
            action="append",
            default=[],
            metavar="FILE",
            help="let this reviewed model file through although its pickle imports code it would run (repeatable)",
        )

    sp = add("publish", cmd_publish, "upload a model folder as a new version")
    sp.add_argument("model_dir", metavar="DIR", help="the model folder to upload")
    sp.add_argument("uri", metavar="URI", help="where: az://, s3://, file:// or a path, oci://REGISTRY/REPO")
    sp.add_argument("--version", required=True, dest="version", help="the version to create, e.g. 1.2.0")
    sp.add_argument("--force", action="store_true", help="replace the version if it exists")
    sp.add_argument(
        "--sign-key",
        metavar="KEY.pem",
        help="sign the version with this PEM EC private key (openssl ecparam -name prime256v1, or cosign.key with "
        "$COSIGN_PASSWORD): model.sig beside it "
        "(oci://: a layer of the model image; the image signed at its sha256-<hex>.sig tag, its provenance and "
        "ML-BOM attested at its .att tag)",
    )
    sign_cert(sp)
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
    allow_pickle(sp)
    registry_login(sp)

    def image_sign_key(sp: argparse.ArgumentParser, when: str, also: str = "") -> None:
        sp.add_argument(
            "--sign-key",
            metavar="KEY.pem",
            help=f"sign the image's digest in cosign's format with this PEM EC P-256 private key (or cosign.key with "
            f"$COSIGN_PASSWORD), {when} "
            f"(a signature at its sha256-<hex>.sig tag; 'modelship verify REF@DIGEST --key PUB.pem' checks it){also}",
        )

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--version", dest="version", help="pin this version instead of the latest")
        sp.add_argument("--pre", action="store_true", help="let 'latest' be a pre-release")

    def verify_key(sp: argparse.ArgumentParser, what: str, cert_chain: bool = False) -> None:
        sp.add_argument(
            "--verify-key",
            action="append",
            metavar="PUB.pem",
            help=f"{what}: a PEM EC public key (repeatable; default: $MODELSHIP_VERIFY_KEYS, a path list)",
        )
        if not cert_chain:  # build/assemble/the plugin take MODELSHIP_VERIFY_CERT_CHAINS only (docs/trust.md)
            return
        sp.add_argument(
            "--verify-cert-chain",
            action="append",
            metavar="ROOT.pem",
            help="also accept a signature whose certificate chains to these PEM root certificates "
            "(repeatable; default: $MODELSHIP_VERIFY_CERT_CHAINS)",
        )

    sp = add("sign-model", cmd_sign_model, "sign a published model version (OpenSSF model signing): model.sig")
    sp.add_argument("uri", metavar="URI", help="the model: az://, s3://, file:// or a path, oci://REGISTRY/REPO")
    sp.add_argument("--version", required=True, dest="version", help="the published version to sign")
    sp.add_argument("--sign-key", required=True, metavar="KEY.pem", help=_PRIVATE_KEY_HELP)
    sign_cert(sp)
    sp.add_argument("--force", action="store_true", help="replace the version's existing signature")

    sp = add("resolve", cmd_resolve, "show which model version 'latest' (or --version) is")
    sp.add_argument("uri", metavar="URI", help="the model: az://, https://, s3://, file:// or a path, oci://")
    model_args(sp)
    verify_key(sp, "refuse a version not signed by one of these keys", cert_chain=True)
    registry_login(sp)

    sp = add("lock", cmd_lock, "pin the resolved version and its sha256s in a lock file")
    sp.add_argument("uri", metavar="URI", help="the model: az://, https://, s3://, file:// or a path, oci://")
    model_args(sp)
    verify_key(sp, "lock only a version signed by one of these keys", cert_chain=True)
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
    verify_key(
        sp, "install only a version signed by one of these keys; DEST gets the signature as model.sig", cert_chain=True
    )
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
    sp.add_argument(
        "--builder",
        choices=("engine", "registry"),
        default="engine",
        help="engine (default): the Docker engine builds, 'modelship push' sends it; registry: no engine, the "
        "image is written to the registry of --tag from the base image in its registry (prints its ref)",
    )
    sp.add_argument(
        "--platform",
        action="append",
        metavar="OS/ARCH",
        help="--builder registry: this platform of a multi-platform base (repeatable; default: this machine's)",
    )
    sp.add_argument("--quiet", "-q", action="store_true", help="no build log")
    allow_pickle(sp)
    verify_key(sp, "build only a --model whose model.sig is signed by one of these keys")
    registry_login(sp)

    sp = add("push", cmd_push, "push an image to its registry and print the digest")
    sp.add_argument("image", metavar="IMAGE", help="REGISTRY/REPO:TAG, as built")
    sp.add_argument("--username", "-u")
    sp.add_argument("--password-stdin", action="store_true", help="read the registry password from stdin")
    sp.add_argument("--quiet", "-q", action="store_true", help="no push progress")
    image_sign_key(sp, "once pushed")

    sp = add("inspect", cmd_inspect, "show an image's model and provenance labels (local or in a registry)")
    sp.add_argument("image", metavar="IMAGE", help="a local image, or REGISTRY/REPO:TAG or @sha256:… in a registry")
    sp.add_argument(
        "--platform", metavar="OS/ARCH", help="of a multi-platform image, this platform's (default: this machine's)"
    )
    sp.add_argument(
        "--missing-ok",
        action="store_true",
        help="an image that does not exist is no error: one line on stderr, nothing (--json: null) on stdout, exit 0",
    )

    sp = add("assemble", cmd_assemble, "append a model's layers to an app image in its registry (no Docker engine)")
    sp.add_argument("app_image", metavar="APP_IMAGE", help="the app image in a registry (tag or @sha256 digest)")
    sp.add_argument("--model", required=True, metavar="DIR", help="model folder (as written by 'modelship fetch')")
    sp.add_argument("--tag", "-t", required=True, metavar="REF", help="REGISTRY/REPO:TAG to write")
    sp.add_argument("--platform", metavar="OS/ARCH", help="only this platform of a multi-platform APP_IMAGE")
    allow_pickle(sp)
    verify_key(sp, "assemble only a --model whose model.sig is signed by one of these keys")
    image_sign_key(
        sp, "before the tag moves", "; it also attests the image's provenance (slsa) and ML-BOM (cyclonedx), read by "
        "verify --attestation slsa --attestation cyclonedx",
    )  # fmt: skip
    registry_login(sp)

    promote_help = "tag a tested digest that carries the required evidence, or copy it with that evidence first"
    sp = add("promote", cmd_promote, promote_help)
    sp.add_argument("ref", metavar="REF@DIGEST", help="the tested image, REGISTRY/REPO@sha256:…")
    sp.add_argument(
        "--tag", "-t", action="append", metavar="TAG", help="tag to point at it (repeatable; needed without --to)"
    )
    sp.add_argument(
        "--require-key",
        action="append",
        metavar="PUB.pem",
        help="refuse (no tag moves) unless the digest carries a cosign signature by one of these PEM EC public keys "
        "(repeatable)",
    )
    sp.add_argument(
        "--require-attestation",
        action="append",
        metavar="TYPE",
        help="also refuse unless it carries an attestation of this type by one of the --require-key keys (slsa, "
        "cyclonedx, test-result: PASSED, or a predicate-type URI; repeatable)",
    )
    sp.add_argument(
        "--to",
        metavar="REGISTRY/REPO",
        help="copy the image by digest to this repository (another registry too) with its signatures, "
        "attestations and referrers, then tag it there",
    )
    image_sign_key(sp, "before any tag moves")
    registry_login(sp)

    sp = add("ls", cmd_ls, "list a repository's tags with their digests and, for model images, model versions")
    sp.add_argument("repository", metavar="REPOSITORY", help="oci://REGISTRY/REPO (or REGISTRY/REPO)")
    registry_login(sp)

    sp = add("copy", cmd_copy, "copy an image (manifest or index, every blob) to another repository or registry")
    sp.add_argument("src", metavar="SRC", help="REGISTRY/REPO:TAG or @sha256:… to copy")
    sp.add_argument("dst", metavar="DST", help="REGISTRY/REPO[:TAG] to write (no tag: SRC's tag)")
    registry_login(sp)

    sp = add("sign", cmd_sign, "sign an image by digest, in cosign's format (a signature at its sha256-<hex>.sig tag)")
    sp.add_argument("ref", metavar="REF@DIGEST", help="the image to sign, REGISTRY/REPO@sha256:…")
    sp.add_argument("--key", required=True, metavar="KEY.pem", help=_PRIVATE_KEY_HELP)
    registry_login(sp)

    attest_help = "attest a statement about an image by digest, in cosign's format (at its sha256-<hex>.att tag)"
    sp = add("attest", cmd_attest, attest_help)
    sp.add_argument("ref", metavar="REF@DIGEST", help="the image the statement is about, REGISTRY/REPO@sha256:…")
    sp.add_argument("--key", required=True, metavar="KEY.pem", help=_PRIVATE_KEY_HELP)
    sp.add_argument(
        "--type", required=True, dest="predicate_type", metavar="TYPE",
        help="slsa, cyclonedx, test-result, or a predicate-type URI",
    )  # fmt: skip
    sp.add_argument("--predicate", required=True, metavar="FILE.json", help="the predicate: a JSON object")
    registry_login(sp)

    verify_help = (
        "check a model folder against its modelship.json (sizes, sha256s, nothing else), or an image's cosign "
        "signature (and attestations) for exactly its digest (REF@DIGEST --key PUB.pem [--attestation TYPE])"
    )
    sp = add("verify", cmd_verify, verify_help)
    sp.add_argument(
        "target", metavar="DIR|REF@DIGEST", help="a folder written by 'modelship fetch', or REGISTRY/REPO@sha256:…"
    )
    sp.add_argument("--allow-extra", action="store_true", help="DIR: accept files its modelship.json does not list")
    sp.add_argument(
        "--key", action="append", metavar="PUB.pem", help="REF@DIGEST: a PEM EC public key to accept (repeatable)"
    )
    sp.add_argument(
        "--attestation", action="append", metavar="TYPE",
        help="REF@DIGEST: also require an attestation of this type by the key (slsa, cyclonedx, test-result: "
        "PASSED, or a URI; repeatable)",
    )  # fmt: skip
    registry_login(sp)

    prune_help = "remove cache entries not used lately (model folders keep their files)"
    sp = add_under("cache", "the local download cache", "prune", cmd_cache_prune, prune_help)
    sp.add_argument("--keep-days", type=float, metavar="DAYS", help="remove entries not used for this many days")
    sp.add_argument(
        "--max-size", type=_size, metavar="SIZE", help="then remove the least recently used until the rest fit (20G)"
    )
    sp.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    record_help = "access-log or JSON-lines captures -> a probes file (secret headers dropped)"
    sp = add_under("probes", "request captures for the pytest plugin's gate", "record", cmd_probes_record, record_help)
    sp.add_argument("--from", dest="source", required=True, metavar="LOGFILE", help="the capture, or - for stdin")
    sp.add_argument(
        "--out", required=True, metavar="FILE", help="the probes file to write (JSON lines; must not exist)"
    )
    sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    render_help = "write Kubernetes manifests pinned to an image digest"
    sp = add_under("deploy", "Kubernetes deployment helpers", "render", cmd_deploy_render, render_help)
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
    sp.add_argument(
        "--policy",
        choices=("kyverno",),
        help="also write an admission policy requiring --key's signature on the app and model images",
    )
    sp.add_argument("--key", metavar="PUB.pem", help="--policy: the PEM EC public key whose signatures it requires")
    sp.add_argument(
        "--require-attestation",
        action="append",
        default=[],
        metavar="TYPE",
        help="--policy: also require this attestation on the app image: slsa, cyclonedx, test-result or a "
        "predicate-type URI (repeatable)",
    )
    return p
