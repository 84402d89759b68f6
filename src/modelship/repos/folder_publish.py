"""Publishing to a folder repository: upload a model folder as ``PREFIX/<version>/``, with sha256 metadata and a
completion manifest.

A version counts as published once its ``modelship.json`` is up. Until then its ``.modelship-publishing``
marker says who publishes which files (host, pid, the model's tree digest): a publish that was interrupted or
failed says what it left, and running the same command again resumes it (same files: only those not yet up
are uploaded); other files need ``--force``. Only the writes need permissions: the container is created only
when it is missing, and a credential that may not list or delete still publishes (a container SAS ``sp=cw``).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

from .. import modeldir
from .._connections import uploads
from .._fs import pid_alive
from .._hash import hash_file
from .._retry import Budget, retrying
from .._workers import Cancelled, for_each
from ..conventions import check_version
from ..errors import (
    AuthError,
    ChecksumError,
    ContainerNotFoundError,
    IntegrityError,
    ModelshipError,
    NotFoundError,
    TransientError,
    UsageError,
)
from ..manifest import CHUNK_SIZE, MANIFEST_NAME, SIGNATURE_NAME, FileEntry, Manifest, tree_digest
from ..modeldir import safe_relpath
from ..progress import Progress
from ..stores.base import RemoteFile, Source, join
from ..uri import ModelURI
from .base import PublishRequest, PublishResult

log = logging.getLogger("modelship")

PENDING_MARKER = ".modelship-publishing"  # written first by `modelship publish`, removed last

# Seconds to let upload threads notice an interrupt before leaving them behind: a thread between two progress
# callbacks (a 1 MiB local write, a block sent to a slow store) finishes its step and cleans up, so that the
# line the interrupt ends with counts what is really up; one stuck in a stalled write costs this once. On a
# failure the threads are drained (each stops at its next callback, raising _workers.Cancelled), for the same line.
GRACE = 2.0


def model_files(model_dir: Path) -> list[Path]:
    """The files of a model folder, sorted (see modelship.modeldir); our own manifest is regenerated, never copied."""
    if not model_dir.is_dir():
        raise UsageError(f"{model_dir} is not a folder; give the model folder to publish")
    files = [model_dir / rel for rel in modeldir.files(model_dir)]
    if not files:
        raise UsageError(f"{model_dir} holds no files to publish")
    return files


def _hashes(path: Path) -> tuple[str, bytes, tuple[str, ...]]:
    """sha256 (hex), md5 (raw, for Content-MD5) and the sha256 of every CHUNK_SIZE chunk, in one pass."""
    h = hash_file(path, md5=True, chunk_size=CHUNK_SIZE)
    assert h.md5 is not None
    return h.sha256.hexdigest(), h.md5.digest(), h.chunks()


class _State:
    """What this publish has put into the store so far, for the line an interrupt or a failure ends with."""

    def __init__(self, where: str, total: int):
        self.where, self.total = where, total
        self.sending_marker = self.marker = self.manifest = False
        self.up: set[str] = set()
        self._lock = threading.Lock()

    def done(self, rel: str) -> None:
        with self._lock:
            self.up.add(rel)

    def left(self, interrupted: bool = False) -> str | None:
        """What the store holds of this version now, and the way on; None when nothing was written.

        ``interrupted``: a write may have been cut at any point, the marker's too."""
        if self.manifest:
            return f"{self.where} is published (only its {PENDING_MARKER} marker may be left, which is harmless)"
        if not self.marker:
            if interrupted and self.sending_marker:
                return (
                    f"{self.where} may hold its {PENDING_MARKER} marker and no file (never picked as latest); "
                    "run the same command again to publish it"
                )
            return None
        return (
            f"{self.where} is left incomplete: {PENDING_MARKER} and {len(self.up)} of {self.total} files are up "
            "(an incomplete version is never picked as latest); run the same command again to resume it, "
            "or pass --force to start over"
        )


def _note(e: BaseException, text: str) -> None:
    """Attach ``text`` to an interrupt, for the CLI's last line (``add_note`` from Python 3.11)."""
    if hasattr(e, "add_note"):
        e.add_note(text)
    else:  # pragma: no cover - Python 3.10
        e.__notes__ = [*getattr(e, "__notes__", []), text]  # type: ignore[attr-defined]


def _read_marker(source: Source, f: RemoteFile) -> dict[str, Any] | None:
    """The marker an earlier publish left ({} when it cannot be read or is not ours; None when it changed since
    it was listed: another publish is writing it right now)."""
    try:
        data = retrying(f"reading {f.name}", lambda: b"".join(source.read(f.name, 0, f.size, f.etag)))
        doc = json.loads(data)
    except IntegrityError:
        return None
    except (ModelshipError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _listing(source: Source, root: str, where: str) -> dict[str, RemoteFile] | AuthError:
    """What the store holds under the version (name → file), creating a missing container first; the AuthError
    when the credential may not list (a write-only container SAS), for the caller to decide once a write worked."""
    try:
        return {f.name: f for f in retrying(f"listing {where}", lambda: list(source.list(root + "/")))}
    except ContainerNotFoundError as e:
        _create_container(source, e)
        return {}
    except AuthError as e:
        return e


def _create_container(source: Source, missing: ContainerNotFoundError) -> None:
    create = getattr(source, "create_container", None)  # stores with containers create them, as azcopy does
    if create is None:
        raise missing
    try:
        retrying(f"creating {missing.container}", create)
    except AuthError:
        raise NotFoundError(
            f"{missing.container} does not exist, and the credential may not create it: create the container "
            "first, or check the URI"
        ) from None
    log.info("created %s", missing.container)


def _write_marker(
    source: Source, name: str, marker: bytes, where: str, listed: dict[str, RemoteFile] | AuthError
) -> None:
    """Put up the marker, created only if there is none (or only if it is still the one listed), so that of two
    publishes of the same version one goes on and the other stops, saying why. Without a listing (a write-only
    credential) or a store without conditional writes, it is written as it is (the last writer wins)."""
    create = getattr(source, "create_bytes", None) if isinstance(listed, dict) else None
    replacing = listed.get(name) if isinstance(listed, dict) else None

    def put() -> bool:
        if create is None:
            source.write_bytes(name, marker)
            return True
        if create(name, marker, replacing=replacing.etag if replacing else None):
            return True
        # Perhaps ours: a retried write whose first attempt landed. Else another process's.
        for read in (1, 2):
            try:
                return b"".join(source.read(name, 0, len(marker), None)) == marker
            except (ChecksumError, IntegrityError):
                if read == 1:
                    continue  # damaged on the way back, perhaps: read it once more
            except TransientError:
                raise  # the whole put is tried again
            except ModelshipError:
                if [f.size for f in source.list(name) if f.name == name] != [0]:
                    return False  # gone meanwhile, or not readable
                break  # empty
        # Damaged or empty in the store: one of ours that the store kept although the write was cut or its bytes
        # were refused on the way (a whole marker of another publish reads back whole); nobody can use it.
        source.write_bytes(name, marker)
        return True

    try:
        put_up = retrying(f"uploading {PENDING_MARKER}", put)
    except ContainerNotFoundError as e:  # not listed before (no list permission): the first write finds out
        _create_container(source, e)
        put_up = retrying(f"uploading {PENDING_MARKER}", put)
    if not put_up:
        raise ModelshipError(
            f"{where} is being published by another process (its {PENDING_MARKER} marker appeared after this "
            "publish looked); wait for it to finish, then check with 'modelship resolve'"
        )


def publish_version(source: Source, parsed: ModelURI, req: PublishRequest) -> PublishResult:
    """Upload ``req.model_dir`` as ``URI/<version>/``; the version counts as published only once all files are up.
    With ``req.sign_key`` its OMS signature (``SIGNATURE_NAME``) goes up after the files, before the
    manifest: a complete version is a signed one.

    An interrupted or failed publish of the same files is resumed by calling this again (no ``force``).
    ``req.workers``: files uploaded at once; None (the default) takes MODELSHIP_CONCURRENCY, else 16 while the
    files are small and down to 4 for large ones (``_connections.uploads``).
    """
    version, force, progress, sign_key = req.version, req.force, req.progress, req.sign_key
    check_version(version)
    model_dir = Path(req.model_dir)
    key = None
    if sign_key is not None:  # a bad key or a clash: before any upload (cryptography is imported only here)
        from ..trust import certs, oms

        key = certs.load_signer(sign_key, req.sign_cert, req.cert_chain)
    files = model_files(model_dir)
    root = join(parsed.prefix.strip("/"), version)
    where = parsed.child(version)
    workers = uploads(req.workers, max(p.stat().st_size for p in files))  # the files at once (see _connections)
    rels = {p: safe_relpath(p.relative_to(model_dir).as_posix(), str(model_dir)) for p in files}
    if key is not None and SIGNATURE_NAME in rels.values():
        raise UsageError(f"{model_dir / SIGNATURE_NAME}: the signature's own name; remove it to sign {where}")
    cancel = threading.Event()
    hashes: dict[Path, tuple[str, bytes, tuple[str, ...]]] = {}
    # Hashed first: the marker records which files this publish is for, so that a re-run can resume it.
    hashed = lambda p: hashes.__setitem__(p, _hashes(p))  # noqa: E731
    for_each(hashed, files, workers, cancel, name="modelship-hash", grace=GRACE, drain=True)
    digest = tree_digest((rels[p], hashes[p][0]) for p in files)
    state = _State(where, len(files))
    existing = _listing(source, root, where)
    listed = existing if isinstance(existing, dict) else {}
    resume = _check_existing(source, root, where, listed, digest, force)
    marker = json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": _now(),
            "model_digest": digest,
            "publish_id": uuid.uuid4().hex,  # this publish's marker is unlike any other's, to tell whose it is
        }
    ).encode()
    try:
        state.sending_marker = True
        _write_marker(source, f"{root}/{PENDING_MARKER}", marker, where, existing)
        state.marker = True  # from here on the store holds something of this version
        if isinstance(existing, AuthError):  # a write-only credential (container SAS sp=cw)
            log.warning("cannot list %s with this credential: publishing without checking that it is new", where)
        if listed and not resume:  # --force: the old version goes
            stale = [n for n in listed if n != f"{root}/{PENDING_MARKER}"]
            retrying(f"deleting the old files of {where}", lambda: source.delete(stale))
        todo = []
        for p in files:
            have = listed.get(f"{root}/{rels[p]}") if resume else None
            if have is not None and have.size == p.stat().st_size and have.sha256 in (None, hashes[p][0]):
                state.done(rels[p])  # up since the interrupted run: a blob or file appears only whole
            else:
                todo.append(p)
        if resume:
            log.warning("resuming the publish of %s: %d of %d files are already up", where, len(state.up), len(files))
        _upload(source, root, todo, rels, hashes, state, workers, cancel, progress, version)
        entries = [
            FileEntry(rels[p], p.stat().st_size, hashes[p][0], chunk_size=CHUNK_SIZE, chunks=hashes[p][2])
            for p in files
        ]
        if key is not None:  # from the sha256s just computed: no file is read again
            name = parsed.prefix.strip("/").rsplit("/", 1)[-1] or "model"
            sig = oms.sign({e.path: e.sha256 for e in entries if e.sha256}, key, name)
            up = f"{root}/{SIGNATURE_NAME}"
            retrying(f"uploading {SIGNATURE_NAME}", lambda: source.write_bytes(up, sig), cancel)
        manifest = Manifest.create(parsed.display, version, entries)
        doc = manifest.to_json().encode()
        retrying(f"uploading {MANIFEST_NAME}", lambda: source.write_bytes(f"{root}/{MANIFEST_NAME}", doc), cancel)
        state.manifest = True
        try:
            retrying(f"deleting {PENDING_MARKER}", lambda: source.delete([f"{root}/{PENDING_MARKER}"]), cancel)
        except AuthError as e:
            # A container SAS without 'd': the manifest already marks the version complete.
            log.info(
                "left %s in %s (%s); the version is complete, its %s is up", PENDING_MARKER, where, e, MANIFEST_NAME
            )
    except ModelshipError as e:
        left = state.left()
        if left:
            e.args = (f"{e}; {left}",)
        raise
    except BaseException as e:  # KeyboardInterrupt, the CLI's SIGTERM: say what is left in the store
        cancel.set()
        left = state.left(interrupted=True)
        if left and not isinstance(e, Exception):
            _note(e, left)
        raise
    total = sum(p.stat().st_size for p in files)
    log.info("published %d files (%d bytes) as %s", len(files), total, where)
    return PublishResult(manifest, where, sum(p.stat().st_size for p in todo))


def _check_existing(
    source: Source, root: str, where: str, listed: dict[str, RemoteFile], digest: str, force: bool
) -> bool:
    """Whether to resume an interrupted publish of the same files; raises when the version must not be touched."""
    if not listed or force:
        return False
    if f"{root}/{MANIFEST_NAME}" in listed:
        raise ModelshipError(f"{where} already exists; publish a new version, or pass --force to replace it")
    pending = listed.get(f"{root}/{PENDING_MARKER}")
    if pending is None:  # files but no marker and no manifest: uploaded by another tool
        raise ModelshipError(f"{where} already exists; publish a new version, or pass --force to replace it")
    theirs = _read_marker(source, pending)
    if theirs is None:
        raise ModelshipError(
            f"{where} is being published by another process (its {PENDING_MARKER} marker changed while this "
            "publish read it); wait for it to finish, then check with 'modelship resolve'"
        )
    if theirs.get("model_digest") != digest:
        raise ModelshipError(
            f"{where} is incomplete (a publish died half-way or is still running); pass --force to replace it "
            "(its marker is for other files than these)"
        )
    pid = theirs.get("pid")
    if theirs.get("host") == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
        raise ModelshipError(f"{where} is being published right now by process {pid} on this machine; wait for it")
    return True


def _upload(
    source: Source,
    root: str,
    todo: list[Path],
    rels: dict[Path, str],
    hashes: dict[Path, tuple[str, bytes, tuple[str, ...]]],
    state: _State,
    workers: int,
    cancel: threading.Event,
    show: bool | None,
    version: str,
) -> None:
    total = sum(p.stat().st_size for p in todo)
    with Progress(total, f"publish {version}", show=show) as bar:

        def upload(p: Path) -> None:
            sha, md5, _ = hashes[p]
            size, sent = p.stat().st_size, [0]
            budget = Budget(f"uploading {rels[p]}")

            def count(n: int) -> None:
                if cancel.is_set() and sent[0] + n < size:  # the last callback may come once the file is up
                    raise Cancelled
                sent[0] += n
                bar.update(n)
                budget.progress()

            def attempt() -> None:
                bar.update(-sent[0])  # a retried upload starts from zero
                sent[0] = 0
                source.write(f"{root}/{rels[p]}", p, sha256=sha, md5=md5, progress=count)

            retrying(f"uploading {rels[p]}", attempt, cancel, budget=budget)
            state.done(rels[p])

        abandon = getattr(source, "abandon", None)
        for_each(upload, todo, workers, cancel, name="modelship-publish", grace=GRACE, drain=True, abandon=abandon)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
