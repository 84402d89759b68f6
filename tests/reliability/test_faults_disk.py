"""Local file-system faults during fetch: disk full (small tmpfs mounts), read-only DEST or cache, and a model
file edited in place after the fetch (it is a hard link to the cache entry).

The tmpfs mounts are real (the tests run as root, like CI containers do) and are unmounted in finalizers.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import modelship
from modelship import cli
from modelship.cache import Cache
from modelship.manifest import FileEntry, Manifest
from support.faults.checks import cache_problems, error_line_problems
from support.models import make_model
from support.record import record_run, recovery, rng_for, seeds
from support.trees import leftovers, snapshot, tree_sha

pytest_plugins = ["support.faults.stores"]  # the store fixtures
pytestmark = pytest.mark.timeout(120)  # a hang is a failure, found in minutes


def _record_single(cell: str, outcome: str, error: str = "") -> None:
    """A fault made once (not seeded): it passed its assertions, so it is no violation."""
    record_run("disk", cell, outcome, [], seed=0, injected=1, secrets=0, error=error)


@pytest.fixture
def tmpfs(tmp_path) -> Iterator:
    """mount(name, size) → a fresh tmpfs of that size under tmp_path; all unmounted at the end."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "8m") -> Path:
        path = tmp_path / name
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount_ro(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


def fill(fs: Path, leave: int) -> None:
    """Fill a tmpfs until ``leave`` bytes are free."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    if free > leave:
        with open(fs / "ballast", "wb") as f:
            os.posix_fallocate(f.fileno(), 0, free - leave)


def _fetch(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = cli.main(["fetch", *argv, "--no-progress"])
    return rc, capsys.readouterr().err


V2_BYTES = 9 * 1024 * 1024 + 17 + 1024 * 1024 + 22  # the files of version 2.0.0 (see support.faults.stores)
ROOM = 256 * 1024  # beyond the model's bytes: blocks, modelship.json, folders; more free than that must succeed


@pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("where", ["cache", "dest"])
def test_disk_full_at_a_random_fill_level(azurite_backend, tmp_path, monkeypatch, capsys, tmpfs, where, seed):
    """The cache's or DEST's disk has a random amount of free space left: enough, or running out somewhere."""
    backend = azurite_backend
    backend.env(monkeypatch)
    rng = rng_for("disk", where, seed)
    fs = tmpfs("fs", "16m")
    if where == "cache":
        monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(fs / "cache"))
        dest = tmp_path / "out" / "model"
    else:  # DEST on another file system than the cache: files are copied, not hard-linked
        dest = fs / "out" / "model"
    dest.parent.mkdir(parents=True)
    if seed % 2 == 0:
        modelship.fetch(backend.uri(), dest, version="1.0.0", progress=False)
    before = snapshot(dest)
    leave = rng.randrange(0, V2_BYTES + 2 * 1024 * 1024)
    fill(fs, leave)
    rc, err = _fetch(capsys, backend.uri(), str(dest))
    problems = []
    if rc != 0 and leave >= V2_BYTES + ROOM:  # the model fits: a fetch that needs more is a regression
        problems.append(f"failed with {leave} bytes free for a {V2_BYTES}-byte model: {err.strip()[-200:]}")
    if rc == 0:
        outcome = "success"
        if tree_sha(dest) != tree_sha(backend.v2):
            problems.append("DEST differs from the source")
    else:
        outcome = "clean-failure"
        problems += error_line_problems(rc, err)
        if "no space left" not in err:
            problems.append(f"not a disk-full message: {err.strip()}")
        if snapshot(dest) != before:
            problems.append("DEST changed by a failed fetch")
    problems += leftovers(dest.parent) + cache_problems(Cache())
    record_run(
        "disk",
        f"disk full ({where})",
        outcome,
        problems,
        seed=seed,
        injected=1,
        secrets=0,
        **recovery(needed=leave >= V2_BYTES + ROOM, ok=rc == 0),
        error=err.strip() if rc else "",
    )
    assert not problems, problems


def test_cache_on_a_disk_too_small_for_the_model(azurite_backend, monkeypatch, capsys, tmpfs, tmp_path):
    backend = azurite_backend
    backend.env(monkeypatch)
    fs = tmpfs("small", "8m")  # the model is 10 MiB
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(fs))
    rc, err = _fetch(capsys, backend.uri(), str(tmp_path / "o"))
    assert error_line_problems(rc, err) == []
    assert "no space left for w.bin" in err and "MODELSHIP_CACHE_DIR" in err
    assert not (tmp_path / "o").exists() and list(Cache().tmp.iterdir()) == []
    _record_single("cache disk smaller than the model", "clean-failure", err.strip())


@pytest.mark.parametrize("case", ["dest-exists", "dest-parent-missing"])
def test_dest_on_a_read_only_file_system(azurite_backend, monkeypatch, capsys, tmpfs, case):
    backend = azurite_backend
    backend.env(monkeypatch)
    fs = tmpfs("ro", "16m")
    dest = fs / "model" if case == "dest-exists" else fs / "missing" / "model"
    if case == "dest-exists":
        modelship.fetch(backend.uri(), dest, version="1.0.0", progress=False)
    before = snapshot(dest)
    cached = sorted(p.name for p in (Cache().root / "sha256").rglob("*"))
    remount_ro(fs)
    rc, err = _fetch(capsys, backend.uri(), str(dest))
    assert error_line_problems(rc, err) == [], err
    assert "read-only file system" in err.lower() or "Read-only" in err
    assert snapshot(dest) == before
    # It fails before downloading anything: nothing new in the cache.
    assert sorted(p.name for p in (Cache().root / "sha256").rglob("*")) == cached
    _record_single(f"read-only DEST ({case})", "clean-failure", err.strip())


def test_read_only_cache_folder(azurite_backend, monkeypatch, capsys, tmpfs, tmp_path):
    backend = azurite_backend
    backend.env(monkeypatch)
    fs = tmpfs("rocache", "1m")
    remount_ro(fs)
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(fs / "cache"))
    rc, err = _fetch(capsys, backend.uri(), str(tmp_path / "o"))
    assert error_line_problems(rc, err) == [], err
    assert "read-only file system" in err and "MODELSHIP_CACHE_DIR" in err
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []
    _record_single("read-only cache folder", "clean-failure", err.strip())


def test_lock_file_on_a_read_only_file_system(azurite_backend, monkeypatch, capsys, tmpfs, tmp_path):
    """`lock -o` into a read-only folder: the line names the lock file and -o, not DEST (lock has none)."""
    backend = azurite_backend
    backend.env(monkeypatch)
    fs = tmpfs("rolock", "1m")
    remount_ro(fs)
    capsys.readouterr()
    rc = cli.main(["lock", backend.uri(), "-o", str(fs / "modelship.lock"), "--no-progress"])
    err = capsys.readouterr().err
    assert error_line_problems(rc, err) == [], err
    assert f"cannot write the lock file {fs / 'modelship.lock'}: Read-only file system; choose a writable path" in err
    assert "DEST" not in err
    _record_single("read-only folder for lock -o", "clean-failure", err.strip())


def test_lock_on_a_full_disk_leaves_the_previous_lock_intact(monkeypatch, capsys, tmpfs, tmp_path):
    """`lock -o` over an existing lock on a full disk: one line, and the old lock byte for byte (a truncating
    write left a 0-byte or 4,096-byte fragment, and the next `fetch --lock` failed on invalid JSON)."""
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache"))
    uri = (tmp_path / "store").as_uri()
    for version, count in (("1", 50), ("2", 400)):  # locks of ~10 KB and ~80 KB: several pages each
        files = {f"part-{i:04d}.bin": 16 for i in range(count)}
        modelship.publish(make_model(tmp_path / f"m{version}", files, seed=count), uri, version=version, progress=False)
    fs = tmpfs("lockfs", "1m")
    lock = fs / "modelship.lock"
    assert cli.main(["lock", uri, "--version", "1", "-o", str(lock), "--no-progress"]) == 0
    before = lock.read_bytes()
    fill(fs, 0)
    capsys.readouterr()
    rc = cli.main(["lock", uri, "--version", "2", "-o", str(lock), "--no-progress"])
    err = capsys.readouterr().err
    assert error_line_problems(rc, err) == [], err
    assert f"no space left on the device of the lock file {lock}; free space, or choose another -o path" in err
    assert lock.read_bytes() == before
    assert sorted(p.name for p in fs.iterdir()) == ["ballast", "modelship.lock"]  # no temp file left
    (fs / "ballast").unlink()
    assert modelship.fetch(None, tmp_path / "dest", lock=lock, progress=False).version == "1"
    _record_single("disk full for lock -o", "clean-failure", err.strip())


def test_manifest_write_on_a_full_disk_leaves_the_previous_manifest(tmpfs):
    """Manifest.write, the same rule: the previous modelship.json stays whole, no temp file stays."""
    fs = tmpfs("manifestfs", "1m")
    entries = [FileEntry(f"f{i:05d}.bin", i, hashlib.sha256(str(i).encode()).hexdigest()) for i in range(2000)]
    small = Manifest.create("file:///m", "1", entries[:10])
    small.write(fs / "modelship.json")
    before = (fs / "modelship.json").read_bytes()
    fill(fs, 0)
    with pytest.raises(OSError) as e:
        Manifest.create("file:///m", "2", entries).write(fs / "modelship.json")
    assert e.value.errno == errno.ENOSPC
    assert (fs / "modelship.json").read_bytes() == before
    assert sorted(p.name for p in fs.iterdir()) == ["ballast", "modelship.json"]


def test_deploy_render_on_a_full_disk_writes_nothing(capsys, tmpfs):
    """deploy render with no space left: one line, and --out as it was (it left a 0-byte deployment.yaml and
    said "unexpected OSError")."""
    fs = tmpfs("renderfs", "1m")
    out = fs / "k8s"
    out.mkdir()
    (out / "deployment.yaml").write_text("# the previous render\n")
    fill(fs, 0)
    capsys.readouterr()
    image = "reg.io/iris@sha256:" + "0" * 64
    app = ["--port", "8000", "--ready-path", "/ready", "--live-path", "/live"]
    rc = cli.main(["deploy", "render", "--image", image, "--out", str(out), *app])
    err = capsys.readouterr().err
    assert error_line_problems(rc, err) == [], err
    assert f"no space left on the device of {out}; free space or choose another --out" in err
    assert sorted(p.name for p in out.iterdir()) == ["deployment.yaml"]
    assert (out / "deployment.yaml").read_text() == "# the previous render\n"
    assert sorted(p.name for p in fs.iterdir()) == ["ballast", "k8s"]
    _record_single("disk full for deploy render", "clean-failure", err.strip())


def test_model_file_edited_in_place_after_the_fetch(azurite_backend, monkeypatch, tmp_path):
    """DEST files are hard links to cache entries: writing one in place (root ignores the 0444 mode) must not
    poison the cache, and the next fetch must notice DEST is no longer what was fetched."""
    backend = azurite_backend
    backend.env(monkeypatch)
    dest = tmp_path / "a"
    modelship.fetch(backend.uri(), dest, progress=False)
    with open(dest / "b.bin", "r+b") as f:  # same size, other bytes, same inode as the cache entry
        f.write(b"\0" * 64)
    other = modelship.fetch(backend.uri(), tmp_path / "b", progress=False)
    assert tree_sha(tmp_path / "b") == tree_sha(backend.v2), "an edited file was served from the cache"
    assert other.downloaded_files == 1  # only the damaged one again
    again = modelship.fetch(backend.uri(), dest, progress=False)
    assert not again.unchanged and tree_sha(dest) == tree_sha(backend.v2)
    assert cache_problems(Cache()) == []
    for p in (Cache().root / "sha256").rglob("*"):
        if p.is_file():
            assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name
    _record_single("model file edited in place after fetch", "success")
