"""Publishing to a local folder (file://) leaves nothing behind: a write killed with SIGKILL leaves its temp file,
and running the same publish again (the resume) sweeps it (issue 19 item 4: `.w.bin.<random>.part` files stayed
for good, and every resolve of the version warned about them)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import modelship
from modelship.stores.local import STALE_AFTER, part_name
from support.models import make_model

# A child process that publishes and kills itself (SIGKILL: no handler, no cleanup) once the first MiB of
# w.bin is in its temp file: a kill at a known point of the write, every run.
_KILLED_PUBLISH = """
import os, signal, sys
import modelship
from modelship.stores import local

write = local.LocalSource.write

def killed_write(self, name, path, *, sha256, md5, progress=None):
    def on_progress(n):
        if name.endswith("w.bin"):
            os.kill(os.getpid(), signal.SIGKILL)
        if progress:
            progress(n)
    return write(self, name, path, sha256=sha256, md5=md5, progress=on_progress)

local.LocalSource.write = killed_write
modelship.publish(sys.argv[1], sys.argv[2], version="1", workers=1, progress=False)
"""


def _parts(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.part"))


def _killed_publish(model: Path, uri: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _KILLED_PUBLISH, str(model), uri], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr


def test_a_publish_killed_mid_write_is_swept_by_the_resume(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache"))
    model = make_model(tmp_path / "model", {"a.txt": b"a", "sub/w.bin": 5 * 1024 * 1024})
    store = tmp_path / "store"
    uri = store.as_uri()
    _killed_publish(model, uri)
    left = _parts(store)
    assert len(left) == 1 and left[0].startswith("1/sub/.w.bin.modelship-"), left  # the kill's debris

    caplog.set_level(logging.INFO, logger="modelship")
    manifest = modelship.publish(model, uri, version="1", progress=False)
    assert "resuming the publish" in caplog.text
    assert _parts(store) == []
    assert sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()) == [
        "1/a.txt",
        "1/modelship.json",
        "1/sub/w.bin",
    ]
    caplog.clear()
    res = modelship.resolve(uri)
    assert res.version == "1" and {f.path for f in res.files} == {f.path for f in manifest.files}
    assert "ignoring" not in caplog.text


def test_only_the_debris_of_dead_writes_is_swept(tmp_path):
    """A live process's temp file stays (a publish of the same version running now is not ours to break); a
    dead one's, an old-style random one, and another machine's untouched for an hour go."""
    src = make_model(tmp_path / "model", {"w.bin": 2 * 1024 * 1024})
    _killed_publish(src, (tmp_path / "store").as_uri())  # the version's marker, for the resume below
    store = tmp_path / "store" / "1"
    live = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        ours = part_name("w.bin")
        names = {
            "live": ours.replace(f"-{os.getpid()}-", f"-{live.pid}-"),
            "dead": ours.replace(f"-{os.getpid()}-", f"-{dead.pid}-"),
            "legacy-old": ".w.bin.0123456789ab.part",
            "legacy-new": ".b.bin.0123456789ab.part",
            "elsewhere-old": ".w.bin.modelship-1-ffffffff-0.part",
            "elsewhere-new": ".b.bin.modelship-1-fffffffe-3.part",
            "users": ".notes.part",  # not a name modelship makes: never ours to delete
        }
        for key, name in names.items():
            (store / name).write_bytes(b"x")
            if key.endswith("-old") or key == "users":
                old = time.time() - STALE_AFTER - 60
                os.utime(store / name, (old, old))
        modelship.publish(src, (tmp_path / "store").as_uri(), version="1", progress=False)
        kept = {p.name for p in store.iterdir()}
        stay = {names[k] for k in ("live", "legacy-new", "elsewhere-new", "users")}
        assert kept == {"w.bin", "modelship.json"} | stay
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize("mode", [0o644, 0o600])
def test_published_files_keep_their_mode_under_the_umask(tmp_path, mode):
    src = make_model(tmp_path / "model", {"w.bin": 10})
    os.chmod(src / "w.bin", mode)
    umask = os.umask(0o022)
    try:
        modelship.publish(src, (tmp_path / "store").as_uri(), version="1", progress=False)
    finally:
        os.umask(umask)
    assert (tmp_path / "store" / "1" / "w.bin").stat().st_mode & 0o777 == mode & ~0o022
