"""The strict tar reader: model layers are untrusted input, read here rather than with ``tarfile``.

``tarfile`` follows links on extraction, holds any size of pax header in memory and accepts every entry type.
This reader takes only ustar/GNU headers with a valid checksum, plain files and directories, and names that
are plain relative paths (no absolute paths, no ``..``, no overlay whiteouts); links, devices, fifos, sparse
files and anything else are refused with one line naming ``where`` and the entry. It reads from a
:class:`TarStream` (``pos``, ``size`` and ``read_exact``): the caller reads each file's bytes and
:func:`skip_padding` after a file entry, so a layer is checked while it streams and never held whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from ..errors import IntegrityError

BLOCK = 512
PAX_MAX = 64 * 1024  # a pax header longer than this is not a model's


class TarStream(Protocol):
    """Bytes read in order: ``pos`` bytes of ``size`` read so far; ``read_exact`` fails short of ``n`` bytes."""

    pos: int
    size: int

    def read_exact(self, n: int) -> bytes: ...


@dataclass(frozen=True)
class Entry:
    """One tar entry the reader accepted."""

    name: str  # normalised, no leading "./", no trailing "/"
    kind: str  # "file" or "dir"
    size: int


def skip_padding(stream: TarStream, size: int) -> None:
    """Read the zero padding after an entry of ``size`` bytes."""
    pad = -size % BLOCK
    if pad:
        stream.read_exact(pad)


def _number(field: bytes, what: str, where: str) -> int:
    """An octal tar number, or GNU's base-256 (high bit set) for large ones; anything else is refused."""
    if field[:1] and field[0] & 0x80:
        if field[0] != 0x80:  # 0xff: negative
            raise IntegrityError(f"{where}: a tar header has a negative {what}")
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not all(48 <= c <= 55 for c in text):
        raise IntegrityError(f"{where}: a tar header has a {what} that is not a number")
    return int(text, 8)


def _text(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError(f"{where}: a tar entry name is not UTF-8") from None


def _pax(data: bytes, where: str) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0 or not data[pos:space].isdigit():
            raise IntegrityError(f"{where}: a pax header is malformed")
        length = int(data[pos:space])
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise IntegrityError(f"{where}: a pax header is malformed")
        key, _, value = record[:-1].partition(b"=")
        out[_text(key, where)] = _text(value, where)
        pos += length
    return out


def _clean(name: str, where: str) -> str:
    """A tar name as a plain relative path (``./`` prefixes dropped); absolute and ``..`` names refused."""
    shown = repr(name[:200])
    if name.startswith("/"):
        raise IntegrityError(f"{where} holds {shown}: an absolute path")
    trimmed = name
    while trimmed.startswith("./"):
        trimmed = trimmed[2:]
    trimmed = trimmed.rstrip("/")
    parts = trimmed.split("/")
    if any(p == ".." for p in parts):
        raise IntegrityError(f"{where} holds {shown}: a path with '..'")
    if not trimmed or any(p in ("", ".") for p in parts) or "\\" in trimmed:
        raise IntegrityError(f"{where} holds {shown}: not a plain relative path")
    if any(p.startswith(".wh.") for p in parts):
        raise IntegrityError(f"{where} holds {shown}: an overlay whiteout, not a model file")
    return trimmed


def entries(stream: TarStream, where: str) -> Iterator[Entry]:
    """The entries of a tar read from ``stream``; after a file entry the caller reads its bytes and padding."""
    pax: dict[str, str] = {}
    long_name: str | None = None
    while True:
        block = stream.read_exact(BLOCK) if stream.pos < stream.size else b""
        if not block:
            raise IntegrityError(f"{where} ends without the tar end-of-archive blocks")
        if block == b"\0" * BLOCK:
            return  # end of archive (what follows is padding; finish() hashes it)
        stored = _number(block[148:156], "checksum", where)
        if stored not in (sum(block[:148]) + 256 + sum(block[156:]), _signed_sum(block)):
            raise IntegrityError(f"{where}: a tar header's checksum is wrong (not a tar layer, or damaged)")
        magic = block[257:265]
        if magic[:6] == b"ustar\0":
            prefix = block[345:500].split(b"\0", 1)[0]
        elif magic == b"ustar  \0":
            prefix = b""
        else:
            raise IntegrityError(f"{where}: a tar header is neither POSIX ustar nor GNU tar")
        raw_name = block[:100].split(b"\0", 1)[0]
        name = _text(prefix + b"/" + raw_name if prefix else raw_name, where)
        size = _number(block[124:136], "size", where)
        kind = block[156:157]
        if kind in (b"x", b"g", b"L"):
            if size > PAX_MAX:
                raise IntegrityError(f"{where}: an extended tar header of {size} bytes; refused")
            data = stream.read_exact(size)
            skip_padding(stream, size)
            if kind == b"x":
                pax = _pax(data, where)
            elif kind == b"L":
                long_name = _text(data.split(b"\0", 1)[0], where)
            continue  # a global header ('g') changes nothing modelship reads
        name = pax.get("path") or long_name or name
        if "size" in pax:
            if not pax["size"].isdigit():
                raise IntegrityError(f"{where}: a pax size that is not a number")
            size = int(pax["size"])
        pax, long_name = {}, None
        clean = _clean(name, where)
        if kind in (b"0", b"\0", b"7"):
            if size > stream.size - stream.pos:
                raise IntegrityError(f"{where} holds {clean!r} of {size} bytes, more than the layer has left")
            yield Entry(clean, "file", size)
        elif kind == b"5":
            if size:
                raise IntegrityError(f"{where}: folder {clean!r} has a size")
            yield Entry(clean, "dir", 0)
        elif kind in (b"1", b"2", b"K"):
            target = _text(block[157:257].split(b"\0", 1)[0], where)
            what = "a hard link" if kind == b"1" else "a symbolic link"
            raise IntegrityError(
                f"{where} holds {clean!r}: {what} (to {target[:200]!r}); model layers hold plain files"
            )
        elif kind in (b"3", b"4", b"6"):
            raise IntegrityError(f"{where} holds {clean!r}: a device or fifo; model layers hold files only")
        else:
            raise IntegrityError(f"{where} holds {clean!r} of tar type {kind!r}; model layers hold files only")


def _signed_sum(block: bytes) -> int:
    """The header checksum as old tars computed it (signed chars)."""
    total = 256
    for i, c in enumerate(block):
        if not 148 <= i < 156:
            total += c - 256 if c > 127 else c
    return total


__all__ = ["BLOCK", "Entry", "TarStream", "entries", "skip_padding"]
