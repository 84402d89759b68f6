"""A fetched model folder as deterministic OCI layers: same model ⇒ byte-identical layers on any machine.

Layout: one layer per file of at least ``LARGE_FILE`` bytes (sorted by path), then one layer with every smaller
file and the model's ``modelship.json`` (without ``fetched_at``). Each layer is an uncompressed tar
(``application/vnd.oci.image.layer.v1.tar``: weights do not compress, and the layer digest equals its
diff_id) holding the file(s) under the image's model dir, with every parent directory entry.

The tar bytes are fixed by this module, not by the tarfile module of whichever Python runs it: POSIX ustar
headers, plus a pax extended header (``././@PaxHeader``) only for what ustar cannot hold (a path over
100+155 bytes or not ASCII, a file of 8 GiB or more); entries in path order, parents first; mtime
``SOURCE_DATE_EPOCH`` or 0; uid/gid 0, empty user/group names; modes 0444 for model files, 0555 for the
model dir and its subdirectories, 0755 for the parents above it (``/opt``: not the model's to lock down);
no device numbers; the archive ends with two zero blocks and no record padding.

Layers are never written to disk or held in memory: :meth:`Layer.open` returns a reader that produces the
tar from headers, file bytes and padding as it is read, verifying each file's sha256 against the manifest
on the way (a mismatch is an IntegrityError: the model was changed after it was fetched). A layer's digest
is a pure function of its plan (names, modes, sizes, file sha256s), so it is remembered in the modelship
cache under the plan's hash: an unchanged model is not read again to learn its layer digests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .. import modeldir
from .._fs import write_atomic
from .._workers import for_each
from ..cache import default_root
from ..conventions import source_date_epoch
from ..errors import IntegrityError, UsageError
from ..manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest

log = logging.getLogger("modelship")

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
LARGE_FILE = 16 * 1024 * 1024  # a file this big gets a layer of its own
FILE_MODE, DIR_MODE, PARENT_MODE = 0o444, 0o555, 0o755
FORMAT = "modelship-layer-v1"  # part of every plan key: change it when the byte layout changes
BLOCK = 512
_READ = 1024 * 1024
_USTAR_SIZE_MAX = 8**11 - 1


def layer_mtime() -> int:
    """``SOURCE_DATE_EPOCH`` (reproducible-builds.org), else 0."""
    return source_date_epoch() or 0


# ---- tar headers ------------------------------------------------------------------------------------


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _ustar(
    name: bytes, prefix: bytes, mode: int, size: int, mtime: int, typeflag: bytes, link: bytes = b"", owner: int = 0
) -> bytes:
    head = b"".join(
        (
            name.ljust(100, b"\0"),
            _octal(mode, 8),
            _octal(owner, 8),  # uid
            _octal(owner, 8),  # gid
            _octal(size, 12),
            _octal(mtime, 12),
            b" " * 8,  # checksum, computed over the header with these 8 spaces
            typeflag,
            link.ljust(100, b"\0"),  # linkname
            b"ustar\x0000",
            b"\0" * 32,  # uname
            b"\0" * 32,  # gname
            _octal(0, 8),  # devmajor
            _octal(0, 8),  # devminor
            prefix.ljust(155, b"\0"),
            b"\0" * 12,
        )
    )
    assert len(head) == BLOCK
    return head[:148] + b"%06o\0 " % sum(head) + head[156:]


def _split(raw: bytes) -> tuple[bytes, bytes] | None:
    """(name, prefix) for ustar, or None when the path does not fit."""
    if len(raw) <= 100:
        return raw, b""
    for i in range(len(raw) - 1, 0, -1):
        if raw[i : i + 1] == b"/" and i <= 155 and len(raw) - i - 1 <= 100:
            return raw[i + 1 :], raw[:i]
    return None


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    n = len(body)
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _padding(size: int) -> int:
    return -size % BLOCK


def header(
    name: str,
    *,
    mode: int,
    size: int = 0,
    mtime: int = 0,
    directory: bool = False,
    link: str | None = None,
    owner: int = 0,
) -> bytes:
    """The header block(s) of one entry: ustar, preceded by a pax header only when ustar cannot hold it.

    ``link``: a symbolic link to that target; ``owner``: its uid and gid (0 unless said).
    """
    path = name + "/" if directory else name
    raw = path.encode("utf-8")
    pax: list[tuple[str, str]] = []
    split = _split(raw) if path.isascii() else None
    if split is None:
        pax.append(("path", path))
        split = (raw[:100], b"")
    if size > _USTAR_SIZE_MAX:
        pax.append(("size", str(size)))
    link_raw = (link or "").encode("utf-8")
    if len(link_raw) > 100 or not (link or "").isascii():
        pax.append(("linkpath", link or ""))
        link_raw = link_raw[:100]
    out = b""
    if pax:
        records = b"".join(_pax_record(k, v) for k, v in pax)
        out = _ustar(b"././@PaxHeader", b"", 0o644, len(records), mtime, b"x")
        out += records + b"\0" * _padding(len(records))
    typeflag = b"5" if directory else b"2" if link is not None else b"0"
    size = 0 if size > _USTAR_SIZE_MAX else size
    return out + _ustar(split[0], split[1], mode, size, mtime, typeflag, link_raw, owner)


# ---- layers -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One tar entry: a directory, inline bytes (``data``), a file to read (``path``, checked by ``sha256``) or a
    symbolic link (``link``); owned by root unless ``owner`` (uid = gid) says otherwise."""

    name: str  # inside the image, no leading "/"
    mode: int
    size: int = 0
    directory: bool = False
    data: bytes | None = None
    path: Path | None = None
    sha256: str | None = None
    link: str | None = None
    owner: int = 0

    def plan(self) -> list[object]:
        content = self.sha256 if self.path is not None else hashlib.sha256(self.data or b"").hexdigest()
        out: list[object] = [self.name, oct(self.mode), self.size, self.directory, None if self.directory else content]
        if self.link is not None or self.owner:  # appended only when set: model layers' plans keep their keys
            out += [self.link, self.owner]
        return out


@dataclass(frozen=True)
class Layer:
    """One layer's plan; its bytes are produced on demand by :meth:`open`."""

    title: str  # what it holds, for history and annotations
    entries: tuple[Entry, ...]
    mtime: int = 0
    _segments: list[tuple[int, int, bytes | Entry]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        segments: list[tuple[int, int, bytes | Entry]] = []
        pos = 0

        def add(length: int, what: bytes | Entry) -> None:
            nonlocal pos
            if length:
                segments.append((pos, length, what))
                pos += length

        for e in self.entries:
            head = header(
                e.name, mode=e.mode, size=e.size, mtime=self.mtime, directory=e.directory, link=e.link, owner=e.owner
            )
            if e.link is not None:
                add(len(head), head)
                continue
            if e.data is not None and not e.directory:
                add(len(head) + e.size + _padding(e.size), head + e.data + b"\0" * _padding(e.size))
                continue
            add(len(head), head)
            if not e.directory:
                add(e.size, e)
                add(_padding(e.size), b"\0" * _padding(e.size))
        add(2 * BLOCK, b"\0" * (2 * BLOCK))
        object.__setattr__(self, "_segments", segments)

    @property
    def size(self) -> int:
        start, length, _ = self._segments[-1]
        return start + length

    @property
    def files(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if not e.directory and e.link is None)

    @property
    def key(self) -> str:
        """sha256 of the plan: equal keys ⇒ equal bytes (given each file matches its sha256)."""
        plan = {"format": FORMAT, "mtime": self.mtime, "entries": [e.plan() for e in self.entries]}
        return hashlib.sha256(json.dumps(plan, separators=(",", ":")).encode()).hexdigest()

    def open(
        self,
        start: int = 0,
        end: int | None = None,
        *,
        verify: bool = True,
        on_read: Callable[[int], None] | None = None,
    ) -> LayerReader:
        """A reader of bytes ``[start, end)`` of the tar (the whole layer by default)."""
        return LayerReader(self, start, self.size if end is None else end, verify=verify, on_read=on_read)

    def iter_bytes(self, start: int, end: int, *, verify: bool = True) -> Iterator[bytes | memoryview]:
        """The tar's bytes ``[start, end)``, piece by piece; files are read (and checked) as they come."""
        for seg_start, length, what in self._segments:
            seg_end = seg_start + length
            if seg_end <= start:
                continue
            if seg_start >= end:
                return
            lo, hi = max(start, seg_start) - seg_start, min(end, seg_end) - seg_start
            if isinstance(what, bytes):
                yield memoryview(what)[lo:hi]
            else:
                yield from _file_bytes(what, lo, hi, verify=verify)

    def digest(self, *, memo: bool = True) -> str:
        """``sha256:...`` of the whole tar: remembered by plan key, else computed by streaming it once."""
        memo_file = default_root() / "oci" / "layers" / f"{self.key}.json"
        if memo:
            try:
                known = json.loads(memo_file.read_text())
                if known.get("size") == self.size and str(known.get("digest", "")).startswith("sha256:"):
                    return str(known["digest"])
            except (OSError, ValueError, AttributeError):
                pass  # not known yet (or a damaged note): compute it
        h = hashlib.sha256()
        for piece in self.iter_bytes(0, self.size):
            h.update(piece)
        digest = "sha256:" + h.hexdigest()
        if memo:
            remember(memo_file, {"digest": digest, "size": self.size})
        return digest


def layer_digests(layers: list[Layer]) -> list[str]:
    """The digests of ``layers``, computed side by side (each streams its files once, or is remembered)."""
    digests: dict[int, str] = {}

    def digest(i: int) -> None:
        digests[i] = layers[i].digest()

    for_each(digest, range(len(layers)), os.cpu_count() or 1, name="modelship-digest")
    return [digests[i] for i in range(len(layers))]


def remember(path: Path, data: object) -> None:
    """Write a small JSON note atomically (a cache: failing to write it is not an error)."""
    try:
        write_atomic(path, json.dumps(data), durable=False)
    except OSError as e:
        log.debug("could not remember %s: %s", path.name, e)


def _file_bytes(e: Entry, lo: int, hi: int, *, verify: bool) -> Iterator[bytes]:
    """Bytes ``[lo, hi)`` of a model file. With ``verify``, and when the range reaches the file's end, the whole
    file's sha256 is checked on the way (a range starting inside the file hashes the part before it first)."""
    assert e.path is not None
    h = hashlib.sha256() if verify and e.sha256 is not None and hi == e.size else None
    try:
        f = open(e.path, "rb")  # noqa: SIM115 - closed in the finally below, across the yields
    except OSError as err:
        raise IntegrityError(f"{e.path}: cannot read it ({err.strerror}); re-fetch the model") from None
    try:
        size = os.fstat(f.fileno()).st_size
        if size != e.size:
            raise IntegrityError(f"{e.path}: {size} bytes but the manifest says {e.size}; re-fetch the model")
        pos = 0 if h is not None else lo
        f.seek(pos)
        while pos < hi:
            data = f.read(min(_READ, hi - pos))
            if not data:
                raise IntegrityError(f"{e.path}: shorter than the manifest says; re-fetch the model")
            if h is not None:
                h.update(data)
            if pos + len(data) > lo:
                yield data if pos >= lo else data[lo - pos :]
            pos += len(data)
    finally:
        f.close()
    if h is not None and h.hexdigest() != e.sha256:
        raise IntegrityError(f"{e.path}: sha256 does not match the model's manifest; the file changed, re-fetch it")


class LayerReader:
    """File-like view of bytes ``[start, end)`` of a layer, for an HTTP body: ``read(n)`` and ``len()``.

    When it covers the whole layer, ``digest`` is the sha256 of what was read, once it was all read.
    """

    def __init__(
        self, layer: Layer, start: int, end: int, *, verify: bool = True, on_read: Callable[[int], None] | None = None
    ):
        if not 0 <= start <= end <= layer.size:
            raise ValueError(f"range {start}-{end} outside a layer of {layer.size} bytes")
        self.start, self.end, self.done = start, end, 0
        self._pieces = layer.iter_bytes(start, end, verify=verify)
        self._buf: bytes | memoryview = b""
        self._hash = hashlib.sha256() if (start, end) == (0, layer.size) else None
        self._on_read = on_read

    def __len__(self) -> int:
        return self.end - self.start - self.done

    def read(self, n: int = -1) -> bytes:
        while not self._buf:
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._buf = piece
        if n is None or n < 0 or n >= len(self._buf):
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        data = bytes(out)
        self.done += len(data)
        if self._hash is not None:
            self._hash.update(data)
        if self._on_read is not None:
            self._on_read(len(data))
        return data

    @property
    def digest(self) -> str | None:
        if self._hash is None or self.done != self.end - self.start:
            return None
        return "sha256:" + self._hash.hexdigest()


# ---- the model folder -------------------------------------------------------------------------------


def _safe_parts(rel: str, where: str) -> list[str]:
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") or "\0" in p or "\\" in p for p in parts):
        raise UsageError(f"{where}: file path {rel!r} is not a plain relative path; re-fetch the model")
    return parts


def image_dir_parts(image_model_dir: str) -> list[str]:
    p = PurePosixPath(image_model_dir)
    if not p.is_absolute() or str(p) != image_model_dir.rstrip("/") or len(p.parts) < 2 or ".." in p.parts:
        raise UsageError(
            f"model dir in the image {image_model_dir!r} must be an absolute, normalised path like /opt/model"
        )
    return list(p.parts[1:])


def _dirs(base: list[str], rel_dirs: list[list[str]]) -> list[Entry]:
    """Directory entries: each parent of the model dir (0755), the model dir and its subdirectories (0555)."""
    out: dict[str, Entry] = {}
    for i in range(1, len(base) + 1):
        name = "/".join(base[:i])
        out[name] = Entry(name, PARENT_MODE if i < len(base) else DIR_MODE, directory=True)
    for parts in rel_dirs:
        for i in range(1, len(parts) + 1):
            name = "/".join(base + parts[:i])
            out.setdefault(name, Entry(name, DIR_MODE, directory=True))
    return list(out.values())


def _sorted(entries: list[Entry]) -> tuple[Entry, ...]:
    return tuple(sorted(entries, key=lambda e: e.name.split("/")))


def model_layers(
    model_dir: str | Path,
    *,
    image_model_dir: str,
    large_file: int = LARGE_FILE,
    manifest: Manifest | None = None,
    signature: bytes | None = None,
) -> tuple[Manifest, list[Layer]]:
    """The manifest of a fetched model folder and its layers (large files first, by path; small files last,
    with modelship.json and the model's ``signature``, model.sig, when it has one)."""
    root = Path(model_dir).expanduser().resolve()
    manifest = manifest or modeldir.model_manifest(root)
    base = image_dir_parts(image_model_dir)
    mtime = layer_mtime()
    extra = modeldir.unlisted(root, manifest)
    if extra:
        log.warning("%d file(s) in %s not in its manifest left out of the image (e.g. %s)", len(extra), root, extra[0])
    large: list[Layer] = []
    small: list[Entry] = []
    small_dirs: list[list[str]] = []
    for f in manifest.files:
        parts = _safe_parts(f.path, str(root / MANIFEST_NAME))
        path = modeldir.path_of(root, f.path)
        size = path.stat().st_size
        if size != f.size:
            raise IntegrityError(f"{path}: {size} bytes but the manifest says {f.size}; re-fetch the model")
        entry = Entry("/".join(base + parts), FILE_MODE, f.size, path=path, sha256=f.sha256)
        if f.size >= large_file:
            entries = [*_dirs(base, [parts[:-1]]), entry]
            large.append(Layer(f"{image_model_dir}/{f.path}", _sorted(entries), mtime))
        else:
            small.append(entry)
            small_dirs.append(parts[:-1])
    data = manifest.without_timestamp().to_json().encode()
    small.append(Entry("/".join([*base, MANIFEST_NAME]), FILE_MODE, len(data), data=data))
    title = f"{image_model_dir}: {MANIFEST_NAME} and {len(small) - 1} file(s) under {human(large_file)}"
    if signature is not None:
        small.append(Entry("/".join([*base, SIGNATURE_NAME]), FILE_MODE, len(signature), data=signature))
        files = f"{len(small) - 2} file(s) under {human(large_file)}"
        title = f"{image_model_dir}: {MANIFEST_NAME}, {SIGNATURE_NAME} and {files}"
    layers = [
        *sorted(large, key=lambda layer: layer.title),
        Layer(title, _sorted(_dirs(base, small_dirs) + small), mtime),
    ]
    return manifest, layers


def data_layer(image_model_dir: str, name: str, data: bytes) -> Layer:
    """A layer of one small file ``name`` (bytes in memory) in the model dir, with the dir's parents: how a
    model image carries its ``model.sig`` (oci.modelsig)."""
    base = image_dir_parts(image_model_dir)
    entry = Entry("/".join([*base, name]), FILE_MODE, len(data), data=data)
    return Layer(f"{image_model_dir}/{name}", _sorted([*_dirs(base, []), entry]), layer_mtime())


def human(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n} bytes"


__all__ = [
    "LARGE_FILE",
    "LAYER_MEDIA_TYPE",
    "Entry",
    "Layer",
    "LayerReader",
    "data_layer",
    "header",
    "layer_digests",
    "layer_mtime",
    "model_layers",
]
