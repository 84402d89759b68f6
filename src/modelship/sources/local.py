"""Local folders: file:///path and plain paths. Useful for tests, NFS mounts and air-gapped builds."""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, NotFoundError
from ..uri import ModelURI
from .base import ProgressFn, RemoteFile

_CHUNK = 1024 * 1024


def _etag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


class LocalSource:
    """A folder; a file's ETag is its mtime and size, so a rewrite mid-fetch is noticed."""

    def __init__(self, uri: ModelURI, credential: Any = None):
        self.uri = uri
        self.root = Path("/")  # uri.prefix is an absolute path; keys are relative to "/"

    def _path(self, name: str) -> Path:
        return self.root / name

    def list(self, prefix: str) -> Iterator[RemoteFile]:
        base = self._path(prefix)
        if base.is_file():
            yield self._entry(base)
            return
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for fn in sorted(filenames):
                p = Path(dirpath, fn)
                if p.is_file() and not p.is_symlink():
                    yield self._entry(p)

    def _entry(self, p: Path) -> RemoteFile:
        st = p.stat()
        return RemoteFile(
            name=str(p.relative_to(self.root)),
            size=st.st_size,
            etag=_etag(st),
            last_modified=_dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc),
        )

    def read(self, name: str, offset: int, length: int, etag: str | None) -> Iterator[bytes]:
        path = self._path(name)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed in finally; this is a generator
        except FileNotFoundError:
            raise NotFoundError(f"{path}: no such file") from None
        try:
            if etag and _etag(os.fstat(f.fileno())) != etag:
                raise IntegrityError(f"{path} changed while it was being read; re-run")
            f.seek(offset)
            left = length
            while left > 0:
                data = f.read(min(_CHUNK, left))
                if not data:
                    raise IntegrityError(f"{path} is shorter than listed (truncated while being read); re-run")
                left -= len(data)
                yield data
        finally:
            f.close()

    def write(self, name: str, path: Path, *, sha256: str, md5: bytes, progress: ProgressFn | None = None) -> None:
        dest = self._path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                while data := src.read(_CHUNK):
                    out.write(data)
                    if progress:
                        progress(len(data))
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_bytes(self, name: str, data: bytes) -> None:
        dest = self._path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)

    def delete(self, names: list[str]) -> None:
        for name in names:
            self._path(name).unlink(missing_ok=True)
        for name in names:  # prune folders left empty
            parent = self._path(name).parent
            while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    def close(self) -> None:
        pass
