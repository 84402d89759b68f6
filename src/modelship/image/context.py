"""The build context, written as a reproducible tar: the same inputs give the same bytes on any machine.

Layout (paths inside the context; docs/layers.md is the contract):

    .modelship/Dockerfile        generated from Dockerfile.template, or the user's --dockerfile
    .modelship/wheels/           host-resolved wheelhouse + requirements.txt pinning exactly those wheels
  generated Dockerfile (each tree is copied to / so every directory entry in the layer comes from here):
    .modelship/model-rootfs/opt/modelship/model/   the model files + modelship.json (without fetched_at)
    .modelship/app-rootfs/app/                     APP_DIR minus .dockerignore'd files
  --dockerfile (as `docker build APP_DIR` would see it, plus modelship's directory):
    .modelship/model/            the model files + modelship.json (without fetched_at)
    <root>                       APP_DIR minus .dockerignore'd files

Every entry is written with a fixed mtime, uid/gid 0, no user/group names, and normalised modes (0755 for
directories and executables, 0644 otherwise), in sorted order: Docker's COPY keeps those attributes, so
the model layer is byte-identical for an identical model and its cache key matches across machines.
(A COPY into a directory stamps that directory with the build time; copying a whole tree to ``/`` instead
leaves no directory entry in the layer that did not come from this tar.)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from .._fs import write_atomic
from .._hash import HashingReader, sha256_file
from ..cache import default_root
from ..errors import IntegrityError, UsageError
from ..manifest import MANIFEST_NAME, FileEntry, Manifest

CONTEXT_DIR = ".modelship"
DOCKERFILE_PATH = f"{CONTEXT_DIR}/Dockerfile"
MODEL_PATH = f"{CONTEXT_DIR}/model"
WHEELS_PATH = f"{CONTEXT_DIR}/wheels"
MODEL_ROOTFS = f"{CONTEXT_DIR}/model-rootfs"
APP_ROOTFS = f"{CONTEXT_DIR}/app-rootfs"
# 1980-01-01T00:00:00Z: the oldest time zip (and so wheels and many tools) can represent; any constant would
# do for reproducibility, this one avoids surprises in tools that choke on the Unix epoch.
FIXED_MTIME = 315532800
# Never part of the app's code layer: VCS data (may hold credentials in remote URLs), bytecode caches
# (differ per machine and would bust the cache), and modelship's own context directory.
DEFAULT_EXCLUDES = [".git", "**/__pycache__", "**/*.pyc", CONTEXT_DIR]
_CHUNK = 1024 * 1024
log = logging.getLogger("modelship")


def stat_signature(path: Path) -> str:
    """What changes when a file is rewritten or replaced: size, mtime, inode, ctime."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path}\0missing\n"
    return f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_ctime_ns}\n"


def model_manifest(model_dir: Path) -> Manifest:
    """The manifest written by ``modelship fetch``, or one computed from a plain folder (sha256 of every file).

    For a plain folder the hashes are remembered by stat signature in the modelship cache, so rebuilding
    with an unchanged multi-GB folder does not read it again.
    """
    if not model_dir.is_dir():
        raise UsageError(f"model directory {model_dir} does not exist or is not a directory")
    path = model_dir / MANIFEST_NAME
    if path.is_file():
        return Manifest.load(path)
    memo_file = (
        default_root() / "build" / "hashes" / (hashlib.sha256(str(model_dir).encode()).hexdigest()[:32] + ".json")
    )
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    entries, fresh = [], {}
    files = _walk_files(model_dir)
    if files:
        # not what fetch wrote: the image gets an unversioned model named by its folder; say so, never "?"
        log.warning(
            "no %s in %s (not written by modelship fetch): hashing %d file(s) as an unversioned model",
            MANIFEST_NAME,
            model_dir,
            len(files),
        )
    for rel in files:
        full = model_dir / rel
        sig = stat_signature(full)
        known = memo.get(rel)
        sha = known[1] if isinstance(known, list) and len(known) == 2 and known[0] == sig else sha256_file(full)
        fresh[rel] = [sig, sha]
        entries.append(FileEntry(rel, full.stat().st_size, sha))
    if not entries:
        raise UsageError(f"model directory {model_dir} is empty; fetch a model into it first (modelship fetch)")
    if fresh != memo:
        write_atomic(memo_file, json.dumps(fresh), durable=False)
    return Manifest.create(f"file://{model_dir}", None, entries, stamp=False)


def _walk_files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if rel != MANIFEST_NAME:
                out.append(rel)
    return sorted(out)


def dockerignore_patterns(app_dir: Path) -> list[str]:
    """Patterns of APP_DIR/.dockerignore, read the way the docker CLI reads them."""
    path = app_dir / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def app_files(app_dir: Path, *, skip: Iterable[Path] = ()) -> list[str]:
    """Relative paths (files, dirs, symlinks) of APP_DIR that go into the image, honouring .dockerignore."""
    from docker.utils.build import PatternMatcher

    matcher = PatternMatcher(DEFAULT_EXCLUDES + dockerignore_patterns(app_dir))
    skipped = []
    for p in skip:
        try:
            skipped.append(p.resolve().relative_to(app_dir.resolve()).as_posix())
        except ValueError:
            continue  # not inside APP_DIR
    out = []
    for rel in matcher.walk(str(app_dir)):
        rel = rel.replace(os.sep, "/")
        if rel == ".dockerignore" or any(rel == s or rel.startswith(s + "/") for s in skipped):
            continue
        out.append(rel)
    return sorted(out)


class ContextWriter:
    """Collects normalised entries, then writes them sorted by name; parents are added implicitly."""

    def __init__(self, fileobj: BinaryIO):
        self._fileobj = fileobj
        # name -> (tar type, mode, payload): payload is bytes, a Path to read, or a symlink target
        self._entries: dict[str, tuple[bytes, int, object, FileEntry | None]] = {}

    def _add(self, name: str, kind: bytes, mode: int, payload: object = None, expect: FileEntry | None = None) -> None:
        name = name.strip("/")
        parent = name.rpartition("/")[0]
        if parent and parent not in self._entries:
            self.dir(parent)
        self._entries[name] = (kind, mode, payload, expect)

    def dir(self, name: str) -> None:
        if name.strip("/") and name.strip("/") not in self._entries:
            self._add(name, tarfile.DIRTYPE, 0o755)

    def bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._add(name, tarfile.REGTYPE, mode, data)

    def file(self, name: str, path: Path, *, executable: bool | None = None, expect: FileEntry | None = None) -> None:
        """The content of ``path`` (symlinks followed); with ``expect``, its size and sha256 are verified."""
        if executable is None:
            executable = bool(path.stat().st_mode & 0o111)
        self._add(name, tarfile.REGTYPE, 0o755 if executable else 0o644, path, expect)

    def symlink(self, name: str, target: str) -> None:
        self._add(name, tarfile.SYMTYPE, 0o777, target)

    @staticmethod
    def _info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.mtime = kind, mode, size, FIXED_MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def close(self) -> None:
        """Write every entry in sorted order (parents sort before their children)."""
        # copybufsize: the 16 KiB default makes copying a multi-GB model noticeably slower
        with tarfile.open(fileobj=self._fileobj, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_CHUNK) as tar:
            for name in sorted(self._entries):
                kind, mode, payload, expect = self._entries[name]
                if kind == tarfile.DIRTYPE:
                    tar.addfile(self._info(name, kind, mode))
                elif kind == tarfile.SYMTYPE:
                    info = self._info(name, kind, mode)
                    info.linkname = str(payload)
                    tar.addfile(info)
                elif isinstance(payload, bytes):
                    tar.addfile(self._info(name, kind, mode, len(payload)), io.BytesIO(payload))
                else:
                    _add_file(tar, self._info(name, kind, mode), Path(str(payload)), expect)


def _add_file(tar: tarfile.TarFile, info: tarfile.TarInfo, path: Path, expect: FileEntry | None) -> None:
    with open(path, "rb") as f:
        info.size = os.fstat(f.fileno()).st_size
        if expect is not None and info.size != expect.size:
            raise IntegrityError(f"{path}: {info.size} bytes but the manifest says {expect.size}; re-fetch the model")
        reader = HashingReader(f) if expect is not None else None
        tar.addfile(info, reader or f)  # type: ignore[arg-type]
    if reader is not None and expect is not None and reader.hexdigest() != expect.sha256:
        raise IntegrityError(f"{path}: sha256 does not match the manifest; the file changed, re-fetch the model")


def add_model(w: ContextWriter, model_dir: Path, manifest: Manifest, prefix: str = MODEL_PATH) -> int:
    """Model files listed in the manifest (verified) + modelship.json without fetched_at, under ``prefix``."""
    entries = {f.path: f for f in manifest.files}
    files = {**{p: ("file", f) for p, f in entries.items()}, MANIFEST_NAME: ("manifest", None)}
    extra = [p for p in _walk_files(model_dir) if p not in entries]
    if extra:
        print(
            f"modelship: {len(extra)} file(s) in {model_dir} not in its manifest left out of the image "
            f"(e.g. {extra[0]})",
            file=sys.stderr,
        )
    total = 0
    w.dir(prefix)
    for rel in sorted(files):
        kind, entry = files[rel]
        name = f"{prefix}/{rel}"
        if kind == "manifest":
            w.bytes(name, manifest.without_timestamp().to_json().encode())
            continue
        path = model_dir / rel
        if not path.is_file():
            raise IntegrityError(f"{path}: listed in the manifest but missing; re-fetch the model")
        w.file(name, path, executable=False, expect=entry)  # type: ignore[arg-type]
        total += entry.size  # type: ignore[union-attr]
    return total


def add_app(w: ContextWriter, app_dir: Path, prefix: str, files: list[str]) -> None:
    """APP_DIR's files under ``prefix`` ("" = context root); symlinks kept as symlinks, like docker build."""
    if prefix:
        w.dir(prefix)
    for rel in files:
        full = app_dir / rel
        name = f"{prefix}/{rel}" if prefix else rel
        st = full.lstat()
        if stat.S_ISLNK(st.st_mode):
            w.symlink(name, os.readlink(full))
        elif stat.S_ISDIR(st.st_mode):
            w.dir(name)
        elif stat.S_ISREG(st.st_mode):
            w.file(name, full)
        # sockets, fifos and devices have no place in an image


def add_wheels(w: ContextWriter, wheel_dir: Path) -> None:
    w.dir(WHEELS_PATH)
    for p in sorted(wheel_dir.iterdir()):
        if p.is_file():
            w.file(f"{WHEELS_PATH}/{p.name}", p, executable=False)
