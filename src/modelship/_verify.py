"""verify(): check a target against what modelship recorded for it. Today the target is a model folder and the
record its ``modelship.json``: every listed file is there, a regular file inside the folder, with its size and
sha256; nothing is missing; nothing unlisted is there (unless allowed). An image reference (``REF@DIGEST``) is
the verb's other kind of target: its cosign signature, checked by ``modelship.trust.cosign.verify``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import modeldir
from ._hash import sha256_file
from ._workers import for_each
from .errors import IntegrityError, ModelshipError, UsageError
from .manifest import MANIFEST_NAME, FileEntry

_HASH_WORKERS = 4  # files hashed at once: hashlib releases the GIL, a disk serves a few readers well
_SHOWN = 3  # names per kind of problem in the one line (all of them are in the result)


@dataclass(frozen=True)
class VerifyResult:
    """What ``verify`` found. ``ok``: the target is exactly what was recorded; else the lists say how not."""

    target: str
    model_digest: str | None
    files: int  # files checked
    size: int  # their bytes
    missing: tuple[str, ...] = ()
    changed: tuple[tuple[str, str], ...] = ()  # (path, what differs)
    unlisted: tuple[str, ...] = ()  # found but not recorded (allowed with allow_extra)
    allow_extra: bool = False
    kind: str = field(default="folder")

    @property
    def ok(self) -> bool:
        return not self.missing and not self.changed and (self.allow_extra or not self.unlisted)

    def problem(self) -> str | None:
        """The one line saying how the target differs from its record (None when ``ok``)."""
        if self.ok:
            return None
        parts = []
        if self.changed:
            parts.append(f"{len(self.changed)} changed ({_names(f'{p}: {why}' for p, why in self.changed)})")
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({_names(self.missing)})")
        if self.unlisted and not self.allow_extra:
            parts.append(f"{len(self.unlisted)} unlisted ({_names(self.unlisted)})")
        advice = "re-fetch the model" if self.changed or self.missing else "move them out"
        if self.unlisted and not self.allow_extra:
            advice += ", or pass --allow-extra to accept files it does not list"
        return f"{self.target} does not match its {MANIFEST_NAME}: {'; '.join(parts)}; {advice}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in ("target", "kind", "ok", "model_digest", "files", "size")}
        out.update(missing=list(self.missing), changed=[{"path": p, "what": why} for p, why in self.changed])
        out.update(unlisted=list(self.unlisted))
        return out


def _names(names: Any) -> str:
    names = list(names)
    more = len(names) - _SHOWN
    return ", ".join(names[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


def verify(target: str | Path, *, allow_extra: bool = False) -> VerifyResult:
    """Check the model folder ``target`` against its ``modelship.json`` (see the module docstring).

    Returns a VerifyResult whose ``ok`` says whether it matches (``problem()`` says how not); raises a
    ModelshipError when there is nothing to check against (no folder, no or no valid ``modelship.json``).
    """
    root = Path(target)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise UsageError(
            f"{target} {what}; verify checks a model folder against its {MANIFEST_NAME} (image references: not yet)"
        )
    try:
        manifest = modeldir.read_manifest(root)
    except UsageError as e:  # a damaged record fails the check (exit 1): it is the folder that is wrong
        raise ModelshipError(str(e)) from None
    if manifest is None:
        raise ModelshipError(
            f"{root} holds no {MANIFEST_NAME}, so there is nothing to verify it against; "
            "verify checks folders that 'modelship fetch' wrote"
        )
    missing: list[str] = []
    changed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def check(f: FileEntry) -> None:
        problem = _check_file(root, f)
        with lock:
            if problem == "missing":
                missing.append(f.path)
            elif problem is not None:
                changed.append((f.path, problem))

    for_each(check, manifest.files, _HASH_WORKERS, name="modelship-verify")
    return VerifyResult(
        target=str(root),
        model_digest=manifest.digest,
        files=len(manifest.files),
        size=sum(f.size for f in manifest.files),
        missing=tuple(sorted(missing)),
        changed=tuple(sorted(changed)),
        unlisted=tuple(sorted(modeldir.unlisted(root, manifest))),
        allow_extra=allow_extra,
    )


def _check_file(root: Path, f: FileEntry) -> str | None:
    """How the file ``f`` in ``root`` differs from its entry: ``missing``, a few words, or None."""
    try:
        path = modeldir.path_of(root, f.path)
    except IntegrityError:
        return "missing"
    except UsageError:
        return "not a regular file inside the folder (a folder, a device, or a link out of it)"
    try:
        size = path.stat().st_size
        if size != f.size:
            return f"{size} bytes, recorded {f.size}"
        if sha256_file(path) != f.sha256:
            return "sha256 differs"
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror or e.__class__.__name__})"
    return None


__all__ = ["VerifyResult", "verify"]
