"""Model folders for tests and benchmarks."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

from modelship.manifest import FileEntry, Manifest

from .trees import file_sha256

# Random bytes are drawn in pieces of this size (a multiple of 4: the same bytes as one draw, less memory).
_PIECE = 8 * 1024 * 1024


def make_model(
    root: Path,
    files: Mapping[str, bytes | int],
    *,
    seed: int = 0,
    uri: str | None = None,
    version: str | None = None,
) -> Path:
    """A model folder. A ``bytes`` value is the file's content, an ``int`` that many random bytes from ``seed``
    (the same seed, the same bytes). With ``uri``, also a modelship.json as `modelship fetch` writes it."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):
            with open(path, "wb") as f:
                for start in range(0, content, _PIECE):
                    f.write(rng.randbytes(min(_PIECE, content - start)))
        else:
            path.write_bytes(content)
    if uri is not None:
        entries = [FileEntry(name, (root / name).stat().st_size, file_sha256(root / name)) for name in files]
        Manifest.create(uri, version, entries, stamp=True).write(root / "modelship.json")
    return root
