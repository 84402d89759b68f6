"""The one way to read a model folder: walk it, check every name, read or compute its manifest.

Every verb that takes a local model folder (``publish``, ``build --model``, ``assemble --model``, a model
image ``publish``) reads it through here, so they all take the same folders and refuse the same ones:

- **Names** are safe relative paths (``safe_relpath``), those found on disk and those listed in the folder's
  ``modelship.json`` alike: a manifest entry ``../secret.txt`` is refused, never read.
- **Regular files only.** A FIFO, socket or device file is refused by name (reading one could hang forever).
- **Symlinks are followed when they stay inside the folder**, or, for a Hugging Face cache snapshot
  (``models--ORG--NAME/snapshots/REV/``, every file a link into ``../../blobs/``), into that cache's
  ``blobs/``. A link that leads anywhere else, a broken link and a link loop are refused by name: the
  folder must hold the model, not point at the rest of the disk.

A folder written by ``modelship fetch`` has a ``modelship.json`` (the manifest); for a plain folder one is
computed (sha256 of every file), its hashes remembered by stat signature in the modelship cache so an
unchanged multi-GB folder is not read again.

- **``model.sig``** at the top (the OMS signature ``fetch --verify-key`` writes, ``signature()``) is the
  version's signature, not a model file: like ``modelship.json`` it is in no manifest and never "unlisted".
  It is read only as a regular file in the folder, never through a symlink (a link could name another
  model's signature, or a file outside the folder, and carry that into an image as this model's).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ._fs import write_atomic
from ._hash import sha256_file
from ._workers import collect
from .errors import IntegrityError, SignatureError, UsageError
from .manifest import MANIFEST_NAME, MAX_SIGNATURE_BYTES, SIGNATURE_NAME, FileEntry, Manifest

_HASH_THREADS = 4
log = logging.getLogger("modelship")
_HF_SNAPSHOTS, _HF_BLOBS = "snapshots", "blobs"


def safe_relpath(rel: str, where: str) -> str:
    """Refuse names that could escape the destination folder (store names and manifest entries are untrusted)."""
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


def _allowed(real_root: Path) -> tuple[Path, ...]:
    """Where a followed symlink may lead: the folder itself, and a Hugging Face cache's ``blobs/``."""
    for parent in real_root.parents:
        if parent.name == _HF_SNAPSHOTS and (parent.parent / _HF_BLOBS).is_dir():
            return real_root, (parent.parent / _HF_BLOBS).resolve()
    return (real_root,)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


_ADVICE = "a model folder holds regular files, folders and symlinks that stay inside it"


def _check(path: Path, allowed: tuple[Path, ...]) -> os.stat_result | str:
    """The stat of what PATH leads to, or why it is refused (a link out of ALLOWED, broken, a loop)."""
    try:
        target = path.resolve(strict=True)
        if not any(target == a or a in target.parents for a in allowed):
            return f"is a symlink to {target}, outside the model folder"
        return target.stat()
    except RuntimeError:  # Python < 3.13: resolve() of a loop
        return "is a symlink loop"
    except FileNotFoundError:
        return "is a broken symlink" if path.is_symlink() else "is missing"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symlink loop"
        return f"cannot be read ({e.strerror or e})"


def _walk(root: Path) -> Iterator[tuple[str, str | None]]:
    """(name, None) for every regular file below ROOT, sorted; (name, why) for every entry refused."""
    real_root = root.resolve()
    allowed = _allowed(real_root)

    def visit(folder: Path, prefix: str, above: frozenset[tuple[int, int]]) -> Iterator[tuple[str, str | None]]:
        try:
            names = sorted(os.listdir(folder))
        except OSError as e:
            yield prefix.rstrip("/") or ".", f"cannot be listed ({e.strerror or e})"
            return
        for name in names:
            rel, path = prefix + name, folder / name
            st = _check_one(path, allowed)
            if isinstance(st, str):
                yield rel, st
            elif stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in above:
                    yield rel, "is a symlink loop (a link to a folder above it)"
                else:
                    yield from visit(path, rel + "/", above | {key})
            elif stat.S_ISREG(st.st_mode):
                yield rel, None
            else:
                yield rel, f"is {_kind(st.st_mode)}"

    st = root.stat()
    for rel, why in visit(root, "", frozenset({(st.st_dev, st.st_ino)})):
        if rel != MANIFEST_NAME:
            yield rel, why


def _check_one(path: Path, allowed: tuple[Path, ...]) -> os.stat_result | str:
    # the walk reaches PATH through folders already checked: only PATH itself may be a new link
    try:
        if not path.is_symlink():
            return path.stat()
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return _check(path, allowed)


def _folder(root: Path) -> Path:
    if not root.is_dir():
        raise UsageError(f"model folder {root} does not exist or is not a folder")
    return root


def files(root: Path) -> list[str]:
    """The names (relative, ``/``-separated, sorted) of the model files in ROOT; its own modelship.json is
    left out (it is regenerated, never copied). Any entry the rules above refuse is a UsageError naming it."""
    out = []
    for rel, why in _walk(_folder(root)):
        if why is not None:
            raise UsageError(f"{root / rel} {why}; {_ADVICE}")
        out.append(safe_relpath(rel, str(root)))
    return out


def unlisted(root: Path, manifest: Manifest) -> list[str]:
    """Names in ROOT that MANIFEST does not list (what a build leaves out); never raises for odd entries."""
    listed = {f.path for f in manifest.files} | {SIGNATURE_NAME}
    return [rel for rel, _ in _walk(root) if rel not in listed]


def path_of(root: Path, rel: str) -> Path:
    """The file to read for REL, a name listed in ROOT's manifest: a safe name, a regular file, and no link
    out of the folder on the way. Missing is an IntegrityError (re-fetch); anything else a UsageError."""
    path = root / safe_relpath(rel, str(root / MANIFEST_NAME))
    st = _check(path, _allowed(root.resolve()))
    if st == "is missing" or st == "is a broken symlink":
        raise IntegrityError(f"{path}: listed in the manifest but missing; re-fetch the model")
    if isinstance(st, str):
        raise UsageError(f"{path} {st}; {_ADVICE}")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path} is {_kind(st.st_mode)}; {_ADVICE}")
    return path


def read_manifest(root: Path) -> Manifest | None:
    """ROOT's ``modelship.json`` (None without one), every listed name checked to be a safe relative path."""
    path = _folder(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    manifest = Manifest.load(path)
    for f in manifest.files:
        try:
            safe_relpath(f.path, str(path))
        except IntegrityError:
            raise UsageError(
                f"{path}: file path {f.path[:200]!r} is not a plain relative path; re-fetch the model"
            ) from None
    return manifest


def stat_signature(path: Path) -> str:
    """What changes when a file is rewritten or replaced: size, mtime, inode, ctime."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path}\0missing\n"
    return f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_ctime_ns}\n"


def _memo_file(root: Path) -> Path:
    from .cache import default_root

    return default_root() / "build" / "hashes" / (hashlib.sha256(str(root).encode()).hexdigest()[:32] + ".json")


def compute_manifest(root: Path, uri: str | None = None, version: str | None = None) -> Manifest:
    """A manifest of ROOT's files as they are now (sha256 of each; unchanged files by their remembered hash).

    ``uri`` defaults to ``file://ROOT``; no ``fetched_at``. An empty folder is a UsageError.
    """
    names = files(root)
    if not names:
        raise UsageError(f"model folder {root} is empty; put the model's files in it (or modelship fetch one)")
    memo_file = _memo_file(root)
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}

    def one(rel: str) -> tuple[str, int, str]:
        full = root / rel
        sig = stat_signature(full)
        known = memo.get(rel) if isinstance(memo, dict) else None
        ok = isinstance(known, list) and len(known) == 2 and known[0] == sig
        return sig, full.stat().st_size, known[1] if ok else sha256_file(full)

    done = collect(one, names, _HASH_THREADS, name="modelship-hash")  # Ctrl-C does not wait for a big file
    fresh = {rel: [sig, sha] for rel, (sig, _, sha) in zip(names, done, strict=True)}
    if fresh != memo:
        write_atomic(memo_file, json.dumps(fresh), durable=False)  # a cache: losing it costs a re-hash
    entries = [FileEntry(rel, size, sha) for rel, (_, size, sha) in zip(names, done, strict=True)]
    return Manifest.create(uri or f"file://{root}", version, entries, stamp=False)


def signature(root: Path) -> bytes | None:
    """ROOT's ``model.sig`` (None without one): read from a regular file in the folder, never through a
    symlink; anything else is a SignatureError (malformed) naming it, in one line."""
    path = root / SIGNATURE_NAME

    def refuse(why: str) -> SignatureError:
        return SignatureError(f"{path}: {why}", kind=SignatureError.MALFORMED)

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        if path.is_symlink():  # a broken link: still not ours to follow
            raise refuse(_SYMLINKED) from None
        return None
    except OSError as e:
        if e.errno == errno.ELOOP or path.is_symlink():
            raise refuse(_SYMLINKED) from None
        raise refuse(f"cannot be read ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"is {_kind(st.st_mode)}; a signature is a regular file")
        data = f.read(MAX_SIGNATURE_BYTES + 1)
    if len(data) > MAX_SIGNATURE_BYTES:
        raise refuse(f"not a model signature (larger than {MAX_SIGNATURE_BYTES} bytes)")
    return data


_SYMLINKED = (
    "is a symlink; a model's signature is read only from a regular file in its folder (a link could name "
    "another model's signature, or a file outside the folder, and carry it into the image as this model's)"
)


def model_manifest(root: Path) -> Manifest:
    """ROOT's ``modelship.json`` (written by ``modelship fetch``), else one computed from its files: a plain
    folder is an unversioned model named ``file://ROOT`` (logged as a warning, never a guess). Its
    ``model.sig`` is not a model file of either (see ``signature``)."""
    manifest = read_manifest(root)
    if manifest is not None:
        return manifest
    manifest = compute_manifest(root)
    if any(f.path == SIGNATURE_NAME for f in manifest.files):
        kept = [f for f in manifest.files if f.path != SIGNATURE_NAME]
        if not kept:
            raise UsageError(f"model folder {root} holds only {SIGNATURE_NAME}; put the model's files in it")
        manifest = Manifest.create(manifest.uri, manifest.version, kept, stamp=False)
    log.warning(
        "no %s in %s (not written by modelship fetch): hashing %d file(s) as an unversioned model",
        MANIFEST_NAME,
        root,
        len(manifest.files),
    )
    return manifest
