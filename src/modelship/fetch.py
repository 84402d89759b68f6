"""resolve → lock → fetch: pick the model version, then download it verified, cached and atomically."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from ._download import _Downloader, _FileJob, concurrency_setting
from ._retry import retrying
from .cache import Cache, owner_pid, pid_alive, stamped, temp_name
from .errors import IntegrityError, ModelshipError, NotFoundError, UsageError
from .manifest import (
    CHUNK_SIZE,
    MANIFEST_NAME,
    FileEntry,
    Lock,
    Manifest,
    Resolution,
    chunk_digests,
    chunks_from_json,
)
from .plugins import open_source
from .progress import Progress
from .sources.base import RemoteFile, Source
from .uri import ModelURI, parse

log = logging.getLogger("modelship")

PENDING_MARKER = ".modelship-publishing"  # written first by `modelship publish`, removed last


# ---------------------------------------------------------------------------------------------- resolve


@dataclass(frozen=True)
class _Version:
    name: str
    files: list[RemoteFile]
    complete: bool  # False: a publish is under way or died half-way
    has_manifest: bool

    @property
    def last_modified(self) -> float:
        return max((f.last_modified.timestamp() for f in self.files if f.last_modified), default=0.0)


def safe_relpath(rel: str, where: str) -> str:
    """Refuse store names that could escape the destination folder (they are untrusted input)."""
    bad = (
        not rel
        or rel.startswith("/")
        or "\\" in rel
        or any(ord(c) < 32 or ord(c) == 127 for c in rel)
        or any(seg in ("", ".", "..") for seg in rel.split("/"))
        or len(rel.encode()) > 1024
        or any(len(seg.encode()) > 255 for seg in rel.split("/"))
    )
    if bad:
        raise IntegrityError(
            f"refusing file name {rel[:200]!r} in {where}: it is not a safe relative path "
            "(absolute, '..', backslash, control character or too long)"
        )
    return rel


def _group_versions(base: str, files: list[RemoteFile]) -> tuple[list[RemoteFile], dict[str, list[RemoteFile]]]:
    cut = len(base) + 1 if base else 0
    direct: list[RemoteFile] = []
    groups: dict[str, list[RemoteFile]] = {}
    for f in files:
        rel = f.name[cut:]
        if "/" in rel:
            groups.setdefault(rel.split("/", 1)[0], []).append(f)
        else:
            direct.append(f)
    return direct, groups


def _pick_latest(versions: list[_Version], pre: bool) -> _Version:
    """Highest PEP 440 version (pre-releases only with ``pre`` or when nothing else exists); else newest."""
    parsed: list[tuple[Version, _Version]] = []
    for v in versions:
        with contextlib.suppress(InvalidVersion):
            parsed.append((Version(v.name), v))
    if parsed:
        final = [p for p in parsed if not (p[0].is_prerelease or p[0].is_devrelease)]
        pool = parsed if pre or not final else final
        return max(pool, key=lambda p: (p[0], p[1].last_modified, p[1].name))[1]
    return max(versions, key=lambda v: (v.last_modified, v.name))


def _read_small(source: Source, f: RemoteFile, limit: int = 64 * 1024 * 1024) -> bytes:
    if f.size > limit:
        raise IntegrityError(f"{f.name} is {f.size} bytes; too large for a manifest")
    return b"".join(source.read(f.name, 0, f.size, f.etag))


def _entries(
    source: Source, uri: ModelURI, root: str, files: list[RemoteFile], version: str | None
) -> tuple[FileEntry, ...]:
    """Turn store objects below ``root`` into FileEntries, verified against a published manifest if any."""
    cut = len(root) + 1 if root else 0
    by_rel = {f.name[cut:]: f for f in files if f.name[cut:] != PENDING_MARKER}
    where = uri.child(version or "")
    published = by_rel.pop(MANIFEST_NAME, None)
    expected: dict[str, FileEntry] = {}
    if published is not None:
        try:
            doc = json.loads(_read_small(source, published))
            for d in doc["files"]:  # chunk digests are optional (older manifests) but must fit the file
                size = int(d["size"])
                expected[str(d["path"])] = FileEntry(str(d["path"]), size, str(d["sha256"])).with_chunks(
                    *chunks_from_json(d, size)
                )
        except (ValueError, KeyError, TypeError) as e:
            raise IntegrityError(
                f"{where}/{MANIFEST_NAME} is not a valid modelship manifest ({e.__class__.__name__}); "
                "re-publish the version"
            ) from None
        missing = sorted(set(expected) - set(by_rel))
        if missing:
            raise IntegrityError(
                f"{where} is damaged: {missing[0]!r} is in its manifest but not in the store "
                f"({len(missing)} missing); re-publish the version"
            )
    out = []
    for rel, f in sorted(by_rel.items()):
        safe_relpath(rel, where)
        sha = f.sha256
        chunk_size, chunks = None, None
        if rel in expected:
            size, msha = expected[rel].size, expected[rel].sha256
            chunk_size, chunks = expected[rel].chunk_size, expected[rel].chunks
            if size != f.size or (sha and sha != msha):
                raise IntegrityError(
                    f"{where}/{rel}: store has {f.size} bytes / sha256 {sha or '?'}, its manifest says "
                    f"{size} / {msha}; the file was replaced, re-publish the version"
                )
            sha = msha
        elif expected:
            log.warning("ignoring %s/%s: not in the version's manifest", where, rel)
            continue
        modified = f.last_modified.isoformat() if f.last_modified else None
        out.append(FileEntry(rel, f.size, sha, f.md5, f.etag, modified, chunk_size, chunks))
    if not out:
        raise NotFoundError(f"{where} holds no model files")
    return tuple(out)


def _resolve(source: Source, uri: ModelURI, version: str | None, pre: bool) -> Resolution:
    base = uri.prefix.strip("/")
    listing = [f for f in source.list(base) if not base or f.name == base or f.name.startswith(base + "/")]
    if base and len(listing) == 1 and listing[0].name == base:  # the URI names one file
        f = listing[0]
        if version:
            raise UsageError(f"{uri.display} is a single file; it has no versions to pin")
        name = safe_relpath(base.rsplit("/", 1)[-1], uri.display)
        entry = FileEntry(
            name, f.size, f.sha256, f.md5, f.etag, f.last_modified.isoformat() if f.last_modified else None
        )
        return Resolution(uri.display, None, (entry,), prefix=base.rsplit("/", 1)[0] if "/" in base else "")
    listing = [f for f in listing if f.name != base]
    if not listing:
        raise NotFoundError(f"no model at {uri.display}: nothing is stored under that prefix; check the URI")
    direct, groups = _group_versions(base, listing)
    if direct:  # files right under the prefix: one unversioned model
        if version:
            raise UsageError(
                f"{uri.display} holds an unversioned model (files directly under the prefix); drop --version"
            )
        return Resolution(uri.display, None, _entries(source, uri, base, listing, None), prefix=base)
    versions = []
    cut = len(base) + 1 if base else 0
    for name, files in groups.items():
        rels = {f.name[cut + len(name) + 1 :] for f in files}
        versions.append(
            _Version(name, files, MANIFEST_NAME in rels or PENDING_MARKER not in rels, MANIFEST_NAME in rels)
        )
    if version is not None:
        chosen = next((v for v in versions if v.name == version), None)
        if chosen is None:
            names = ", ".join(sorted(v.name for v in versions)[:20])
            raise NotFoundError(f"version {version!r} not found at {uri.display}; available: {names}")
        if not chosen.complete:
            raise ModelshipError(
                f"version {version!r} at {uri.display} is incomplete (its publish has not finished "
                "or died half-way); wait for it or re-publish with --force"
            )
    else:
        complete = [v for v in versions if v.complete]
        if not complete:
            raise NotFoundError(f"no complete model version at {uri.display} ({len(versions)} still being published)")
        chosen = _pick_latest(complete, pre)
    root = f"{base}/{chosen.name}" if base else chosen.name
    return Resolution(uri.display, chosen.name, _entries(source, uri, root, chosen.files, chosen.name), prefix=root)


def _check_version(version: str | None) -> None:
    if version is not None and (not version.strip() or "/" in version or version in (".", "..")):
        raise UsageError(
            f"invalid --version {version!r}: give a version name (e.g. 1.2.0), or leave it out for the latest"
        )


def resolve(uri: str, *, version: str | None = None, pre: bool = False, credential: Any = None) -> Resolution:
    """Find the model at ``uri``: the pinned ``version``, or the latest complete one."""
    _check_version(version)
    parsed = parse(uri)
    with _opened(parsed, credential) as source:
        return retrying(f"resolving {parsed.display}", lambda: _resolve(source, parsed, version, pre))


@contextlib.contextmanager
def _opened(uri: ModelURI, credential: Any) -> Iterator[Source]:
    source = open_source(uri, credential)
    try:
        yield source
    finally:
        source.close()


# ---------------------------------------------------------------------------------------------- install


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

    @property
    def version(self) -> str | None:
        return self.manifest.version


def _up_to_date(dest: Path, res: Resolution) -> Manifest | None:
    """The manifest in ``dest`` when it already holds exactly the resolved files (all sha256s known)."""
    if any(f.sha256 is None for f in res.files):
        return None
    try:
        current = Manifest.load(dest / MANIFEST_NAME)
    except ModelshipError:
        return None
    want = Manifest.create(res.uri, res.version, res.files, stamp=False)
    if current.digest != want.digest or current.version != res.version:
        return None
    for f in res.files:
        try:
            st = (dest / f.path).stat()
        except FileNotFoundError:
            return None
        if st.st_size != f.size or not stamped(st):  # written to since it was fetched: fetch it again
            return None
    return current


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False when unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _swap_into_place(stage: Path, dest: Path) -> None:
    if not dest.exists():
        os.rename(stage, dest)
        return
    if _renameat2_exchange(stage, dest):
        shutil.rmtree(stage)  # now the old DEST
        return
    old = dest.with_name(temp_name(f".{dest.name}.modelship-old"))
    os.rename(dest, old)
    try:
        os.rename(stage, dest)
    except BaseException:
        os.rename(old, dest)  # put the old DEST back (also on SIGINT/SIGTERM between the two renames)
        raise
    shutil.rmtree(old)


def _os_error(e: OSError, where: Path) -> ModelshipError:
    """One line for a local file-system failure (disk full, read-only, permissions), naming the path."""
    path = e.filename or where
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ModelshipError(f"no space left on the device of {path}; free space, or use another DEST or cache folder")
    if e.errno == errno.EROFS:
        return ModelshipError(f"{path} is on a read-only file system; choose a writable DEST (or MODELSHIP_CACHE_DIR)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return ModelshipError(f"permission denied on {path}; check its owner and mode")
    return ModelshipError(f"{path}: {e.strerror or e.__class__.__name__}")


def _make_stage(dest: Path) -> Path:
    """The staging folder next to DEST, made before any download so that an unwritable DEST fails at once."""
    stage = dest.parent / temp_name(f".{dest.name}.modelship")
    try:
        stage.mkdir()
    except OSError as e:
        raise ModelshipError(
            f"cannot create files next to {dest} ({e.strerror}); choose a writable destination"
        ) from None
    return stage


def _check_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a folder; choose another destination")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MANIFEST_NAME).exists():
        raise UsageError(
            f"{dest} is not empty and holds no {MANIFEST_NAME}; modelship replaces only folders it "
            "fetched: choose a new or empty folder"
        )
    for stale in dest.parent.glob(f".{dest.name}.modelship-*"):  # staging dirs of killed runs
        pid = owner_pid(stale.name)
        if pid is not None and not pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)


def _ensure_cached(
    source: Source, uri: ModelURI, res: Resolution, cache: Cache, workers: int | None, show_progress: bool | None
) -> tuple[dict[str, str], int, int]:
    """Make every resolved file present and verified in the cache.

    Returns path→sha256, the bytes downloaded and the connections used (``workers``: a fixed number, or None to
    let the engine find how many the link rewards).
    """
    where = _where(uri, res)
    location = f"{uri.scheme}://{uri.location}/{uri.container}"
    shas: dict[str, str] = {}
    for f in res.files:
        sha = f.sha256 or cache.sha_for_etag(location + "/" + _name(res, f), f.etag, f.size)
        if sha and cache.get(sha, f.size):
            shas[f.path] = sha
    todo = [f for f in res.files if f.path not in shas]
    if not todo:
        return shas, 0, 0
    total = sum(f.size for f in todo)
    cancel = threading.Event()
    jobs: list[_FileJob] = []

    def finish(job: _FileJob, sha: str) -> None:
        """Move a verified file into the cache at once: a killed or failed fetch keeps it."""
        job.close()
        cache.put(job.tmp, sha)
        cache.remember_etag(location + "/" + job.name, job.entry.etag, job.entry.size, sha)
        shas[job.entry.path] = sha

    try:
        for f in todo:
            tmp = cache.new_temp()
            try:
                jobs.append(_FileJob(f, _name(res, f), tmp))
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        log.info("downloading %d files (%d bytes) from %s", len(jobs), total, where)
        with Progress(total, f"fetch {res.version or uri.display}", show=show_progress) as bar:
            downloader = _Downloader(source, workers, bar, cancel, finish, where)
            downloader.run(jobs)
    finally:
        cancel.set()
        for job in jobs:
            job.close()
            job.tmp.unlink(missing_ok=True)
    return shas, total, downloader.connections


def _install(
    source: Source,
    uri: ModelURI,
    res: Resolution,
    dest: Path,
    cache: Cache,
    workers: int | None,
    show_progress: bool | None,
) -> FetchResult:
    current = _up_to_date(dest, res)
    if current is not None:
        log.info("%s already holds %s version %s", dest, res.uri, res.version)
        return FetchResult(current, dest, 0, 0, len(res.files), unchanged=True)
    cached_before = sum(1 for f in res.files if f.sha256 and cache.get(f.sha256, f.size))
    stage = _make_stage(dest)
    try:
        shas, downloaded, connections = _ensure_cached(source, uri, res, cache, workers, show_progress)
        # DEST's manifest names the files and their sha256s; chunk digests stay in the store's (they serve
        # fetching only, and DEST's manifest goes into image labels, which stay small).
        files = [replace(f, sha256=shas[f.path]).with_chunks(None, None) for f in res.files]
        manifest = Manifest.create(res.uri, res.version, files)
        for f in files:
            target = stage / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            cache.link(shas[f.path], target)
        manifest.write(stage / MANIFEST_NAME)
        _swap_into_place(stage, dest)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            e.filename = None  # a copy's error names its source in the cache; it is DEST's disk that is full
        raise _os_error(e, dest) from None
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    n_downloaded = len(res.files) - cached_before if downloaded else 0
    log.info("installed %s version %s in %s (%d bytes downloaded)", res.uri, res.version, dest, downloaded)
    return FetchResult(manifest, dest, n_downloaded, downloaded, len(res.files) - n_downloaded, connections=connections)


def _where(uri: ModelURI, res: Resolution) -> str:
    """The display URI that file paths are relative to in messages (a single-file URI names the file itself)."""
    if res.version is None and len(res.files) == 1 and _name(res, res.files[0]) == uri.prefix.strip("/"):
        return uri.display.split("?", 1)[0].rsplit("/", 1)[0]
    return uri.child(res.version or "")


def _name(res: Resolution, f: FileEntry) -> str:
    return f"{res.prefix}/{f.path}" if res.prefix else f.path


def _apply_lock(res: Resolution, lk: Lock) -> Resolution:
    """Fill in the lock's sha256s; fail saying what changed since the lock was written."""
    if res.version != lk.version:
        raise IntegrityError(f"lock pins version {lk.version!r} but the store resolved {res.version!r}")
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
) -> FetchResult:
    """Download a model into ``dest`` verified and atomically; files already cached are not downloaded again.

    ``workers``: parallel connections; None (the default) takes MODELSHIP_CONCURRENCY, else grows the number
    while throughput grows.
    """
    lk = Lock.load(lock) if isinstance(lock, (str, Path)) else lock
    if lk is not None:
        if version is not None and version != lk.version:
            raise UsageError(f"--version {version} contradicts the lock file, which pins {lk.version}")
        version, uri = lk.version, uri or lk.uri
    if not uri:
        raise UsageError("no model URI given (and no lock file to take it from)")
    _check_version(version)
    workers = concurrency_setting(workers)
    parsed = parse(uri)
    if lk is not None and parse(lk.uri).display.rstrip("/") != parsed.display.rstrip("/"):
        raise UsageError(f"the lock file is for {lk.uri}, not {parsed.display}")
    dest = Path(dest).absolute()
    try:
        _check_dest(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        cache = Cache(cache_dir)
        with _opened(parsed, credential) as source:
            return _fetch_attempts(source, parsed, version, pre, lk, dest, cache, workers, progress)
    except OSError as e:
        raise _os_error(e, dest) from None


def _fetch_attempts(
    source: Source,
    parsed: ModelURI,
    version: str | None,
    pre: bool,
    lk: Lock | None,
    dest: Path,
    cache: Cache,
    workers: int | None,
    progress: bool | None,
) -> FetchResult:
    """Resolve and install; a blob replaced mid-download gets one fresh resolve (a new latest may have landed)."""
    for attempt in (1, 2):
        res = retrying(f"resolving {parsed.display}", lambda: _resolve(source, parsed, version, pre))
        if lk is not None:
            res = _apply_lock(res, lk)
        try:
            return _install(source, parsed, res, dest, cache, workers, progress)
        except IntegrityError as e:
            if attempt == 2 or lk is not None or "changed while" not in str(e):
                raise
            log.warning("%s; resolving again", e)
    raise AssertionError("unreachable")


def lock(
    uri: str,
    *,
    version: str | None = None,
    pre: bool = False,
    output: str | Path | None = None,
    credential: Any = None,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
) -> Lock:
    """Pin the resolved version with every file's sha256 (hashing, via the cache, files published without one)."""
    _check_version(version)
    parsed = parse(uri)
    try:
        cache = Cache(cache_dir)
        with _opened(parsed, credential) as source:
            res = retrying(f"resolving {parsed.display}", lambda: _resolve(source, parsed, version, pre))
            if any(f.sha256 is None for f in res.files):
                shas, _, _ = _ensure_cached(source, parsed, res, cache, concurrency_setting(None), progress)
                # What was downloaded gets chunk digests too: a fetch from this lock then re-reads only a damaged
                # range, even from a store that has no digests of its own (plain https).
                res = replace(res, files=tuple(_with_sha(cache, f, shas[f.path]) for f in res.files))
        lk = Lock.from_resolution(res)
        if output:
            lk.write(output)
    except OSError as e:
        raise _os_error(e, Path(output or cache_dir or ".")) from None
    return lk


def _with_sha(cache: Cache, f: FileEntry, sha: str) -> FileEntry:
    if f.sha256 is None and f.chunks is None and (path := cache.get(sha, f.size)) is not None:
        return replace(f, sha256=sha).with_chunks(CHUNK_SIZE, chunk_digests(path, CHUNK_SIZE))
    return replace(f, sha256=sha)


def iter_sha256(paths: Iterable[Path]) -> Iterator[tuple[Path, str]]:
    """sha256 of local files, streamed (shared by publish and the plain-folder manifest)."""
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while data := f.read(1 << 20):
                h.update(data)
        yield p, h.hexdigest()
