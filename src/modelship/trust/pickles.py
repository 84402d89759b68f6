"""No pickle that runs code: the model files that unpickle are scanned before ``publish``, ``build --model`` and
``assemble --model`` use a model folder.

Loading a pickle calls whatever its globals name: ``os.system``, ``builtins.eval``. Every file of the folder
(``modeldir.files``: the same walk, the same names) is scanned with picklescan (docs/trust.md says why), which
lists the globals a pickle stream imports without running it (``pickletools``) and classes them. A file that
imports one picklescan calls *dangerous* (os/posix, subprocess, builtins.eval/exec/getattr, socket, ...) is
refused in one line naming the file and the global (``UnsafePickleError``), unless it was reviewed and named in
``allow_unsafe_pickle`` (CLI ``--allow-unsafe-pickle FILE``), which lets it through with one warning line.
Globals it does not know (a scikit-learn estimator's class) pass: they import code, not run a command.

Which files are read is decided by their content, the first 16 bytes, so a renamed pickle is still caught; the
name only confirms a safe format:

- ``.safetensors`` whose first 8 bytes are a header length that fits in the file and whose header is a JSON
  object, and ``.gguf`` starting ``GGUF``: not read further. A pickle named ``weights.safetensors`` has no such
  header, so it is scanned as below;
- a zip archive (``PK\\x03\\x04``: a PyTorch ``.pt``/``.pth``/``.bin``, ``.npz``): every member is sniffed the
  same way (``archive/data.pkl`` is a pickle); an archive that cannot be read is refused (it cannot be scanned);
- ``\\x93NUMPY`` (``.npy``): its header is read; only an object array holds a pickle, which is scanned;
- gzip, bz2, xz, lzma or zlib (what ``joblib.dump(compress=...)`` writes): decompressed as it is read, and
  sniffed again;
- a first byte that is a pickle opcode (``\\x80`` + protocol, or protocol 0/1's ``(``, ``c``, ``}``, ...): scanned
  as a sequence of pickles (plain pickle, joblib, the legacy PyTorch format). A stream picklescan cannot follow
  is refused when it has a protocol 2-5 header or imports and calls something before it breaks; raw weights
  that only start with an opcode byte (about a quarter of random bytes do) break at once and pass;
- anything else (ONNX's protobuf, JSON, text): its first byte is no pickle opcode, so ``pickle.load`` refuses it
  at once; not read further.

picklescan logs what it finds on its ``picklescan`` logger; a NullHandler keeps a library call quiet (the CLI
shows those records at ``-vv`` only, as any library's).
"""

from __future__ import annotations

import ast
import bz2
import gzip
import io
import json
import logging
import lzma
import pickletools
import struct
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .. import modeldir
from ..errors import UnsafePickleError

log = logging.getLogger("modelship")
logging.getLogger("picklescan").addHandler(logging.NullHandler())

_HEAD = 16
_OPCODES = frozenset(op.code.encode("latin-1")[0] for op in pickletools.opcodes)
_MAX_SAFETENSORS_HEADER = 100 << 20  # the format's own limit
_MAX_DEPTH = 3  # an archive in an archive in a compressed stream
_CHUNK = 1 << 20


class _Unscannable(Exception):
    """A file that may hold a pickle but cannot be read through (a broken or encrypted archive)."""


class _Stream:
    """A decompressed stream that can step back over the last bytes read: sniffing re-reads the first ones,
    and picklescan peeks one byte between pickles (``read(1)``, ``seek(-1, 1)``)."""

    def __init__(self, raw: IO[bytes]):
        self._raw, self._back, self._last, self._pos = raw, b"", b"", 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            data = self._back + self._raw.read()
        else:
            data = self._back[:n]
            if len(data) < n:
                data += self._raw.read(n - len(data))
        self._back = self._back[len(data) :] if n is not None and n >= 0 else b""
        self._keep(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        out = bytearray()
        while limit < 0 or len(out) < limit:
            c = self.read(1)
            out += c
            if not c or c == b"\n":
                break
        return bytes(out)

    def _keep(self, data: bytes) -> None:
        self._pos += len(data)
        self._last = (self._last + data)[-_HEAD:]

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        back = (self._pos - offset) if whence == 0 else -offset if whence == 1 else -1
        if not 0 <= back <= len(self._last):
            raise io.UnsupportedOperation("a scanned stream only steps back over the last bytes read")
        if back:
            self._back = self._last[-back:] + self._back
            self._last, self._pos = self._last[:-back], self._pos - back
        return self._pos


class _Zlib(io.RawIOBase):
    """A raw zlib stream (joblib's ``compress=N``), inflated as it is read, at most ``len(b)`` at a time."""

    def __init__(self, raw: IO[bytes]):
        self._raw, self._z = raw, zlib.decompressobj()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._z.eof:
            src = self._z.unconsumed_tail or self._raw.read(_CHUNK)
            if not src:
                break  # truncated: what was inflated is all there is
            data = self._z.decompress(src, len(b))
            if data:
                b[: len(data)] = data
                return len(data)
        return 0


def _compressed(head: bytes) -> str | None:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00") or head.startswith(b"]\x00\x00"):
        return "xz"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0:
        return "zlib"
    return None


def _decompressed(kind: str, f: IO[bytes]) -> IO[bytes]:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=f, mode="rb")
    if kind == "bz2":
        return bz2.BZ2File(f, "rb")
    if kind == "xz":
        return lzma.LZMAFile(f, "rb", format=lzma.FORMAT_AUTO)
    return io.BufferedReader(_Zlib(f), _CHUNK)


def _safe_format(name: str, head: bytes, f: IO[bytes], size: int | None) -> bool:
    """A safetensors or GGUF file by name and content: nothing in it can be unpickled."""
    lower = name.lower()
    if lower.endswith(".gguf"):
        return head.startswith(b"GGUF")
    if not lower.endswith(".safetensors") or size is None or len(head) < 9 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    if not 2 <= n <= min(size - 8, _MAX_SAFETENSORS_HEADER):
        return False
    f.seek(8)
    try:
        return isinstance(json.loads(f.read(n)), dict)
    except ValueError:
        return False


def _npy_objects(f: IO[bytes]) -> bool:
    """Past an .npy header (F at its start): True when the array holds objects (a pickle follows)."""
    head = f.read(8)
    fmt = "<H" if head[6:7] == b"\x01" else "<I"
    raw = f.read(struct.calcsize(fmt))
    try:
        (n,) = struct.unpack(fmt, raw)
        header = ast.literal_eval(f.read(n).decode("latin-1"))
        descr = header["descr"]
    except (struct.error, ValueError, SyntaxError, TypeError, KeyError, MemoryError):
        return False  # numpy refuses such a header too: nothing is unpickled

    def objects(d: Any) -> bool:
        if isinstance(d, str):
            return d.lstrip("<>|=").startswith("O")
        if isinstance(d, list):
            return any(isinstance(t, tuple) and len(t) >= 2 and objects(t[1]) for t in d)
        return False

    return objects(descr)


_IMPORTS = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4"})
_CALLS = frozenset({"REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"})


def _could_run_code(f: IO[bytes]) -> bool:
    """Whether a stream picklescan could not follow is a pickle to refuse: a protocol 2-5 header, or opcodes that
    import a callable and then call something before the stream breaks (what ``pickle.load`` runs before it
    fails). Raw weights that merely start with an opcode byte break at once, having imported nothing."""
    try:
        f.seek(0)
        head = f.read(2)
        f.seek(0)
    except (OSError, ValueError):
        return True  # cannot look again: refuse, as before
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    imported = False
    try:
        for op, _, _ in pickletools.genops(f):
            imported = imported or op.name in _IMPORTS
            if imported and op.name in _CALLS:
                return True
    except Exception:  # noqa: BLE001, S110 - where the stream breaks: what came before is all it could run
        pass
    return False


def _dangerous(f: IO[bytes], where: str) -> Iterator[tuple[str, str]]:
    from picklescan.scanner import SafetyLevel, scan_pickle_bytes  # imported on use: the CLI starts fast

    try:
        result = scan_pickle_bytes(f, where)
    except Exception as e:  # noqa: BLE001 - a stream picklescan cannot follow may still unpickle: refuse it
        if not _could_run_code(f):
            return  # raw bytes that start with an opcode byte (a quarter of all weight files): no pickle
        raise _Unscannable(f"its pickle cannot be followed ({e})") from None
    for g in result.globals:
        if g.safety == SafetyLevel.Dangerous:
            yield where, f"{g.module}.{g.name}"


def _scan(f: IO[bytes], where: str, size: int | None, depth: int) -> Iterator[tuple[str, str]]:
    """(file or ARCHIVE:MEMBER, global) for every dangerous global of the pickles in F (at its start)."""
    head = f.read(_HEAD)
    f.seek(0)
    if not head or depth > _MAX_DEPTH or _safe_format(where, head, f, size):
        return
    f.seek(0)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        yield from _archive(f, where, depth)
    elif head.startswith(b"\x93NUMPY"):
        if _npy_objects(f):
            yield from _dangerous(f, where)
    elif (kind := _compressed(head)) is not None:
        try:
            yield from _scan(_Stream(_decompressed(kind, f)), where, None, depth + 1)
        except (OSError, EOFError, lzma.LZMAError, zlib.error):
            if head[0] in _OPCODES:  # "BZh..." or "]\x00\x00..." that is no compressed stream
                f.seek(0)
                yield from _dangerous(f, where)
    elif head[0] in _OPCODES:
        yield from _dangerous(f, where)


def _archive(f: IO[bytes], where: str, depth: int) -> Iterator[tuple[str, str]]:
    try:
        with zipfile.ZipFile(f) as z:
            for info in z.infolist():
                if info.is_dir():
                    continue
                with z.open(info) as member:
                    yield from _scan(member, f"{where}:{info.filename}", info.file_size, depth + 1)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as e:
        raise _Unscannable(f"it is a zip archive that cannot be read ({e})") from None


def scan_file(path: Path, name: str) -> list[tuple[str, str]]:
    """The dangerous globals imported by the pickles in the file at PATH, shown as NAME: [(where, global)],
    ``where`` NAME or ``NAME:MEMBER`` for a zip member. A file that cannot be scanned raises UnsafePickleError."""
    try:
        with path.open("rb") as f:
            return list(_scan(f, name, path.stat().st_size, 0))
    except _Unscannable as e:
        raise UnsafePickleError(
            f"refusing model file {name}: {e}; it may hold a pickle that runs code when it is loaded "
            f"(once reviewed, pass --allow-unsafe-pickle {name})",
            path=name,
            global_name=None,
        ) from None


def check_folder(root: Path, allow_unsafe_pickle: Sequence[str | Path] = ()) -> None:
    """Refuse (UnsafePickleError) the first file of the model folder ROOT that imports a dangerous global, unless
    it is in ``allow_unsafe_pickle`` (names relative to ROOT, or paths to the same files), which lets it
    through with one warning line."""
    if not root.is_dir():
        return  # the verb says so in its own words
    allowed = {str(a) for a in allow_unsafe_pickle} | {str(Path(a).resolve()) for a in allow_unsafe_pickle}
    for rel in modeldir.files(root):
        path = root / rel
        if rel in allowed or str(path.resolve()) in allowed:
            try:
                found = scan_file(path, rel)
            except UnsafePickleError:
                found = [(rel, "(cannot be scanned)")]
            for where, name in found[:1]:
                log.warning(
                    "%s imports %s, which runs code when it is loaded: let through by --allow-unsafe-pickle",
                    where,
                    name,
                )
            continue
        for where, name in scan_file(path, rel)[:1]:
            raise UnsafePickleError(
                f"refusing model file {where}: its pickle imports {name}, which runs code when it is loaded "
                f"(once reviewed, pass --allow-unsafe-pickle {rel})",
                path=where,
                global_name=name,
            )
