"""Resolution, Manifest and Lock: what was chosen, what was fetched, what is pinned."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import UsageError

MANIFEST_NAME = "modelship.json"
LOCK_NAME = "modelship.lock"
SIGNATURE_NAME = "model.sig"  # a version's OpenSSF model signature, beside its files (trust.oms; model_signing's name)
MAX_SIGNATURE_BYTES = 64 * 1024 * 1024  # ~300k files; a larger file is not a signature modelship wrote or reads
SCHEMA_VERSION = 1
# Publish records a sha256 per chunk of this size, so that fetch can check each range as it arrives and fetch
# again only a damaged one. 8 MiB: a 2 GB file has 256 digests (16 KB of JSON), and one bad range costs little.
CHUNK_SIZE = 8 * 1024 * 1024
_MIN_CHUNK, _MAX_CHUNK = 64 * 1024, 1024 * 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileEntry:
    """One file of a model, relative to the model root (always ``/``-separated)."""

    path: str
    size: int
    sha256: str | None = None
    md5: str | None = None  # hex; from Content-MD5 / ETag when the store has one
    etag: str | None = None
    last_modified: str | None = None  # ISO 8601
    chunk_size: int | None = None  # with ``chunks``: sha256 (hex) of each chunk_size piece, in order
    chunks: tuple[str, ...] | None = None

    def with_chunks(self, chunk_size: int | None, chunks: Sequence[str] | None) -> FileEntry:
        """This entry with chunk digests (``None``: without), checked against its size."""
        if chunk_size is None or chunks is None:
            return replace(self, chunk_size=None, chunks=None)
        return replace(self, chunk_size=chunk_size, chunks=parse_chunks(self.size, chunk_size, chunks))


def chunk_count(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


def parse_chunks(size: int, chunk_size: Any, chunks: Any) -> tuple[str, ...]:
    """Validated chunk digests of a file of ``size`` bytes; ValueError when they cannot be its chunks."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or not _MIN_CHUNK <= chunk_size <= _MAX_CHUNK:
        raise ValueError(f"chunk_size {chunk_size!r} is not between {_MIN_CHUNK} and {_MAX_CHUNK}")
    if not isinstance(chunks, (list, tuple)) or not all(isinstance(c, str) and _HEX64.fullmatch(c) for c in chunks):
        raise ValueError("chunks is not a list of sha256 hex digests")
    if len(chunks) != chunk_count(size, chunk_size):
        raise ValueError(f"{len(chunks)} chunk digests for {size} bytes in chunks of {chunk_size}")
    return tuple(chunks)


def chunks_from_json(d: dict[str, Any], size: int) -> tuple[int | None, tuple[str, ...] | None]:
    """The ``chunk_size``/``chunks`` of a file entry in JSON: both absent (older manifests) or both valid."""
    if "chunks" not in d and "chunk_size" not in d:
        return None, None
    return d.get("chunk_size"), parse_chunks(size, d.get("chunk_size"), d.get("chunks"))


def _chunks_json(f: FileEntry) -> dict[str, Any]:
    return {"chunk_size": f.chunk_size, "chunks": list(f.chunks)} if f.chunks is not None else {}


@dataclass(frozen=True)
class Skipped:
    """A version newer than the one chosen, passed over by ``--verify-key`` because its signature did not verify;
    ``reason`` is the SignatureError kind (unsigned, malformed signature, unknown key, bytes differ)."""

    version: str
    reason: str


def skipped_json(skipped: tuple[Skipped, ...]) -> list[dict[str, str]]:
    return [{"version": s.version, "reason": s.reason} for s in skipped]


@dataclass(frozen=True)
class Resolution:
    """A model version chosen in a store: where, which, and its files."""

    uri: str  # without secrets
    version: str | None
    files: tuple[FileEntry, ...]
    prefix: str = ""  # store path of the version root (internal to the source)
    pin: str | None = None  # the store's immutable name of this version (oci://: the manifest digest); locked
    # with verify keys, the newer versions "latest" passed over (none: ()); None without keys (nothing checked)
    skipped: tuple[Skipped, ...] | None = field(default=None, compare=False)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "uri": self.uri,
            "version": self.version,
            "size": self.size,
            "files": [_drop_none({**asdict(f), "chunks": None}) for f in self.files],  # digests: noise here
        }
        if self.skipped is not None:
            d["skipped"] = skipped_json(self.skipped)
        return d


def tree_digest(files: Iterable[tuple[str, str]]) -> str:
    """sha256 over the sorted (path, sha256) pairs: the identity of a model's content."""
    h = hashlib.sha256()
    for path, sha in sorted(files):
        h.update(f"{path}\0{sha}\n".encode())
    return "sha256:" + h.hexdigest()


def _sorted_with_digest(files: Iterable[FileEntry], what: str) -> tuple[tuple[FileEntry, ...], str]:
    """Entries in path order and their tree digest; every entry needs its sha256."""
    entries = tuple(sorted(files, key=lambda f: f.path))
    if any(f.sha256 is None for f in entries):
        raise ValueError(f"every {what} entry needs a sha256")
    return entries, tree_digest((f.path, f.sha256) for f in entries)  # type: ignore[misc]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class _Digested:
    """A version's files and the tree digest over them: what a Manifest and a Lock both record."""

    uri: str
    version: str | None
    files: tuple[FileEntry, ...]
    digest: str

    def _digest_matches(self) -> bool:
        return tree_digest((f.path, f.sha256) for f in self.files) == self.digest  # type: ignore[misc]


@dataclass(frozen=True)
class Manifest(_Digested):
    """What a fetch installed: written as ``modelship.json`` next to the model files."""

    fetched_at: str | None = None

    @classmethod
    def create(cls, uri: str, version: str | None, files: Iterable[FileEntry], stamp: bool = True) -> Manifest:
        """A manifest of ``files`` (path, size, sha256, and chunk digests where the entries have them)."""
        entries, digest = _sorted_with_digest(
            (FileEntry(f.path, f.size, f.sha256, chunk_size=f.chunk_size, chunks=f.chunks) for f in files), "manifest"
        )
        return cls(uri, version, entries, digest, _now() if stamp else None)

    def without_timestamp(self) -> Manifest:
        """The reproducible form that goes into images (identical model, identical bytes)."""
        return replace(self, fetched_at=None)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": SCHEMA_VERSION, "uri": self.uri, "version": self.version}
        d["digest"] = self.digest
        d["files"] = [{"path": f.path, "size": f.size, "sha256": f.sha256, **_chunks_json(f)} for f in self.files]
        if self.fetched_at:
            d["fetched_at"] = self.fetched_at
        return d

    def to_json(self, compact: bool = False) -> str:
        if compact:
            return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "manifest") -> Manifest:
        check_schema(d, source)
        try:
            files = tuple(_entry_from_json(f) for f in d["files"])
            m = cls(str(d["uri"]), d.get("version"), files, str(d["digest"]), d.get("fetched_at"))
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"{source}: not a modelship manifest ({_what_is_wrong(e)}); re-create it") from e
        _check_unique(files, source, "re-create it")
        if not m._digest_matches():
            raise UsageError(f"{source}: digest does not match its files; the manifest was edited, re-create it")
        return m

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        return cls.from_dict(_read_json(path), str(path))

    def write(self, path: str | Path) -> None:
        """Write ``modelship.json`` whole or not at all (a temp file, fsync, rename); OSError on failure."""
        from ._fs import write_atomic  # not at import: `import modelship` stays light (tests/unit/test_layout.py)

        write_atomic(path, self.to_json())


@dataclass(frozen=True)
class Lock(_Digested):
    """A pinned resolution: fetching from it gets exactly these bytes or fails saying what changed."""

    created_at: str = field(default="")
    pin: str | None = None  # Resolution.pin: a fetch fails if the version no longer is this one
    signer: str | None = None  # lock --verify-key: fingerprint of the key that signed it (trust.oms.fingerprint)
    skipped: tuple[Skipped, ...] | None = field(default=None, compare=False)  # Resolution.skipped; not in the file

    @classmethod
    def from_resolution(cls, res: Resolution) -> Lock:
        files, digest = _sorted_with_digest(res.files, "lock")
        return cls(res.uri, res.version, files, digest, _now(), res.pin)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "schema": SCHEMA_VERSION,
            "uri": self.uri,
            "version": self.version,
            "digest": self.digest,
            "created_at": self.created_at,
            "files": [
                {
                    **{k: v for k, v in asdict(f).items() if k in ("path", "size", "sha256", "etag") and v is not None},
                    **_chunks_json(f),
                }
                for f in self.files
            ],
        }
        if self.pin:
            d["pin"] = self.pin
        if self.signer:
            d["signer"] = self.signer
        return d

    def write(self, path: str | Path) -> None:
        """Write the lock whole or not at all: a failure (a full disk) leaves the previous lock as it was."""
        from ._fs import write_atomic

        write_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Lock:
        d = _read_json(path)
        check_schema(d, str(path))
        try:
            files = tuple(_entry_from_json(f, etag=True) for f in d["files"])
            pin = str(d["pin"]) if d.get("pin") else None
            signer = str(d["signer"]) if d.get("signer") else None
            created = str(d.get("created_at", ""))
            lock = cls(str(d["uri"]), d.get("version"), files, str(d["digest"]), created, pin, signer)
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(
                f"{path}: not a modelship lock file ({_what_is_wrong(e)}); re-create it with 'modelship lock'"
            ) from e
        _check_paths(files, str(path), "re-create it with 'modelship lock'")
        if not lock._digest_matches():
            raise UsageError(
                f"{path}: digest does not match its files; the lock was edited by hand, "
                "re-create it with 'modelship lock'"
            )
        return lock


def _check_unique(files: Sequence[FileEntry], source: str, fix: str) -> None:
    """Refuse a file listed twice: which entry wins would decide what is installed, and the digest would not say."""
    seen: set[str] = set()
    for f in files:
        if f.path in seen:
            raise UsageError(f"{source}: lists {f.path[:200]!r} twice; {fix}")
        seen.add(f.path)


def _check_paths(files: Sequence[FileEntry], source: str, fix: str) -> None:
    """A lock's paths are names inside the model folder (``modeldir.safe_relpath``), each listed once."""
    from .errors import IntegrityError
    from .modeldir import safe_relpath  # not at import: modeldir reads manifests

    for f in files:
        try:
            safe_relpath(f.path, source)
        except IntegrityError as e:
            raise UsageError(f"{source}: invalid entry: {e}; {fix}") from None
    _check_unique(files, source, fix)


def check_schema(d: dict[str, Any], source: str) -> None:
    """Refuse a manifest or lock written by a newer modelship (``schema`` above ours) in one line."""
    schema = d.get("schema", SCHEMA_VERSION)
    if type(schema) is int and schema == SCHEMA_VERSION:  # not True, 1.0 or "1"
        return
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise UsageError(
            f"{source}: schema must be the integer {SCHEMA_VERSION}, not {json.dumps(schema)[:40]}; re-create it"
        )
    if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA_VERSION:
        raise UsageError(
            f"{source}: unsupported schema {schema} (this modelship reads schema {SCHEMA_VERSION}); upgrade modelship"
        )
    raise UsageError(f"{source}: unknown schema {str(schema)[:40]!r} (expected {SCHEMA_VERSION}); re-create it")


def _what_is_wrong(e: Exception) -> str:
    """A parse failure in words (not a Python repr such as KeyError('files'))."""
    if isinstance(e, KeyError):
        return f"no {str(e.args[0])[:40]!r} field" if e.args else "a field is missing"
    return "a field has the wrong type or value"


def _entry_from_json(f: dict[str, Any], etag: bool = False) -> FileEntry:
    """A manifest or lock file entry; chunk digests are optional (older files have none) but must fit the size."""
    size = int(f["size"])
    chunk_size, chunks = chunks_from_json(f, size)
    return FileEntry(
        str(f["path"]),
        size,
        str(f["sha256"]),
        etag=f.get("etag") if etag else None,
        chunk_size=chunk_size,
        chunks=chunks,
    )


def _read_json(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise UsageError(f"{path}: no such file") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not valid JSON ({e}); re-create it") from e
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object; re-create it")
    return data


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


__all__ = ["CHUNK_SIZE", "LOCK_NAME", "MANIFEST_NAME", "FileEntry", "Lock", "Manifest", "Resolution", "tree_digest"]
