"""Resolution: which version of the model at a URI (pinned, or the latest complete one), and locks that pin it.

A version is ``PREFIX/<version>/<files>``; "latest" is the highest PEP 440 version, then the newest. A version
counts only once its publish finished (``PENDING_MARKER`` gone or ``modelship.json`` present); a published
manifest is checked against what the store lists.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from ._connections import concurrency_setting
from ._download import ensure_cached
from ._fs import no_space, os_error
from ._hash import chunk_digests
from ._retry import retrying
from .cache import Cache
from .errors import IntegrityError, ModelshipError, NotFoundError, UsageError
from .manifest import CHUNK_SIZE, MANIFEST_NAME, FileEntry, Lock, Resolution, check_schema, chunks_from_json
from .modeldir import safe_relpath  # store names are checked as model folder names are
from .stores import open_source
from .stores.base import ArchiveStore, RemoteFile, Source
from .uri import ModelURI, parse

log = logging.getLogger("modelship")

PENDING_MARKER = ".modelship-publishing"  # written first by `modelship publish`, removed last


@dataclass(frozen=True)
class _Version:
    name: str
    files: list[RemoteFile]
    complete: bool  # False: a publish is under way or died half-way

    @property
    def last_modified(self) -> float:
        return max((f.last_modified.timestamp() for f in self.files if f.last_modified), default=0.0)


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
            if isinstance(doc, dict):
                check_schema(doc, f"{where}/{MANIFEST_NAME}")
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


def resolve_in(source: Source, uri: ModelURI, version: str | None, pre: bool) -> Resolution:
    if isinstance(source, ArchiveStore):  # versions are not folders of files there (oci:// tags)
        return source.resolve_version(version, pre)
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
        versions.append(_Version(name, files, MANIFEST_NAME in rels or PENDING_MARKER not in rels))
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


def check_version(version: str | None) -> None:
    if version is not None and (not version.strip() or "/" in version or version in (".", "..")):
        raise UsageError(
            f"invalid --version {version!r}: give a version name (e.g. 1.2.0), or leave it out for the latest"
        )


def resolve(uri: str, *, version: str | None = None, pre: bool = False, credential: Any = None) -> Resolution:
    """Find the model at ``uri``: the pinned ``version``, or the latest complete one."""
    check_version(version)
    parsed = parse(uri)
    with opened(parsed, credential) as source:
        return retrying(f"resolving {parsed.display}", lambda: resolve_in(source, parsed, version, pre))


@contextlib.contextmanager
def opened(uri: ModelURI, credential: Any) -> Iterator[Source]:
    source = open_source(uri, credential)
    try:
        yield source
    finally:
        source.close()


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
) -> Lock:
    """Pin the resolved version with every file's sha256 (hashing, via the cache, files published without one)."""
    check_version(version)
    parsed = parse(uri)
    try:
        cache = Cache(cache_dir)
        with opened(parsed, credential) as source:
            res = retrying(f"resolving {parsed.display}", lambda: resolve_in(source, parsed, version, pre))
            if any(f.sha256 is None for f in res.files):
                shas, _, _ = ensure_cached(source, parsed, res, cache, concurrency_setting(None), progress)
                # What was downloaded gets chunk digests too: a fetch from this lock then re-reads only a damaged
                # range, even from a store that has no digests of its own (plain https).
                res = replace(res, files=tuple(_with_sha(cache, f, shas[f.path]) for f in res.files))
        lk = Lock.from_resolution(res)
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
