"""How many connections a download opens (modelship._connections): fixed by --workers or MODELSHIP_CONCURRENCY,
else grown by the Tuner while throughput grows; how many files a publish uploads at once."""

from __future__ import annotations

import threading
import time

import pytest

import modelship
from modelship import cli
from modelship._connections import START, UPLOADS_MAX, UPLOADS_MIN, Tuner, uploads
from support.models import make_model

MiB = 1024 * 1024


def test_workers_and_modelship_concurrency_fix_the_number_of_connections(tmp_path, monkeypatch, capsys):
    store = f"file://{tmp_path}/store"
    modelship.publish(
        make_model(tmp_path / "m", {f"f{i}": 2 * MiB for i in range(12)}), store, version="1", progress=False
    )
    monkeypatch.setenv("MODELSHIP_CONCURRENCY", "3")
    assert modelship.fetch(store, tmp_path / "a", cache_dir=tmp_path / "c1", progress=False).connections == 3
    assert modelship.fetch(store, tmp_path / "b", cache_dir=tmp_path / "c2", workers=5, progress=False).connections == 5
    monkeypatch.setenv("MODELSHIP_CONCURRENCY", "lots")
    assert cli.main(["fetch", store, str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "MODELSHIP_CONCURRENCY='lots'" in err and err.count("\n") == 1
    monkeypatch.delenv("MODELSHIP_CONCURRENCY")
    assert cli.main(["fetch", store, str(tmp_path / "c"), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    monkeypatch.setenv("MODELSHIP_CONCURRENCY", "65")
    assert cli.main(["fetch", store, str(tmp_path / "c")]) == 2
    assert "MODELSHIP_CONCURRENCY='65': give a number of connections from 1 to 64" in capsys.readouterr().err


def _drive(tuner: Tuner, rate_of) -> None:
    """Feed the tuner range samples of 4 MiB at the per-connection rate ``rate_of(limit)`` until it settles."""
    for _ in range(10_000):
        if tuner.settled:
            return
        tuner.sample(tuner.step, 4 * MiB, 4 * MiB / rate_of(tuner.limit))
    raise AssertionError("the tuner never settled")


def test_tuner_grows_while_throughput_grows_and_stops_where_it_does_not():
    per_connection = 25e6  # a link that paces each connection: every one added brings as much again
    link = Tuner(None, 32)
    _drive(link, lambda n: per_connection)
    assert link.limit == 32 and link.peak == 32
    machine = Tuner(None, 32)  # 200 MB/s for all connections together: more only share it
    _drive(machine, lambda n: 200e6 / n)
    assert machine.limit == START and machine.peak > START
    both = Tuner(None, 64)  # 25 MB/s per connection up to 300 MB/s in all: settles near 12
    _drive(both, lambda n: min(per_connection, 300e6 / n))
    assert 10 <= both.limit <= 18, both.limit
    fixed = Tuner(6, 32)
    _drive(fixed, lambda n: per_connection)
    assert fixed.limit == fixed.peak == 6


# ---------------------------------------------------------------------------------------------- publish


def test_uploads_at_once_follow_the_setting_else_the_memory_one_upload_holds(monkeypatch):
    monkeypatch.delenv("MODELSHIP_CONCURRENCY", raising=False)
    assert uploads(None, 2_000) == UPLOADS_MAX == 16  # small files: many requests, each waits for its answer
    assert uploads(None, 12 * MiB) == 8  # sent in one request each, held whole
    assert uploads(None, 2 * 1024 * MiB) == UPLOADS_MIN == 4  # blocks of 8 MiB, four at once per file
    assert uploads(3, 2_000) == 3
    monkeypatch.setenv("MODELSHIP_CONCURRENCY", "5")
    assert uploads(None, 2 * 1024 * MiB) == 5 and uploads(2, 10) == 2


@pytest.mark.parametrize(("args", "env", "expected"), [([], None, 16), (["--workers", "3"], None, 3), ([], "5", 5)])
def test_publish_uploads_as_many_files_at_once_as_asked(tmp_path, monkeypatch, args, env, expected):
    """Counted in a store that wraps the folder store and holds each write a moment (a real round trip)."""
    from modelship.hookspecs import hookimpl
    from modelship.stores import plugin_manager
    from modelship.stores.local import LocalSource

    if env is None:
        monkeypatch.delenv("MODELSHIP_CONCURRENCY", raising=False)
    else:
        monkeypatch.setenv("MODELSHIP_CONCURRENCY", env)
    lock, now, most = threading.Lock(), [0], [0]

    class Counting(LocalSource):
        def write(self, *a, **kw):
            with lock:
                now[0] += 1
                most[0] = max(most[0], now[0])
            try:
                time.sleep(0.05)
                return super().write(*a, **kw)
            finally:
                with lock:
                    now[0] -= 1

    def counting(uri, credential):
        source = Counting(uri, credential)
        source.root = tmp_path / "store"
        return source

    class Plugin:
        @hookimpl
        def modelship_stores(self):
            return {"counting": counting}

    model = make_model(tmp_path / "m", {f"f{i}": 100 for i in range(40)})
    plugin_manager().register(Plugin(), name="counting")
    try:
        assert cli.main(["publish", str(model), "counting://x/iris", "--version", "1", *args]) == 0
    finally:
        plugin_manager().unregister(name="counting")
    assert most[0] == expected and len(list((tmp_path / "store" / "iris" / "1").iterdir())) == 41


def test_publish_workers_must_be_a_number_of_files(tmp_path, capsys):
    model = make_model(tmp_path / "m", {"f": 100})
    assert cli.main(["publish", str(model), f"file://{tmp_path}/s", "--version", "1", "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err and not (tmp_path / "s").exists()
