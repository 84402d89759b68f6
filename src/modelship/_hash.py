"""The one place that hashes content: sha256 (with Content-MD5 where a store checks it, and the sha256 of every
chunk where a manifest records chunk digests) of files and streams."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20  # bytes read per step: large enough for disk throughput, small enough to bound memory


class Hasher:
    """sha256 (and, with ``md5=True``, the transport checksum Content-MD5; with ``chunk_size``, the sha256 of
    every piece of that size) of bytes fed in order."""

    def __init__(self, *, md5: bool = False, chunk_size: int | None = None):
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5() if md5 else None  # noqa: S324 - Content-MD5 is a transport checksum
        self.chunk_size = chunk_size
        self._chunks: list[str] = []
        self._chunk = hashlib.sha256()
        self._in_chunk = 0

    def update(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)
        if self.chunk_size:
            view = memoryview(data)
            while view:
                n = min(len(view), self.chunk_size - self._in_chunk)
                self._chunk.update(view[:n])
                self._in_chunk, view = self._in_chunk + n, view[n:]
                if self._in_chunk == self.chunk_size:
                    self._chunks.append(self._chunk.hexdigest())
                    self._chunk, self._in_chunk = hashlib.sha256(), 0

    def chunks(self) -> tuple[str, ...]:
        """The sha256 (hex) of every chunk fed so far, a last shorter one included (none for no bytes)."""
        return (*self._chunks, self._chunk.hexdigest()) if self._in_chunk else tuple(self._chunks)


def hash_file(path: Path, *, md5: bool = False, chunk_size: int | None = None) -> Hasher:
    """The hashes of a local file's content, streamed (one pass for all the digests asked for)."""
    h = Hasher(md5=md5, chunk_size=chunk_size)
    with open(path, "rb") as f:
        # One chunk per read where there are chunks: hashlib releases the GIL for big buffers.
        while data := f.read(chunk_size or CHUNK):
            h.update(data)
    return h


def chunk_digests(path: Path, chunk_size: int) -> tuple[str, ...]:
    """The sha256 (hex) of every ``chunk_size`` piece of a local file."""
    with open(path, "rb") as f:
        return tuple(hashlib.sha256(data).hexdigest() for data in iter(lambda: f.read(chunk_size), b""))


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
