"""modelship.settings: the environment read into one checked value; MODELSHIP_MAX_ATTEMPTS bounds every retry."""

from __future__ import annotations

import os

import pytest

from modelship import cli, settings
from modelship._retry import Budget, retrying
from modelship.errors import ModelshipError, TransientError, UsageError
from support.servers import file_server


def test_the_defaults_and_a_changed_environment_is_seen_at_the_next_call(monkeypatch, tmp_path):
    for name in ("MODELSHIP_READ_TIMEOUT", "MODELSHIP_RETRY_BUDGET", "MODELSHIP_MAX_ATTEMPTS", "MODELSHIP_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "c"))
    s = settings.current()
    assert (s.read_timeout, s.retry_budget, s.max_attempts, s.max_retries, s.concurrency) == (30.0, 90.0, 5, 4, None)
    assert s.cache_dir == tmp_path / "c" and settings.current() is s  # parsed once per set of values
    monkeypatch.setenv("MODELSHIP_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("MODELSHIP_CONCURRENCY", "auto")
    monkeypatch.setenv("MODELSHIP_ACR_REGISTRIES", " Reg.Example:5000, ,other ")
    s = settings.current()
    assert (s.max_attempts, s.concurrency, s.acr_registries) == (2, None, {"reg.example:5000", "other"})


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("MODELSHIP_READ_TIMEOUT", "abc", "MODELSHIP_READ_TIMEOUT='abc': give a number of seconds, more than 0"),
        ("MODELSHIP_READ_TIMEOUT", "0", "MODELSHIP_READ_TIMEOUT='0': give a number of seconds, more than 0"),
        ("MODELSHIP_RETRY_BUDGET", "-1", "MODELSHIP_RETRY_BUDGET='-1': give a number of seconds, 0 or more"),
        ("MODELSHIP_RETRY_BUDGET", "nan", "MODELSHIP_RETRY_BUDGET='nan': give a number of seconds"),
        ("MODELSHIP_MAX_ATTEMPTS", "0", "MODELSHIP_MAX_ATTEMPTS='0': give a number of attempts in all from 1 to"),
        ("MODELSHIP_MAX_ATTEMPTS", "2.5", "MODELSHIP_MAX_ATTEMPTS='2.5'"),
        ("MODELSHIP_CONCURRENCY", "0", "MODELSHIP_CONCURRENCY='0': give a number of connections from 1 to 64"),
        ("MODELSHIP_CONCURRENCY", "65", "MODELSHIP_CONCURRENCY='65': give a number of connections from 1 to 64"),
        ("MODELSHIP_REGISTRY_TIMEOUT", "soon", "MODELSHIP_REGISTRY_TIMEOUT='soon': give a number of seconds"),
    ],
)
def test_a_malformed_variable_is_refused_in_one_line_naming_it(tmp_path, monkeypatch, capsys, name, value, says):
    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=f"^{name}="):
        settings.current()
    store = f"file://{tmp_path}/store"
    assert cli.main(["fetch", store, "--version", "1", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"modelship: error: {says}") and err.count("\n") == 1, err
    assert "--workers" not in err and not (tmp_path / "out").exists()


def test_max_attempts_bounds_retrying_and_every_budget(monkeypatch):
    def failing() -> list[int]:
        calls = [0]

        def fn() -> None:
            calls[0] += 1
            raise TransientError(f"reset #{calls[0]}")

        return calls, fn

    calls, fn = failing()
    with pytest.raises(ModelshipError, match=r"reset #5 \(gave up after 4 retries\)"):
        retrying("x", fn, delay=lambda n: 0.0)  # the default: 5 attempts in all
    monkeypatch.setenv("MODELSHIP_MAX_ATTEMPTS", "1")
    calls, fn = failing()
    with pytest.raises(ModelshipError, match=r"reset #1 \(gave up after 0 retries\)"):
        retrying("x", fn, retries=3, delay=lambda n: 0.0)  # an operation's own count is capped too
    assert calls[0] == 1
    assert Budget("x").retries == 0 and Budget("x", retries=2).retries == 0
    monkeypatch.setenv("MODELSHIP_MAX_ATTEMPTS", "3")
    assert Budget("x").retries == 2 and Budget("x", retries=1).retries == 1


@pytest.mark.parametrize(
    ("attempts", "failures", "ok"), [(None, 4, True), ("1", 1, False), ("2", 1, True), ("2", 2, False)]
)
def test_max_attempts_is_what_the_download_engine_reads_a_range(tmp_path, monkeypatch, capsys, attempts, failures, ok):
    """A real HTTP server that answers the first ``failures`` GETs with 503: fetched within the attempts, or not."""
    if attempts is None:
        monkeypatch.delenv("MODELSHIP_MAX_ATTEMPTS", raising=False)
    else:
        monkeypatch.setenv("MODELSHIP_MAX_ATTEMPTS", attempts)
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache"))
    with file_server({"/w.bin": os.urandom(100_000)}) as ((host, port), handler):
        handler.fail_first = failures
        rc = cli.main(["fetch", f"http://{host}:{port}/w.bin", str(tmp_path / "out")])
        left = handler.fail_first
    err = capsys.readouterr().err
    assert (rc == 0) is ok and left == 0, err  # every 503 was met: a failure is the attempts running out
    if not ok:
        assert f"answered 503 (gave up after {int(attempts) - 1} retries)" in err and err.count("\n") == 1, err
        assert not (tmp_path / "out").exists()
