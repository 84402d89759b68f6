"""What the plugin reports, read back as a CI system reads it: the JUnit XML and the run's one-line errors.

Real pytest runs (pytester, in a subprocess) against real images on the testbed's Docker engine: an app
that crashes or never gets ready, a wrong port, a failure's log tail in the JUnit XML (issue #14 item 13).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from _plugin_helpers import GOOD_CASES, remove_image

pytest_plugins = ["pytester"]

CHECKS = ("labels_match_model", "model_files_sha256", "non_root_user", "healthcheck", "no_secrets")
CASES = ("predict_cat", "predict_dog_subset", "version_schema", "bad_input_422")
NEED_CONTAINER = {"labels_match_model", "model_files_sha256", "non_root_user", *CASES}


@pytest.fixture(scope="module")
def image(docker_client, base_image):
    from _plugin_helpers import build_image

    tag = build_image(docker_client, base_image)
    yield tag
    remove_image(docker_client, tag)


def run(pytester: pytest.Pytester, *args: str, timeout: float = 180) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)


def junit(path: Path) -> dict[str, ET.Element]:
    """The testcases of a JUnit file by name."""
    root = ET.parse(path).getroot()  # noqa: S314 - the file pytest just wrote
    return {t.get("name"): t for t in root.iter("testcase")}


def outcome(case: ET.Element) -> str:
    for kind in ("error", "failure", "skipped"):
        if case.find(kind) is not None:
            return kind
    return "passed"


# ------------------------------------------------------------------------------- a container that is down


def test_a_crashing_app_reports_every_item_in_the_junit_xml(pytester, image):
    pytester.makefile(".yaml", **{"modelship-cases": GOOD_CASES})
    xml = pytester.path / "junit.xml"
    t0 = time.monotonic()
    result = run(pytester, "--modelship-image", image, "--modelship-env", "APP_MODE=crash", f"--junitxml={xml}")
    took = time.monotonic() - t0
    result.assert_outcomes(passed=2, errors=7)
    cases = junit(xml)
    # every check and every case is in the report: none vanished because the run stopped
    assert set(cases) == {*CHECKS, *CASES}, sorted(cases)
    assert {name: outcome(c) for name, c in cases.items()} == {
        name: "error" if name in NEED_CONTAINER else "passed" for name in cases
    }
    first = cases["labels_match_model"].find("error")
    assert "exited with code 3" in first.text and "before it was ready" in first.text
    assert "fatal: cannot load model weights.bin: corrupt header" in first.text  # the app's last words
    for name in NEED_CONTAINER - {"labels_match_model"}:
        text = cases[name].find("error").text
        # not blamed on this item: the container is down, and the first report has the details and the log
        assert text.startswith("modelship: container not running: container of "), text
        assert "exited with code 3" in text and "(details and log: modelship-image::labels_match_model)" in text
        assert "corrupt header" not in text  # the log tail once, not nine times
    assert took < 45, f"{took:.0f} s: a later item waited for the dead container instead of failing at once"
    assert "Traceback" not in result.stdout.str()


def test_the_log_tail_of_a_never_ready_app_leaves_the_probes_out(pytester, image):
    # at 40 probes a second, 3 s of probing is ~120 access-log lines: more than the 50 lines of a tail
    never_ready = ["--modelship-ready-path", "/nope", "--modelship-timeout", "3"]
    result = run(pytester, "--modelship-image", image, *never_ready, "-k", "labels")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "modelship: container of * not ready after 3 s: GET http://127.0.0.1:*/nope last gave HTTP 404;*",
            "*- modelship container log: modelship-*-main -*",
            "(* access-log line(s) of GET /nope left out)",
            "starting smoke app in mode good, token=-",
            "serving model 1.0.0 on port 8000",
        ]
    )
    assert '"GET /nope HTTP/1.1"' not in out


def test_probes_are_told_apart_by_their_user_agent(pytester, image):
    # an access log of JSON objects has no request line: the probes' User-Agent is what marks them
    pytester.makepyfile(
        """
        import json

        import modelship

        def test_agent(modelship_container, modelship_client):
            modelship_client.get("/version", headers={"User-Agent": "my-own-test"})
            entries = [json.loads(line) for line in modelship_container.logs().splitlines() if line.startswith("{")]
            probes = {e["agent"] for e in entries if e["path"] == "/health/ready"}
            assert probes == {f"modelship-probe/{modelship.__version__}"}
            tail = modelship_container.log_tail()
            assert '"agent": "my-own-test"' in tail  # the test's own request stays
            assert "modelship-probe" not in tail
            assert "serving model 1.0.0 on port 8000" in tail
        """
    )
    env = ["--modelship-env", "APP_ACCESS_LOG=json", "--modelship-env", "APP_READY_DELAY=0.5"]
    result = run(pytester, "--modelship-image", image, *env, "-k", "agent")
    result.assert_outcomes(passed=1)


def test_a_wrong_port_is_named_with_its_source_and_what_the_image_exposes(pytester, image):
    result = run(
        pytester, "--modelship-image", image, "--modelship-port", "9000", "--modelship-timeout", "3", "-k", "labels"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "modelship: container of * not ready after 3 s: nothing answers on container port 9000 "
            "(--modelship-port); the image exposes 8000: fix --modelship-port",
        ]
    )
    # the image's own port, but the app listens elsewhere: the message says where the port came from
    result = run(
        pytester, "--modelship-image", image, "--modelship-env", "PORT=9000", "--modelship-timeout", "3", "-k", "labels"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "modelship: container of * not ready after 3 s: nothing answers on container port 8000 (image EXPOSE): "
            "the app listens on another port or is still starting; pass --modelship-port PORT, "
            "or raise --modelship-timeout",
            "serving model 1.0.0 on port 9000",  # the app's log, right below, says where it listens
        ]
    )


# ------------------------------------------------------------------------------------------------- JUnit


def test_junit_holds_the_log_tail_without_junit_logging_and_passing_tests_get_no_sections(pytester, image):
    pytester.makefile(
        ".yaml", **{"modelship-cases": GOOD_CASES + "  - {name: wrong_status, path: /version, expect: {status: 201}}\n"}
    )
    xml = pytester.path / "junit.xml"
    # the command line docs/plugin.md gives for CI: --junitxml, nothing else
    secret = ["--modelship-env", "API_TOKEN=tok-secret-77"]
    result = run(pytester, "--modelship-image", image, *secret, f"--junitxml={xml}")
    result.assert_outcomes(passed=9, failed=1)
    cases = junit(xml)
    failure = cases["wrong_status"].find("failure")
    assert "status: expected 201, got 200" in failure.get("message")
    header = [line for line in failure.text.splitlines() if "modelship container log:" in line]
    assert len(header) == 1 and header[0].strip("- ").startswith("modelship container log: modelship-"), header
    assert "serving model 1.0.0 on port 8000" in failure.text
    assert "token=***" in failure.text and "tok-secret-77" not in xml.read_text()
    assert '"GET /health/ready HTTP/1.1"' not in failure.text  # the probe's line is not the app's story
    for name, case in cases.items():
        if name != "wrong_status":
            # no <system-out>/<system-err>, no text: a passing test carries nothing but its properties
            assert [child.tag for child in case if child.tag != "properties"] == [], (name, ET.tostring(case))
    # the terminal: the failure has its log section once; passing tests have none
    assert result.stdout.str().count("modelship container log:") == 1
    result = run(pytester, "--modelship-image", image, "-rA", "-k", "not wrong_status")
    result.assert_outcomes(passed=9, deselected=1)
    assert "modelship container" not in result.stdout.str()
