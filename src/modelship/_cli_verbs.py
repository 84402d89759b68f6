"""The `modelship` verbs, one handler each: call the public API, print through ``_cli_output``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._cli_output import emit, emit_missing, one_line
from .conventions import (
    MODEL_DIGEST_LABEL,
    MODEL_DIR_LABEL,
    MODEL_MANIFEST_LABEL,
    MODEL_SIGNER_LABEL,
    MODEL_URI_LABEL,
    MODEL_VERSION_LABEL,
)
from .errors import ModelshipError, NotFoundError, UsageError
from .manifest import skipped_json, tree_digest
from .oci.reference import pinned
from .progress import human_bytes


def _model_json(d: dict[str, Any]) -> dict[str, Any]:
    """A manifest or lock as printed by --json: its tree digest is ``model_digest`` (``image_digest`` is an image's)."""
    out = {k: v for k, v in d.items() if k != "digest"}
    out["model_digest"] = d.get("digest")
    return out


def _same(a: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options the API takes under the names they have on the command line (``--base-image`` → base_image)."""
    return {n: getattr(a, n) for n in names}


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
        credential=_login(a),
        **_same(
            a,
            "version",
            "force",
            "workers",
            "image_model_dir",
            "sign_key",
            "sign_cert",
            "cert_chain",
            "allow_unsafe_pickle",
        ),
    )

    def human() -> None:
        files = f"{len(r.files)} files, {human_bytes(sum(f.size for f in r.files))}"
        if r.image is None:
            print(f"published {a.model_dir} as {r.location} ({files}) {r.model_digest}")
            return
        how = "unchanged, 0 bytes uploaded" if r.unchanged else f"{human_bytes(r.uploaded_bytes)} uploaded"
        print(f"published {a.model_dir} as {r.image} ({files}; {how}) {r.image_digest}")

    emit(a, r.to_dict(), human)


def cmd_sign_model(a: argparse.Namespace) -> None:
    from .trust.published import sign_version

    r = sign_version(a.uri, version=a.version, force=a.force, **_same(a, "sign_key", "sign_cert", "cert_chain"))
    moved = f", now {r.image_digest}" if r.image_digest else ""
    emit(
        a, r.to_dict(), lambda: print(f"signed {r.uri} version {r.version}: {r.signature}{moved} (key {r.fingerprint})")
    )


def cmd_resolve(a: argparse.Namespace) -> None:
    from ._resolve import resolve

    res = resolve(
        a.uri,
        version=a.version,
        pre=a.pre,
        credential=_login(a),
        verify_keys=a.verify_key,
        verify_cert_chain=a.verify_cert_chain,
    )
    known = all(f.sha256 for f in res.files)
    digest = tree_digest((f.path, f.sha256) for f in res.files) if known else None  # type: ignore[misc]
    # the model block as inspect and build print it; model_digest is null when the store has no sha256s
    data = {**res.to_dict(), "model": {"uri": res.uri, "version": res.version, "model_digest": digest}}

    def human() -> None:
        print(f"{res.uri} version {res.version or '(unversioned)'}: {len(res.files)} files, {human_bytes(res.size)}")
        for f in res.files:
            print(f"  {f.path}  {f.size}  etag={f.etag or '-'}  sha256={f.sha256 or '-'}")

    emit(a, data, human)


def cmd_lock(a: argparse.Namespace) -> None:
    from ._resolve import lock

    lk = lock(
        a.uri,
        version=a.version,
        pre=a.pre,
        output=a.output,
        credential=_login(a),
        verify_keys=a.verify_key,
        verify_cert_chain=a.verify_cert_chain,
    )
    data = _model_json(lk.to_dict())
    if lk.pin:  # a version that is an image (oci://): the image, pinned, is what deploy mounts
        data["ref"] = pinned(lk.uri.split("://", 1)[-1], lk.pin)
    if lk.skipped is not None:  # --verify-key: newer versions passed over, and why
        data["skipped"] = skipped_json(lk.skipped)

    def human() -> None:
        version = lk.version or "(unversioned)"
        print(f"locked {lk.uri} version {version} ({len(lk.files)} files) {lk.digest} → {a.output}")

    emit(a, data, human)


def cmd_fetch(a: argparse.Namespace) -> None:
    from ._fetch import fetch

    r = fetch(
        a.uri,
        a.dest,
        credential=_login(a),
        verify_keys=a.verify_key,
        verify_cert_chain=a.verify_cert_chain,
        **_same(a, "version", "lock", "pre", "workers"),
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
    if r.skipped is not None:  # --verify-key: newer versions passed over, and why
        data["skipped"] = skipped_json(r.skipped)

    def human() -> None:
        how = (
            "unchanged"
            if r.unchanged
            else f"{r.downloaded_files} downloaded ({human_bytes(r.downloaded_bytes)}), {r.cached_files} from cache"
        )
        version = m.version or "(unversioned)"
        print(f"fetched {m.uri} version {version} → {r.dest} ({len(m.files)} files; {how}) {m.digest}")

    emit(a, data, human)


def cmd_build(a: argparse.Namespace) -> None:
    from .image import build
    from .image import labels as image_labels
    from .image._inspect import model_block

    options = ("base_image", "requirements", "dockerfile", "entrypoint", "port", "ready_path", "live_path", "pull")
    img = build(
        a.app_dir,
        a.model,
        a.tag,
        quiet=a.quiet or a.json,
        verify_keys=a.verify_key,
        username=a.username,
        password=_registry_password(a),
        **_same(a, *options, "tag_model_version", "allow_unsafe_pickle", "builder", "platform"),
    )
    if a.builder == "registry":
        _built_in_registry(a, img)
        return
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
            signer = img.labels.get(MODEL_SIGNER_LABEL)
            print(
                f"built {', '.join(img.tags)} ({img.id[:19]}) with model {img.labels.get(MODEL_URI_LABEL)} "
                f"version {version} {img.labels.get(MODEL_DIGEST_LABEL)}" + (f", signed by {signer}" if signer else "")
            )

    emit(a, data, human)


def _built_in_registry(a: argparse.Namespace, img: Any) -> None:
    """What `build --builder registry` prints: the image is in the registry already, so it has a ref."""
    from .image import labels as image_labels
    from .image._inspect import model_block

    data = {
        **img.to_dict(),
        "model": model_block(img.labels),
        "app": image_labels.app_settings(img.labels),
    }

    def human() -> None:
        what = "app-only" if a.model is None else f"with model {img.labels.get(MODEL_URI_LABEL)}"
        print(f"built {img.image} {what} in the registry, {human_bytes(img.uploaded_bytes)} sent: {img.ref}")

    emit(a, data, human)


def cmd_push(a: argparse.Namespace) -> None:
    from .image import push

    r = push(a.image, username=a.username, password=_registry_password(a), quiet=a.quiet or a.json, sign_key=a.sign_key)

    def human() -> None:
        print(f"pushed {r.image} {r.image_digest}")
        _print_signature(r.ref, r.image_signature)

    emit(a, r.to_dict(), human)


def cmd_inspect(a: argparse.Namespace) -> None:
    from .image import inspect

    try:
        r = inspect(a.image, platform=a.platform)
    except NotFoundError as e:
        if not a.missing_ok:
            raise
        print(f"modelship: {one_line(str(e))} (--missing-ok)", file=sys.stderr)
        emit_missing(a)  # a pipeline's first release: no :stable to compare with yet
        return

    def human() -> None:
        where = r.source
        if r.platforms:  # an index: say which of its images was read
            where += f", {r.platform} of {', '.join(r.platforms)}; --platform picks another"
        print(f"{r.ref or r.image} ({where})")
        model = r.model
        print(
            f"  model: {model.get('uri') or '-'} version {model.get('version') or '-'} "
            f"{model.get('model_digest') or '-'}"
        )
        if model.get("signer"):
            print(f"  signer: {model['signer']} (model.sig verified when the image was made)")
        for k, v in sorted(r.labels.items()):
            if k != MODEL_MANIFEST_LABEL:
                print(f"  {k}={v}")

    emit(a, r.to_dict(), human)


def _registry_password(a: argparse.Namespace) -> str | None:
    """The password ``--password-stdin`` reads (the library checks it comes with a ``--username``)."""
    return sys.stdin.readline().rstrip("\n") if a.password_stdin else None


def cmd_assemble(a: argparse.Namespace) -> None:
    from .oci._assemble import assemble

    password = _registry_password(a)
    r = assemble(
        a.app_image,
        a.model,
        a.tag,
        platform=a.platform,
        username=a.username,
        password=password,
        quiet=a.json,
        allow_unsafe_pickle=a.allow_unsafe_pickle,
        verify_keys=a.verify_key,
        sign_key=a.sign_key,
    )
    data = r.to_dict()

    def human() -> None:
        how = "unchanged, 0 bytes uploaded" if r.unchanged else f"{human_bytes(r.uploaded_bytes)} uploaded"
        model = r.model.get("version") or "(unversioned)"
        if r.model.get("signer"):
            model += f", signed by {r.model['signer']}"
        print(f"assembled {r.image} {r.image_digest} ({how}; app {r.app_ref}, model {model})")
        _print_signature(r.ref, r.image_signature)
        for e in r.attestations:
            kind = "already there" if e.unchanged else "appended"
            print(f"attested {r.ref}: {e.predicate_type} at {e.attestation} ({kind}; key {e.signer})")

    emit(a, data, human)


def cmd_promote(a: argparse.Namespace) -> None:
    from .oci._promote import promote

    r = promote(
        a.ref,
        a.tag or [],
        to=a.to,
        require_keys=a.require_key or [],
        require_attestations=a.require_attestation or [],
        username=a.username,
        password=_registry_password(a),
        sign_key=a.sign_key,
    )
    data = r.to_dict()

    def human() -> None:
        for what in r.verified:
            print(f"verified {r.source or r.ref}: {what}")
        if r.copied is not None:
            carried, sent = len(r.copied.tags) + r.copied.referrers, human_bytes(r.uploaded_bytes)
            print(f"copied {r.source} -> {r.ref} ({carried} evidence manifests; {sent} uploaded)")
            if r.copied.referrers_skipped:
                n = r.copied.referrers_skipped
                print(f"modelship: note: {n} referrer(s) not copied: {r.ref} has no referrers API", file=sys.stderr)
        _print_signature(r.ref, r.image_signature)
        for t in r.tags:
            print(f"promoted {t} -> {r.image_digest}")

    emit(a, data, human)


def cmd_ls(a: argparse.Namespace) -> None:
    from .oci._ls import ls

    images = ls(a.repository, username=a.username, password=_registry_password(a))
    data = {"images": [i.to_dict() for i in images]}

    def human() -> None:
        if not images:
            print(f"no tags in {a.repository}")
        for i in images:
            model = f"  model {i.version} {i.model_digest}" if i.model_digest else ""
            print(f"{i.image.rsplit(':', 1)[1]}  {i.image_digest}{model}")

    emit(a, data, human)


def cmd_copy(a: argparse.Namespace) -> None:
    from .oci._copy import copy

    r = copy(a.src, a.dst, username=a.username, password=_registry_password(a), quiet=a.json)
    data = r.to_dict()

    def human() -> None:
        print(r.ref)
        print(f"copied {r.source} -> {r.image or r.ref} ({human_bytes(r.uploaded_bytes)} uploaded)", file=sys.stderr)

    emit(a, data, human)


def cmd_cache_prune(a: argparse.Namespace) -> None:
    from .cache import prune

    r = prune(keep_days=a.keep_days, max_size=a.max_size, dry_run=a.dry_run)
    data = {"removed": r.removed, "freed": r.freed, "kept": r.kept, "kept_bytes": r.kept_bytes, "cache": str(r.root)}
    how = "would remove" if r.dry_run else "removed"
    freed, kept = human_bytes(r.freed), human_bytes(r.kept_bytes)
    line = f"{how} {r.removed} cache entries ({freed}); {r.kept} ({kept}) kept in {r.root}"
    emit(a, data, lambda: print(line))


def cmd_probes_record(a: argparse.Namespace) -> None:
    from .probes import record_file

    r = record_file(a.source, a.out)
    data = {"probes": len(r.probes), "skipped": r.skipped, "dropped_headers": sorted(r.dropped_headers), "out": a.out}
    dropped = f"; secret headers dropped: {', '.join(sorted(r.dropped_headers))}" if r.dropped_headers else ""
    line = f"recorded {len(r.probes)} probes to {a.out} ({r.skipped} other lines skipped{dropped})"
    emit(a, data, lambda: print(line, file=sys.stderr))


def _print_signature(ref: str, s: Any) -> None:
    """The line of an image signature written (sign; --sign-key of assemble, push, promote): where, which key."""
    if s is not None:
        how = "already there" if s.unchanged else f"now {s.signature_digest}"
        print(f"signed {ref}: {s.signature} ({how}; key {s.signer})")


def cmd_sign(a: argparse.Namespace) -> None:
    from .trust.cosign import sign

    r = sign(a.ref, a.key, username=a.username, password=_registry_password(a))
    emit(a, r.to_dict(), lambda: _print_signature(r.ref, r.image_signature))


def cmd_attest(a: argparse.Namespace) -> None:
    from .trust.attestations import attest, read_predicate, type_name

    predicate = read_predicate(a.predicate)
    r = attest(a.ref, a.predicate_type, predicate, key=a.key, username=a.username, password=_registry_password(a))
    how = "already there" if r.unchanged else f"now {r.attestation_digest}"
    line = f"attested {r.ref}: {type_name(r.predicate_type)} at {r.attestation} ({how}; key {r.signer})"
    emit(a, r.to_dict(), lambda: print(line))


def _is_image_target(a: argparse.Namespace) -> bool:
    """``verify TARGET``: an image when TARGET is no folder and names a digest (or keys/a login were given)."""
    from pathlib import Path

    if Path(a.target).is_dir():
        given = (("--key", a.key), ("--attestation", a.attestation), ("--username", a.username))
        image_only = [o for o, v in given if v] + (["--password-stdin"] if a.password_stdin else [])
        if image_only:
            raise UsageError(f"{a.target} is a folder: {', '.join(image_only)} apply to REF@DIGEST only")
        return False
    return "@" in a.target or bool(a.key)


def cmd_verify(a: argparse.Namespace) -> None:
    if _is_image_target(a):
        return _verify_image(a)
    from ._verify import verify

    r = verify(a.target, allow_extra=a.allow_extra)

    def human() -> None:
        if r.ok:
            print(f"verified {r.target}: {r.files} files, {human_bytes(r.size)}, model_digest {r.model_digest}")

    emit(a, r.to_dict(), human)
    if not r.ok:
        raise ModelshipError(r.problem() or "")


def _verify_image(a: argparse.Namespace) -> None:
    from .trust.cosign import verify

    if a.allow_extra:
        raise UsageError("--allow-extra applies to a model folder, not to REF@DIGEST")
    from .trust.attestations import type_name

    r = verify(
        a.target, a.key or [], username=a.username, password=_registry_password(a), attestations=a.attestation or ()
    )

    def human() -> None:
        print(f"verified {r.ref}: signed by {r.signer} ({r.signature})")
        for t in r.attestations:
            print(f"verified {r.ref}: {type_name(t.predicate_type)} attested by {t.signer} ({t.attestation})")

    emit(a, r.to_dict(), human)


def cmd_deploy_render(a: argparse.Namespace) -> None:
    from .deploy import render

    paths = render(
        a.image,
        a.out,
        on_note=lambda note: print(f"modelship: note: {note}", file=sys.stderr),
        **_same(a, "name", "replicas", "template_dir", "port", "ready_path", "live_path", "model_image", "mount"),
        image_model_dir=a.image_model_dir,
        policy=a.policy,
        key=a.key,
        require_attestations=a.require_attestation,
    )
    for p in paths:
        print(p)
