"""Resolution: which version of the model at a URI (pinned, or the latest complete one), and locks that pin it.

What a version is, and which one is the latest, is the repository's (``modelship.repos``): a folder
``PREFIX/<version>/`` on a byte store, or a tag of a model image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import conventions
from ._connections import concurrency_setting
from ._fs import no_space, os_error
from ._hash import chunk_digests
from ._retry import retrying
from .cache import Cache
from .errors import IntegrityError, ModelshipError
from .manifest import CHUNK_SIZE, FileEntry, Lock, Resolution
from .repos import opened
from .uri import parse

log = logging.getLogger("modelship")


def check_version(version: str | None) -> None:
    """A version asked for (None: the latest), by the one rule of conventions.check_version."""
    if version is not None:
        conventions.check_version(version)


def resolve(
    uri: str,
    *,
    version: str | None = None,
    pre: bool = False,
    credential: Any = None,
    verify_keys: Sequence[str | Path] | None = None,
    verify_cert_chain: Sequence[str | Path] | None = None,
) -> Resolution:
    """Find the model at ``uri``: the pinned ``version``, or the latest complete one. ``verify_keys``: PEM public
    keys (None: MODELSHIP_VERIFY_KEYS); with any, a version without an OMS signature by one of them over its
    sha256s is refused (SignatureError). ``verify_cert_chain``: PEM root certificates (None:
    MODELSHIP_VERIFY_CERT_CHAINS); a signature whose certificate chains to one verifies too (trust.certs)."""
    check_version(version)
    parsed = parse(uri)
    keys = _keys(verify_keys, verify_cert_chain)
    with opened(parsed, credential) as repo:
        return _resolve_verified(repo, parsed.display, version, pre, keys)


def _keys(paths: Sequence[str | Path] | None, cert_chains: Sequence[str | Path] | None) -> list[Any]:
    from .trust.check import verify_keys  # not at import: `import modelship` stays light (no cryptography)

    return verify_keys(paths, cert_chains)


def _resolve_verified(repo: Any, display: str, version: str | None, pre: bool, keys: list[Any]) -> Resolution:
    """The version asked for, or the latest; with ``keys``, one whose signature verifies (the newest that does)."""
    find = lambda ex: retrying(f"resolving {display}", lambda: repo.resolve(version, pre, None, ex))  # noqa: E731
    if not keys:
        return find(frozenset())
    from .trust.check import latest_signed, signed_version

    if version is None:
        return latest_signed(find, repo, keys)
    res = find(frozenset())
    signed_version(repo, res, keys)
    return replace(res, skipped=())  # pinned: nothing newer was looked at


def apply_lock(res: Resolution, lk: Lock) -> Resolution:
    """Fill in the lock's sha256s; fail saying what changed since the lock was written."""
    if res.version != lk.version:
        raise IntegrityError(f"lock pins version {lk.version!r} but the store resolved {res.version!r}")
    if lk.pin and res.pin and lk.pin != res.pin:
        raise IntegrityError(
            f"lock mismatch: {res.uri} version {res.version} now is {res.pin[:19]}…, the lock pins {lk.pin[:19]}…; "
            "re-lock to accept the change"
        )
    now = {f.path: f for f in res.files}
    pinned = {f.path: f for f in lk.files}
    for path in sorted(set(pinned) | set(now)):
        if path not in now:
            raise IntegrityError(
                f"lock mismatch: {path} was removed from {res.uri} version {res.version} since the lock was written"
            )
        if path not in pinned:
            raise IntegrityError(
                f"lock mismatch: {path} was added to {res.uri} version {res.version} since the lock was written"
            )
        a, b = pinned[path], now[path]
        if a.size != b.size:
            raise IntegrityError(
                f"lock mismatch: {path} is {b.size} bytes, the lock says {a.size}; re-lock to accept the change"
            )
        if b.sha256 and b.sha256 != a.sha256:
            raise IntegrityError(f"lock mismatch: {path} has sha256 {b.sha256[:16]}…, the lock says {a.sha256[:16]}…")  # type: ignore[index]
        if a.etag and b.etag and a.etag != b.etag:
            log.info("%s: ETag changed since the lock (%s → %s); its sha256 is still verified", path, a.etag, b.etag)
    # The lock's chunk digests where it has them (it is the pin); else the store manifest's, whose sha256 was
    # just checked against the lock's (the whole-file sha256 is verified either way).
    return replace(
        res,
        files=tuple(
            replace(f, sha256=pinned[f.path].sha256).with_chunks(pinned[f.path].chunk_size, pinned[f.path].chunks)
            if pinned[f.path].chunks is not None
            else replace(f, sha256=pinned[f.path].sha256)
            for f in res.files
        ),
    )


def lock(
    uri: str,
    *,
    version: str | None = None,
    pre: bool = False,
    output: str | Path | None = None,
    credential: Any = None,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
    verify_keys: Sequence[str | Path] | None = None,
    verify_cert_chain: Sequence[str | Path] | None = None,
) -> Lock:
    """Pin the resolved version with every file's sha256 (hashing, via the cache, files published without one).
    ``verify_keys``, ``verify_cert_chain``: as for ``resolve``; the signature is checked over the sha256s the lock
    pins."""
    check_version(version)
    parsed = parse(uri)
    keys = _keys(verify_keys, verify_cert_chain)
    try:
        cache = Cache(cache_dir)
        with opened(parsed, credential) as repo:
            res = _resolve_verified(repo, parsed.display, version, pre, keys)
            if any(f.sha256 is None for f in res.files):
                shas = repo.fetch(res, cache, workers=concurrency_setting(None), progress=progress).shas
                # What was downloaded gets chunk digests too: a fetch from this lock then re-reads only a damaged
                # range, even from a store that has no digests of its own (plain https).
                res = replace(res, files=tuple(_with_sha(cache, f, shas[f.path]) for f in res.files))
            signer = None
            if keys:  # again over the sha256s the lock pins (hashed here when the store had none)
                from .trust.check import signed_version

                signer = signed_version(repo, res, keys)[1].fingerprint
        lk = replace(Lock.from_resolution(res), signer=signer, skipped=res.skipped)
    except OSError as e:
        raise os_error(e, Path(cache_dir or ".")) from None
    if output:
        try:
            lk.write(output)
        except OSError as e:
            # os_error's hint is for DEST and the cache; this is the lock file, which -o names
            raise no_space(e, f"on the device of the lock file {output}", "free space, or choose another -o path") or (
                ModelshipError(
                    f"cannot write the lock file {output}: {e.strerror or e.__class__.__name__}; "
                    "choose a writable path with -o/--output"
                )
            ) from None
    return lk


def _with_sha(cache: Cache, f: FileEntry, sha: str) -> FileEntry:
    if f.sha256 is None and f.chunks is None and (path := cache.get(sha, f.size)) is not None:
        return replace(f, sha256=sha).with_chunks(CHUNK_SIZE, chunk_digests(path, CHUNK_SIZE))
    return replace(f, sha256=sha)
