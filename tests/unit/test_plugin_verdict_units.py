"""The verdict's predicate from the session's reports (pytest_modelship.verdict): which test lands in which
list, and when the result is FAILED. The attestation itself is tested against the registry
(tests/integration/test_plugin_verdict.py)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from pytest_modelship.settings import Settings
from pytest_modelship.verdict import IMAGE_PROPERTY, Verdict, run_url


def _report(nodeid: str, when: str, outcome: str, props=()) -> SimpleNamespace:
    return SimpleNamespace(
        nodeid=nodeid,
        when=when,
        passed=outcome == "passed",
        failed=outcome == "failed",
        skipped=outcome == "skipped",
        user_properties=list(props),
    )


def _verdict(tmp_path) -> Verdict:
    cases = tmp_path / "smoke" / "cases.yaml"
    cases.parent.mkdir()
    cases.write_text("cases: []\n")
    settings = Settings(image="r/x@sha256:" + "0" * 64, cases=str(cases))
    run = SimpleNamespace(settings=settings, config=SimpleNamespace(rootpath=tmp_path), is_worker=False)
    return Verdict(run, "team.pem")  # type: ignore[arg-type]


def _feed(v: Verdict, *runs: tuple[str, str, str, str]) -> None:
    for nodeid, setup, call, teardown in runs:
        for when, outcome in (("setup", setup), ("call", call), ("teardown", teardown)):
            if outcome:
                v.pytest_runtest_logreport(_report(nodeid, when, outcome))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_ci(monkeypatch):
    for name in ("SYSTEM_COLLECTIONURI", "SYSTEM_TEAMPROJECT", "BUILD_BUILDID", "GITHUB_SERVER_URL", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)


def test_passed_warned_failed_and_skipped_tests_land_in_their_lists(tmp_path):
    v = _verdict(tmp_path)
    _feed(
        v,
        ("a::ok", "passed", "passed", "passed"),
        ("a::warns", "passed", "passed", "passed"),
        ("a::skipped", "skipped", "", "passed"),
        ("a::xfail", "passed", "skipped", "passed"),
    )
    v.pytest_warning_recorded("a::warns")
    v.pytest_warning_recorded("")  # a warning of no test
    p = v.predicate(pytest.ExitCode.OK)
    assert p["result"] == "PASSED"
    assert (p["passedTests"], p["warnedTests"], p["failedTests"]) == (["a::ok"], ["a::warns"], [])
    sha = hashlib.sha256(b"cases: []\n").hexdigest()
    assert p["configuration"][0] == {"name": "smoke/cases.yaml", "digest": {"sha256": sha}}
    assert p["configuration"][1]["name"] == "pytest-modelship"
    assert "url" not in p  # not on CI


def test_the_ci_runs_page_is_the_url(tmp_path, monkeypatch):
    azure = {
        "SYSTEM_COLLECTIONURI": "https://dev.azure.com/acme/",
        "SYSTEM_TEAMPROJECT": "ml ops",
        "BUILD_BUILDID": "42",
    }
    assert run_url(azure) == "https://dev.azure.com/acme/ml%20ops/_build/results?buildId=42"
    github = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/iris", "GITHUB_RUN_ID": "7"}
    assert run_url(github) == "https://github.com/acme/iris/actions/runs/7"
    assert run_url({"BUILD_BUILDID": "42"}) is None
    for name, value in azure.items():
        monkeypatch.setenv(name, value)
    v = _verdict(tmp_path)
    _feed(v, ("a::ok", "passed", "passed", "passed"))
    assert v.predicate(pytest.ExitCode.OK)["url"] == "https://dev.azure.com/acme/ml%20ops/_build/results?buildId=42"


def test_a_failure_in_any_phase_fails_the_test_and_the_verdict(tmp_path):
    v = _verdict(tmp_path)
    _feed(
        v,
        ("a::setup_error", "failed", "", "passed"),
        ("a::call", "passed", "failed", "passed"),
        ("a::teardown_error", "passed", "passed", "failed"),
        ("a::ok", "passed", "passed", "passed"),
    )
    p = v.predicate(pytest.ExitCode.TESTS_FAILED)
    assert p["result"] == "FAILED"
    assert p["failedTests"] == ["a::call", "a::setup_error", "a::teardown_error"]
    assert p["passedTests"] == ["a::ok"]
    assert "warnedTests" not in p


def test_a_session_that_errored_is_failed_with_every_test_passed(tmp_path):
    v = _verdict(tmp_path)
    _feed(v, ("a::ok", "passed", "passed", "passed"))
    assert v.predicate(pytest.ExitCode.INTERRUPTED)["result"] == "FAILED"  # e.g. a collection error
    assert v.predicate(pytest.ExitCode.OK)["result"] == "PASSED"


def test_the_images_containers_ran_are_gathered_from_every_report(tmp_path):
    v = _verdict(tmp_path)
    v.pytest_runtest_logreport(_report("a::x", "setup", "passed", [(IMAGE_PROPERTY, "sha256:aa"), ("other", 1)]))  # type: ignore[arg-type]
    v.pytest_runtest_logreport(_report("a::y", "setup", "passed", [(IMAGE_PROPERTY, "sha256:bb")]))  # type: ignore[arg-type]
    assert v.tested == {"sha256:aa", "sha256:bb"}
