"""fetch(): resolve, download what the cache lacks, install into DEST verified and atomically; thin over
``_resolve``, ``_download`` and ``_install``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._connections import concurrency_setting
from ._fs import os_error, write_atomic
from ._install import check_dest, install, staged, up_to_date
from ._resolve import apply_lock, check_version
from ._retry import retrying
from .cache import Cache
from .errors import IntegrityError, ModelshipError, UsageError
from .manifest import SIGNATURE_NAME, Lock, Manifest, Resolution, Skipped
from .repos import Repository, opened
from .uri import ModelURI, parse

log = logging.getLogger("modelship")


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch`` did: the installed manifest and where the bytes came from."""

    manifest: Manifest
    dest: Path
    downloaded_files: int
    downloaded_bytes: int
    cached_files: int
    unchanged: bool = False
    connections: int = 0  # connections the download settled at (0: nothing was downloaded)
    # with verify keys, newer versions "latest" passed over, and why (Resolution.skipped); None without keys
    skipped: tuple[Skipped, ...] | None = None

    @property
    def version(self) -> str | None:
        return self.manifest.version


def fetch(
    uri: str | None,
    dest: str | Path,
    *,
    version: str | None = None,
    lock: str | Path | Lock | None = None,
    pre: bool = False,
    credential: Any = None,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
    verify_keys: Sequence[str | Path] | None = None,
    verify_cert_chain: Sequence[str | Path] | None = None,
) -> FetchResult:
    """Download a model into ``dest`` verified and atomically; files already cached are not downloaded again.

    ``workers``: parallel connections; None (the default) takes MODELSHIP_CONCURRENCY, else grows the number
    while throughput grows. ``verify_keys``: PEM public keys (None: MODELSHIP_VERIFY_KEYS); with any, the version
    must carry an OMS signature by one of them over exactly the fetched bytes (SignatureError, DEST untouched
    otherwise), and DEST gets it as ``model.sig``. ``verify_cert_chain``: PEM root certificates (None:
    MODELSHIP_VERIFY_CERT_CHAINS) whose certificates' signatures verify too (trust.certs).
    """
    lk = Lock.load(lock) if isinstance(lock, (str, Path)) else lock
    if lk is not None:
        if version is not None and version != lk.version:
            raise UsageError(f"--version {version} contradicts the lock file, which pins {lk.version}")
        version, uri = lk.version, uri or lk.uri
    if not uri:
        raise UsageError("no model URI given (and no lock file to take it from)")
    check_version(version)
    from .trust.check import verify_keys as load_keys  # not at import: `import modelship` stays light

    keys = load_keys(verify_keys, verify_cert_chain)
    workers = concurrency_setting(workers)
    parsed = parse(uri)
    if lk is not None and _where(parse(lk.uri)) != _where(parsed):  # a mismatch, not a usage error: exit 1
        raise ModelshipError(
            f"lock mismatch: the lock file is for {lk.uri}, not {parsed.display}; give its URI or none"
        )
    dest = Path(dest).absolute()
    try:
        check_dest(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        cache = Cache(cache_dir)
        with opened(parsed, credential) as repo, cache.in_use():  # no cache prune meanwhile
            return _fetch_attempts(repo, parsed, version, pre, lk, dest, cache, workers, progress, keys)
    except OSError as e:
        raise os_error(e, dest) from None


def _where(uri: ModelURI) -> tuple[str, ...]:
    """A model's place, however it is spelt (``/models/iris`` and ``file:///models/iris/`` are one)."""
    return (uri.scheme, uri.location, uri.container, uri.prefix.rstrip("/"))


def _fetch_attempts(
    repo: Repository,
    parsed: ModelURI,
    version: str | None,
    pre: bool,
    lk: Lock | None,
    dest: Path,
    cache: Cache,
    workers: int | None,
    progress: bool | None,
    keys: list[Any],
) -> FetchResult:
    """Resolve and install; a blob replaced mid-download gets one fresh resolve (a new latest may have landed)."""

    def attempt() -> FetchResult:
        if keys and version is None and lk is None:  # latest: the newest version that verifies
            from .trust.check import latest_signed

            find = lambda ex: retrying(f"resolving {parsed.display}", lambda: repo.resolve(None, pre, None, ex))  # noqa: E731
            res = latest_signed(find, repo, keys)
        else:
            res = retrying(f"resolving {parsed.display}", lambda: repo.resolve(version, pre, lk))
        if lk is not None:
            res = apply_lock(res, lk)
        return _install_version(repo, res, dest, cache, workers, progress, keys, lk.signer if lk else None)

    try:
        return attempt()
    except IntegrityError as e:
        if lk is not None or e.kind != IntegrityError.CHANGED:
            raise
        log.warning("%s; resolving again", e)
    return attempt()


def _install_version(
    repo: Repository,
    res: Resolution,
    dest: Path,
    cache: Cache,
    workers: int | None,
    show_progress: bool | None,
    keys: list[Any],
    signer: str | None = None,
) -> FetchResult:
    bundle = None
    if keys:  # before any download: an unsigned or foreign version costs no byte
        from .trust.check import signed_version

        bundle, signed = signed_version(repo, res, keys, signer)
        log.info("%s version %s is signed by %s", res.uri, res.version, signed.fingerprint)
    skipped = res.skipped if res.skipped is not None or not keys else ()
    current = up_to_date(dest, res)
    if current is not None:
        if bundle is not None:
            write_atomic(dest / SIGNATURE_NAME, bundle)
        log.info("%s already holds %s version %s", dest, res.uri, res.version)
        return FetchResult(current, dest, 0, 0, len(res.files), unchanged=True, skipped=skipped)
    cached_before = sum(1 for f in res.files if f.sha256 and cache.get(f.sha256, f.size))
    with staged(dest) as stage:
        got = repo.fetch(res, cache, workers=workers, progress=show_progress)
        shas, downloaded, connections = got.shas, got.downloaded_bytes, got.connections
        if bundle is not None:  # over the sha256s of the bytes fetched: what is installed is what was signed
            from .trust.check import check_bytes

            check_bytes(bundle, res, shas, keys)
            (stage / SIGNATURE_NAME).write_bytes(bundle)
        manifest = install(stage, dest, res, shas, cache)
    n_downloaded = len(res.files) - cached_before if downloaded else 0
    log.info("installed %s version %s in %s (%d bytes downloaded)", res.uri, res.version, dest, downloaded)
    return FetchResult(
        manifest,
        dest,
        n_downloaded,
        downloaded,
        len(res.files) - n_downloaded,
        connections=connections,
        skipped=skipped,
    )
