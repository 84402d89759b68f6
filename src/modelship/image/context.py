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

import io
import logging
import os
import stat
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from .. import modeldir
from .._hash import HashingReader
from ..errors import IntegrityError
from ..manifest import MANIFEST_NAME, SIGNATURE_NAME, FileEntry, Manifest

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
# Files that hold credentials by convention (what docker's and BentoML's users put in their ignore files):
# left out of the app layer by default, each one named on stderr. A .dockerignore '!' line or
# [tool.modelship] include puts one back; an image should get its secrets at run time, not in a layer.
SECRET_EXCLUDES = [
    "**/.env",
    "**/.env.*",
    "**/*.env",
    "**/*.pem",
    "**/*.key",
    "**/*.p12",
    "**/*.pfx",
    "**/id_rsa*",
    "**/id_dsa*",
    "**/id_ecdsa*",
    "**/id_ed25519*",
    "**/.ssh",
    "**/.aws",
    "**/.azure",
    "**/.kube",
    "**/.gnupg",
    "**/.docker/config.json",
    "**/.npmrc",
    "**/.pypirc",
    "**/.netrc",
    "**/.git-credentials",
]
_CHUNK = 1024 * 1024
log = logging.getLogger("modelship")


def dockerignore_patterns(app_dir: Path) -> list[str]:
    """Patterns of APP_DIR/.dockerignore, read the way the docker CLI reads them."""
    path = app_dir / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def app_files(
    app_dir: Path, *, skip: Iterable[Path] = (), include: Iterable[str] = (), exclude: Iterable[str] = ()
) -> list[str]:
    """Relative paths (files, dirs, symlinks) of APP_DIR that go into the image: all but DEFAULT_EXCLUDES,
    SECRET_EXCLUDES (each one left out is logged), .dockerignore's and ``exclude``'s patterns; ``include``'s
    patterns (and .dockerignore's '!' lines) put files back."""
    user = [*dockerignore_patterns(app_dir), *exclude, *(f"!{p}" for p in include)]
    out = _walk_app(app_dir, DEFAULT_EXCLUDES + SECRET_EXCLUDES + user, skip)
    left = set(_walk_app(app_dir, DEFAULT_EXCLUDES + user, skip)) - set(out)
    secret = sorted(p for p in left if p.rpartition("/")[0] not in left)  # a folder, not each file in it
    if secret:
        shown = ", ".join(secret[:5]) + (f" and {len(secret) - 5} more" if len(secret) > 5 else "")
        log.warning(
            "left out of the image: %s (usually holds secrets; name it in [tool.modelship] include to keep it)",
            shown,
        )
    return out


def _walk_app(app_dir: Path, patterns: list[str], skip: Iterable[Path]) -> list[str]:
    from docker.utils.build import PatternMatcher

    matcher = PatternMatcher(patterns)
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


def add_model(
    w: ContextWriter, model_dir: Path, manifest: Manifest, prefix: str = MODEL_PATH, signature: bytes | None = None
) -> int:
    """Model files listed in the manifest (verified) + modelship.json without fetched_at, under ``prefix``; and
    the model's ``signature`` (model.sig) when it has one."""
    files = {**{f.path: ("file", f) for f in manifest.files}, MANIFEST_NAME: ("manifest", None)}
    if signature is not None:
        files[SIGNATURE_NAME] = ("signature", None)
    extra = modeldir.unlisted(model_dir, manifest)
    if extra:
        log.warning(
            "%d file(s) in %s not in its manifest left out of the image (e.g. %s)", len(extra), model_dir, extra[0]
        )
    total = 0
    w.dir(prefix)
    for rel in sorted(files):
        kind, entry = files[rel]
        name = f"{prefix}/{rel}"
        if kind == "manifest":
            w.bytes(name, manifest.without_timestamp().to_json().encode())
            continue
        if kind == "signature":
            w.bytes(name, signature)  # type: ignore[arg-type]
            continue
        path = modeldir.path_of(model_dir, rel)
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
