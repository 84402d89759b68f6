"""The dependencies layer: the app user and a virtual environment at /opt/venv with the app's wheels installed.

The same environment the engine path's Dockerfile makes (``python -m venv --without-pip /opt/venv`` and a pip
install into it), made here without running the base image: ``pyvenv.cfg``, ``bin/python*`` linked to the
base's interpreter, ``lib64 -> lib``, and each wheel of the wheelhouse unpacked by the ``installer`` library
(pypa's reference installer) with console scripts whose ``#!`` is ``/opt/venv/bin/python``.

No ``.pyc`` are written: compiling needs the *target* interpreter (its magic number and marshal format; the
host's Python may be another version) and an engine is what this path does without; pip's compiled files would
also carry the source mtime. Imports compile in memory at start-up instead (``PYTHONDONTWRITEBYTECODE=1``:
nothing is written to a read-only root filesystem) -- a few hundred ms more on a cold start of a large app,
and a byte-identical layer on every machine.

The installed tree is kept in the modelship cache under the hash of (wheelhouse, interpreter, format), so a
code-only rebuild does not install again.

The requirements file(s) the build used (the one given, and those it names with ``-r``/``-c``) go into this
layer at their path under /app, not into the code layer: a requirements-only change sends this layer, the
config and the manifest, and the code layer keeps its digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
from pathlib import Path

from .._fs import temp_name
from ..cache import default_root
from ..conventions import MODEL_DIR
from ..errors import BuildError
from ..image.dockerfile import APP_HOME, APP_UID
from ..oci.layers import Entry, remember
from .base import BaseFacts
from .tree import DIR_MODE, FILE_MODE, folder_entries, parents

VENV = "/opt/venv"
FORMAT = "modelship-venv-v1"  # part of the cache key: change it when the installed layout changes
MODEL_DIR_MODE = 0o555
_INCLUDES = re.compile(r"^\s*(?:-r|-c|--requirement|--constraint)(?:\s+|=)(\S+)")


def _installed(wheel_dir: Path, facts: BaseFacts) -> Path:
    """The venv tree (``<dir>/opt/venv``) with the wheels installed, from the cache or made now."""
    h = hashlib.sha256(f"{FORMAT}\0{facts.python}\0{facts.version}\0".encode())
    for whl in sorted(wheel_dir.glob("*.whl")):
        h.update(f"{whl.name}\0{whl.stat().st_size}\0".encode())
    root = default_root() / "appimage" / "venvs"
    final = root / h.hexdigest()[:32]
    if (final / "done").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / temp_name(".venv")
    try:
        _install(tmp, sorted(wheel_dir.glob("*.whl")), facts)
        (tmp / "done").write_text("")
        try:
            tmp.rename(final)
        except OSError:
            if not (final / "done").is_file():  # lost a race to an identical tree: use that one
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _install(dest: Path, wheels: list[Path], facts: BaseFacts) -> None:
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.exceptions import InstallerError
    from installer.sources import WheelFile

    site = f"{VENV}/lib/python{facts.version}/site-packages"
    venv = dest / VENV.lstrip("/")
    (venv / "bin").mkdir(parents=True)
    (dest / site.lstrip("/")).mkdir(parents=True)
    (venv / "include").mkdir()
    (venv / "lib64").symlink_to("lib")
    for name in ("python", "python3", f"python{facts.version}"):
        (venv / "bin" / name).symlink_to(facts.python if name == "python" else "python")
    home = facts.python.rsplit("/", 1)[0]
    (venv / "pyvenv.cfg").write_text(
        f"home = {home}\ninclude-system-site-packages = false\nversion = {facts.version}\nexecutable = {facts.python}\n"
    )
    for whl in wheels:
        name = whl.name.split("-")[0]
        scheme = {
            "purelib": site,
            "platlib": site,
            "headers": f"{VENV}/include/site/python{facts.version}/{name}",
            "scripts": f"{VENV}/bin",
            "data": VENV,
        }
        destination = SchemeDictionaryDestination(
            scheme, interpreter=f"{VENV}/bin/python", script_kind="posix", destdir=str(dest)
        )
        try:
            with WheelFile.open(whl) as source:
                install(source, destination, additional_metadata={"INSTALLER": b"modelship\n"})
        except (InstallerError, ValueError, OSError) as e:
            raise BuildError(f"installing {whl.name} failed ({e}); check the wheel, or resolve it again") from None


def _user_files(facts: BaseFacts) -> list[Entry]:
    """etc/passwd and etc/group with the app user added (when the base has no entry for its uid), and its home."""
    uid = APP_UID

    def has(text: str) -> bool:
        return any(line.split(":")[2:3] == [str(uid)] for line in text.splitlines())

    passwd, group = facts.passwd, facts.group
    if not has(passwd):
        passwd += ("" if not passwd or passwd.endswith("\n") else "\n") + (
            f"app:x:{uid}:{uid}:modelship app:{APP_HOME}:/usr/sbin/nologin\n"
        )
    if not has(group):
        group += ("" if not group or group.endswith("\n") else "\n") + f"app:x:{uid}:\n"
    home = APP_HOME.lstrip("/")
    out = [Entry("etc", DIR_MODE, directory=True), *parents(home), Entry(home, 0o700, directory=True, owner=uid)]
    for name, text in (("etc/passwd", passwd), ("etc/group", group)):
        data = text.encode()
        out.append(Entry(name, FILE_MODE, len(data), data=data))
    return out


def dependency_entries(wheel_dir: Path, facts: BaseFacts) -> list[Entry]:
    """Every entry of the dependencies layer: app user, empty model dir, /opt/venv with the wheels."""
    tree = _installed(wheel_dir, facts)
    model = MODEL_DIR.lstrip("/")
    entries = [*_user_files(facts), *parents(model), Entry(model, MODEL_DIR_MODE, directory=True)]
    return entries + _venv_entries(tree)


def _venv_entries(tree: Path) -> list[Entry]:
    """The venv's entries; their sha256s are remembered beside the cached tree (a rebuild hashes nothing: the
    upload checks each file against them as it reads it)."""
    note = tree / "entries.json"
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        return [
            Entry(n, m, z, directory=d, path=(tree / n) if h else None, sha256=h, link=k)
            for n, m, z, d, h, k in json.loads(note.read_text())
        ]
    entries = folder_entries(tree / VENV.lstrip("/"), VENV.lstrip("/"))
    remember(note, [[e.name, e.mode, e.size, e.directory, e.sha256, e.link] for e in entries])
    return entries


def requirement_files(requirements: Path | None, app_dir: Path) -> list[str]:
    """The requirements file and every file it includes (``-r``/``-c``, recursively), as paths relative to
    APP_DIR; files outside APP_DIR are not in the image (as with the engine builder) and are left out."""
    out: list[str] = []
    todo = [requirements] if requirements is not None else []
    seen: set[Path] = set()
    while todo:
        path = todo.pop().resolve()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        with contextlib.suppress(ValueError):
            out.append(path.relative_to(app_dir.resolve()).as_posix())
        for line in path.read_text(errors="replace").splitlines():
            m = _INCLUDES.match(line)
            if m and "://" not in m.group(1):
                todo.append(path.parent / m.group(1))
    return sorted(out)


def wheel_summary(wheel_dir: Path) -> str:
    """The resolved set, for the layer's history: ``name==version`` of each wheel."""
    names = sorted("==".join(w.name.split("-")[:2]) for w in wheel_dir.glob("*.whl"))
    return json.dumps(names)[:2000]


__all__ = ["VENV", "dependency_entries", "requirement_files", "wheel_summary"]
