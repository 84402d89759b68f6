"""The one place that hashes content: sha256 (with Content-MD5 where a store checks it) of files and streams."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20  # bytes read per step: large enough for disk throughput, small enough to bound memory


class Hasher:
    """sha256 (and, with ``md5=True``, the transport checksum Content-MD5) of bytes fed in order."""

    def __init__(self, *, md5: bool = False):
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5() if md5 else None  # noqa: S324 - Content-MD5 is a transport checksum

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)


def hash_file(path: Path, *, md5: bool = False) -> Hasher:
    """The hashes of a local file's content, streamed (one pass also for both digests)."""
    h = Hasher(md5=md5)
    with open(path, "rb") as f:
        while data := f.read(CHUNK):
            h.update(data)
    return h


def sha256_file(path: Path) -> str:
    """sha256 (hex) of a local file's content."""
    return hash_file(path).sha256.hexdigest()


class HashingReader:
    """File wrapper that hashes what its consumer reads (one pass: copy and verify)."""

    def __init__(self, f: BinaryIO):
        self._f, self._h = f, Hasher()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._h.update(data)
        return data

    def hexdigest(self) -> str:
        return self._h.sha256.hexdigest()
