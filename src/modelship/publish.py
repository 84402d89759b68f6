"""publish: upload a model folder as a new version, with sha256 metadata and a completion manifest."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .errors import ModelshipError, UsageError
from .fetch import PENDING_MARKER, _opened, retrying, safe_relpath
from .manifest import CHUNK_SIZE, MANIFEST_NAME, FileEntry, Manifest, file_digests
from .progress import Progress
from .sources.base import join
from .uri import parse

log = logging.getLogger("modelship")


def model_files(model_dir: Path) -> list[Path]:
    """The files of a model folder, sorted; our own manifest is regenerated, never copied."""
    if not model_dir.is_dir():
        raise UsageError(f"{model_dir} is not a folder; give the model folder to publish")
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.is_symlink())
    files = [p for p in files if p.relative_to(model_dir).as_posix() != MANIFEST_NAME]
    if not files:
        raise UsageError(f"{model_dir} holds no files to publish")
    return files


def hash_file(path: Path) -> tuple[str, bytes, tuple[str, ...]]:
    """sha256 (hex), md5 (raw) and the sha256 of every CHUNK_SIZE chunk, in one pass."""
    return file_digests(path, CHUNK_SIZE)


def publish(
    model_dir: str | Path,
    uri: str,
    *,
    version: str,
    force: bool = False,
    credential: Any = None,
    workers: int = 4,
    progress: bool | None = None,
) -> Manifest:
    """Upload ``model_dir`` as ``URI/<version>/``; the version counts as published only once all files are up."""
    if not version or "/" in version or version in (".", "..") or version != version.strip():
        raise UsageError(f"invalid version {version!r}: give a non-empty name without '/' (e.g. 1.2.0)")
    model_dir = Path(model_dir)
    files = model_files(model_dir)
    parsed = parse(uri)
    root = join(parsed.prefix.strip("/"), version)
    where = parsed.child(version)
    for p in files:
        safe_relpath(p.relative_to(model_dir).as_posix(), str(model_dir))
    with _opened(parsed, credential) as source:
        create = getattr(source, "create_container", None)
        if create:  # stores with containers/buckets create them on first publish, like azcopy does
            retrying(f"creating the container of {where}", create)
        existing = retrying(f"listing {where}", lambda: [f.name for f in source.list(root + "/")])
        if existing and not force:
            names = {n.rsplit("/", 1)[-1] for n in existing}
            if PENDING_MARKER in names and MANIFEST_NAME not in names:
                raise ModelshipError(
                    f"{where} is incomplete (a publish died half-way or is still running); pass --force to replace it"
                )
            raise ModelshipError(f"{where} already exists; publish a new version, or pass --force to replace it")
        # The marker goes first: until the manifest lands, resolvers skip this version as incomplete.
        marker = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started_at": _now()}).encode()
        retrying(f"uploading {PENDING_MARKER}", lambda: source.write_bytes(f"{root}/{PENDING_MARKER}", marker))
        if existing:
            stale = [n for n in existing if not n.endswith("/" + PENDING_MARKER)]
            retrying(f"deleting the old files of {where}", lambda: source.delete(stale))
        with ThreadPoolExecutor(workers) as pool:
            hashes = dict(zip(files, pool.map(hash_file, files), strict=True))
        total = sum(p.stat().st_size for p in files)
        with Progress(total, f"publish {version}", show=progress) as bar:

            def upload(p: Path) -> None:
                sha, md5, _ = hashes[p]
                rel = p.relative_to(model_dir).as_posix()
                sent = [0]

                def count(n: int) -> None:
                    sent[0] += n
                    bar.update(n)

                def attempt() -> None:
                    bar.update(-sent[0])  # a retried upload starts from zero
                    sent[0] = 0
                    source.write(f"{root}/{rel}", p, sha256=sha, md5=md5, progress=count)

                retrying(f"uploading {rel}", attempt)

            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(upload, files))
        entries = [
            FileEntry(
                p.relative_to(model_dir).as_posix(),
                p.stat().st_size,
                hashes[p][0],
                chunk_size=CHUNK_SIZE,
                chunks=hashes[p][2],
            )
            for p in files
        ]
        manifest = Manifest.create(parsed.display, version, entries)
        doc = manifest.to_json().encode()
        retrying(f"uploading {MANIFEST_NAME}", lambda: source.write_bytes(f"{root}/{MANIFEST_NAME}", doc))
        retrying(f"deleting {PENDING_MARKER}", lambda: source.delete([f"{root}/{PENDING_MARKER}"]))
    log.info("published %d files (%d bytes) as %s", len(files), total, where)
    return manifest


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
