"""modelship cache prune: old or least recently used entries go, model folders keep their files, nothing that is
not a verified entry in the cache's own layout is touched, and a fetch that is using the cache stops it."""

from __future__ import annotations

import threading
import time

import pytest

import modelship
from modelship import cli
from modelship.cache import Cache, parse_size, prune
from modelship.errors import UsageError
from support.models import make_model


def _entries(cache) -> set[str]:
    return {p.name for p in (cache / "sha256").rglob("*") if p.is_file()}


@pytest.fixture
def two_versions(tmp_path):
    """Versions 1 and 2 fetched a moment apart (1's entries are the least recently used), with foreign files."""
    store, cache = f"file://{tmp_path}/store", tmp_path / "cache"
    for v, seed in (("1", 1), ("2", 2)):
        modelship.publish(make_model(tmp_path / f"m{v}", {"a.bin": 3000, "b.bin": 5000}, seed=seed), store, version=v)
    one = modelship.fetch(store, tmp_path / "d1", version="1", cache_dir=cache, progress=False)
    time.sleep(1.0)
    between = time.time()  # version 1's entries were last used before, version 2's after
    time.sleep(1.0)
    two = modelship.fetch(store, tmp_path / "d2", version="2", cache_dir=cache, progress=False)
    foreign = [cache / "notes.txt", cache / "sha256" / "ab" / "mine.bin", cache / "tmp" / "dl.1.part"]
    unstamped = cache / "sha256" / "ff" / ("f" * 64)  # a hex name but not a verified entry (no stamp)
    for p in [*foreign, unstamped]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"not modelship's entry")
    old = {f.sha256 for f in one.manifest.files}
    new = {f.sha256 for f in two.manifest.files}
    return store, cache, old, new, [*foreign, unstamped], between


def test_entries_not_used_for_a_while_go_and_the_model_folders_keep_their_files(tmp_path, two_versions):
    store, cache, old, new, foreign, between = two_versions

    def since() -> float:
        return (time.time() - between) / 86_400  # days since between the two fetches

    notes = len(list((cache / "etags").iterdir()))
    assert notes == 4
    dry = prune(keep_days=since(), cache_dir=cache, dry_run=True)  # version 1's: not used since
    assert (dry.removed, dry.kept, dry.freed) == (2, 2, 8000) and _entries(cache) >= old | new
    r = prune(keep_days=since(), cache_dir=cache)
    assert (r.removed, r.freed, r.kept, r.kept_bytes) == (2, 8000, 2, 8000)
    assert new <= _entries(cache) and not old & _entries(cache)
    assert len(list((cache / "etags").iterdir())) == 2  # the notes that pointed to removed entries went too
    for name in ("a.bin", "b.bin"):  # hard links: the folder's files outlive the cache's entries
        assert (tmp_path / "d1" / name).read_bytes() == (tmp_path / "m1" / name).read_bytes()
    assert all(p.read_bytes() == b"not modelship's entry" for p in foreign)
    again = modelship.fetch(store, tmp_path / "d3", version="1", cache_dir=cache, progress=False)
    assert again.downloaded_files == 2  # a removed entry is simply downloaded again


def test_max_size_removes_the_least_recently_used_first(tmp_path, two_versions, monkeypatch, capsys):
    _, cache, old, new, foreign, _ = two_versions
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(cache))
    assert cli.main(["cache", "prune", "--max-size", "8000", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"removed": 2' in out and '"kept_bytes": 8000' in out
    assert _entries(cache) & (old | new) == new and all(p.exists() for p in foreign)
    assert prune(max_size=0, cache_dir=cache).removed == 2 and not _entries(cache) & new


def test_a_fetch_using_the_cache_makes_prune_stop_with_one_line(tmp_path, monkeypatch, capsys):
    """A fetch in another thread holds the cache (its store read waits); prune refuses, the fetch completes."""
    from modelship.hookspecs import hookimpl
    from modelship.stores import plugin_manager
    from modelship.stores.local import LocalSource

    make_model(tmp_path / "x" / "1.0", {"w": 10})
    reading, go = threading.Event(), threading.Event()

    class Slow(LocalSource):
        def read(self, name, offset, length, etag):
            reading.set()
            go.wait(10)
            yield from super().read(name, offset, length, etag)

    def slow(uri, credential):
        source = Slow(uri, credential)
        source.root = tmp_path
        return source

    class Plugin:
        @hookimpl
        def modelship_stores(self):
            return {"slow": slow}

    cache = tmp_path / "cache"
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(cache))
    Cache(cache)  # the layout exists: prune looks at it
    plugin_manager().register(Plugin(), name="slow")
    results = []
    try:
        t = threading.Thread(
            target=lambda: results.append(modelship.fetch("slow://x/x", tmp_path / "o", progress=False))
        )
        t.start()
        assert reading.wait(10)
        assert cli.main(["cache", "prune", "--max-size", "0"]) == 1
        err = capsys.readouterr().err
        busy = f"the cache {cache} is in use by a modelship fetch right now; prune again once it is done"
        assert err == f"modelship: error: {busy}\n"
        go.set()
        t.join(10)
    finally:
        go.set()
        plugin_manager().unregister(name="slow")
    assert results and results[0].downloaded_files == 1 and (tmp_path / "o" / "w").exists()
    assert prune(max_size=0).removed == 1


def test_prune_says_what_it_needs():
    with pytest.raises(UsageError, match="--keep-days DAYS, --max-size SIZE, or both"):
        prune()
    with pytest.raises(UsageError, match="--keep-days must be 0 or more"):
        prune(keep_days=-1)
    assert [parse_size(s) for s in ("0", "10", "2k", "1.5M", "20G", "1 GiB", "3TB")] == [
        0, 10, 2048, 1572864, 20 * 1024**3, 1024**3, 3 * 1024**4,
    ]  # fmt: skip
    with pytest.raises(UsageError, match="'lots' is not a size"):
        parse_size("lots")
