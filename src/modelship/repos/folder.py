"""Folder repositories: a version is ``PREFIX/<version>/<files>`` on any byte store (``stores.base.Source``).

"Latest" is the highest PEP 440 version, then the newest. A version counts only once its publish finished
(``PENDING_MARKER`` gone or ``modelship.json`` present); a published manifest is checked against what the store
lists. Fetch reads files by name in ranges (``_download``); publish is ``repos.folder_publish``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

from .._download import ensure_cached
from .._retry import retrying
from ..errors import AuthError, IntegrityError, ModelshipError, NotFoundError, UsageError
from ..manifest import MANIFEST_NAME, SIGNATURE_NAME, FileEntry, Lock, Resolution, check_schema, chunks_from_json
from ..modeldir import safe_relpath
from ..stores.base import RemoteFile, Source, join
from ..uri import ModelURI
from .base import Fetched, PublishRequest, PublishResult, SignatureWritten
from .folder_publish import PENDING_MARKER, publish_version

if TYPE_CHECKING:
    from ..cache import Cache

log = logging.getLogger("modelship")


class FolderRepository:
    """Versions as folders of files on ``source`` (``repos.base.Repository``)."""

    def __init__(self, source: Source):
        self.source, self.uri = source, source.uri
        self.display = source.uri.display

    def resolve(
        self, version: str | None, pre: bool, lock: Lock | None = None, exclude: frozenset[str] = frozenset()
    ) -> Resolution:
        try:
            return resolve_in(self.source, self.uri, version, pre, exclude)
        except AuthError as e:
            if lock is None:
                raise
            # a read-only credential (container SAS sp=r) may not list: the lock names every file to read
            log.warning("%s; reading the %d files the lock names", e, len(lock.files))
            return from_lock(self.uri, lock)

    def fetch(self, res: Resolution, cache: Cache, *, workers: int | None, progress: bool | None) -> Fetched:
        shas, downloaded, connections = ensure_cached(self.source, self.uri, res, cache, workers, progress)
        return Fetched(shas, downloaded, connections)

    def publish(self, req: PublishRequest) -> PublishResult:
        if req.image_model_dir is not None:
            raise UsageError(f"--image-dir is for model images (oci://), not {self.display}")
        return publish_version(self.source, self.uri, req)

    def signature(self, res: Resolution) -> bytes | None:
        name = join(res.prefix, SIGNATURE_NAME)
        for f in self.source.list(name):  # a prefix listing: model.sig.bak would match too
            if f.name == name:
                return _read_small(source=self.source, f=f)
        return None

    def write_signature(self, res: Resolution, bundle: bytes) -> SignatureWritten:
        name = join(res.prefix, SIGNATURE_NAME)
        retrying(f"uploading {SIGNATURE_NAME}", lambda: self.source.write_bytes(name, bundle))
        where = f"{self.uri.child(res.version)}/{SIGNATURE_NAME}" if res.version else f"{res.uri}/{SIGNATURE_NAME}"
        return SignatureWritten(where)

    def close(self) -> None:
        self.source.close()


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
    signature = by_rel.pop(SIGNATURE_NAME, None)  # the version's model signature (trust.oms), not a model file
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
        if signature is not None and SIGNATURE_NAME in expected:  # published unsigned, with a file of that name
            by_rel[SIGNATURE_NAME] = signature
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


def from_lock(uri: ModelURI, lock: Lock) -> Resolution:
    """The resolution ``lock`` pins, without asking the store (its files are checked against the lock as read)."""
    base = uri.prefix.strip("/")
    root = f"{base}/{lock.version}" if base and lock.version else lock.version or base
    where = uri.child(lock.version or "")
    files = tuple(replace(f, path=safe_relpath(f.path, where)) for f in lock.files)
    if lock.version is None and len(files) == 1 and (base == files[0].path or base.endswith("/" + files[0].path)):
        root = base.rsplit("/", 1)[0] if "/" in base else ""  # the URI names the one file
    return Resolution(uri.display, lock.version, files, prefix=root)


def resolve_in(
    source: Source, uri: ModelURI, version: str | None, pre: bool, exclude: frozenset[str] = frozenset()
) -> Resolution:
    """The pinned ``version`` below ``uri``'s prefix, or the latest complete one; or the unversioned model there."""
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
        complete = [v for v in versions if v.complete and v.name not in exclude]
        if not complete:
            raise NotFoundError(f"no complete model version at {uri.display} ({len(versions)} still being published)")
        chosen = _pick_latest(complete, pre)
    root = f"{base}/{chosen.name}" if base else chosen.name
    return Resolution(uri.display, chosen.name, _entries(source, uri, root, chosen.files, chosen.name), prefix=root)
