"""The pytest plugin against the real Docker engine, a run's life: cases, checks and the tests' own tests pass
or fail readably, a container that crashes or never gets ready, signals and leftovers cleaned up, xdist
workers, Ryuk, pulling. pytester runs pytest in a subprocess on small images (good_image, own_tag:
conftest.py)."""

from __future__ import annotations

import signal
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

from support.plugin_images import GOOD_CASES, Variant, build_image, containers_of, remove_image
from support.plugin_runs import popen_pytest as _popen
from support.plugin_runs import run_pytest
from support.waiting import wait_for

pytest_plugins = ["pytester"]


SECRET = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="
AZURE_CS = f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={SECRET};EndpointSuffix=core.windows.net"


@pytest.fixture(scope="session")
def bad_image(docker_client, base_image):
    """Runs as root, bakes an Azure connection string into ENV and ships weights that differ from its manifest."""
    variant = Variant(user=None, env={"AZURE_STORAGE_CONNECTION_STRING": AZURE_CS}, tamper_model=True)
    tag = build_image(docker_client, base_image, variant)
    yield tag
    remove_image(docker_client, tag)


def test_good_image_passes_cases_checks_and_own_tests(pytester, own_tag, docker_client):
    good_image = own_tag  # an alias of its own: other xdist workers run containers of the good image meanwhile
    pytester.makefile(".yaml", **{"modelship-cases": GOOD_CASES})
    pytester.makepyfile(
        test_own="""
        def test_predict_helper(modelship_client):
            assert modelship_client.predict({"x": [2]})["label"] == "cat"

        def test_url_and_timeout(modelship_url, modelship_client):
            assert modelship_url.startswith("http://127.0.0.1:")
            assert modelship_client.get("/version", timeout=5).json() == {"version": "1.0.0"}
        """
    )
    result = run_pytest(pytester, "--modelship-image", good_image, "-v")
    result.assert_outcomes(passed=11)
    result.stdout.fnmatch_lines(
        [
            f"modelship image: {good_image} * (from --modelship-image)",
            "modelship cases: *modelship-cases.yaml (from default)",
            "modelship port: 8000 (from image EXPOSE)",
            "modelship ready path: /health/ready (from image HEALTHCHECK)",
            "modelship-image::labels_match_model PASSED*",
            "modelship-image::model_files_sha256 PASSED*",
            "modelship-image::non_root_user PASSED*",
            "modelship-cases.yaml::predict_cat PASSED*",
            "*= modelship =*",
            "image * container modelship-* (main) at http://127.0.0.1:* ready after * s",
            "  predict_cat * passed * ms",
            "latency over 4 case(s): p50 * ms, p95 * ms, max * ms",
        ]
    )
    assert containers_of(docker_client, good_image) == []


def test_wrong_prediction_fails_with_readable_diff_and_request(pytester, good_image):
    pytester.makefile(
        ".yaml",
        cases="""
        cases:
          - name: predict_wrong
            path: /predict
            headers: {X-Api-Key: hunter2-secret}
            json: {x: [1, 2, 3]}
            expect:
              json: {label: dog, score: 0.5, n: 3}
              approx: 0.01
        """,
    )
    result = run_pytest(pytester, "--modelship-image", good_image, "--modelship-cases", "cases.yaml", "-k", "predict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "case 'predict_wrong' (cases.yaml): 2 problems",
            '  - $.label: expected "dog", got "cat"',
            "  - $.score: expected 0.5 ± 0.01, got 0.9975",
            "request:",
            "  POST http://127.0.0.1:*/predict",
            '  headers: {"X-Api-Key": "***"}',
            '  json: {"x": [1, 2, 3]}',
            "response: 200 OK in * ms",
            "diff of expect.json (- expected, + actual):",
            '  -  "label": "dog",',
            '  +  "label": "cat",',
            "*- modelship container log: modelship-*-main -*",
            "serving model 1.0.0 on port 8000",
        ]
    )
    assert "hunter2-secret" not in result.stdout.str()
    assert "Traceback" not in result.stdout.str()


def test_junitxml_carries_container_logs_with_secrets_masked(pytester, good_image):
    # with junit_logging=system-out set (as many CI setups do), the log tail is still in the failure, once
    pytester.makefile(".yaml", cases="cases:\n  - {name: wrong_status, path: /version, expect: {status: 201}}\n")
    xml = pytester.path / "junit.xml"
    result = run_pytest(
        pytester,
        "--modelship-image",
        good_image,
        "--modelship-cases",
        "cases.yaml",
        "--modelship-env",
        "API_TOKEN=tok-very-secret-1",
        "-k",
        "wrong_status",
        f"--junitxml={xml}",
        "-o",
        "junit_logging=system-out",
    )
    result.assert_outcomes(failed=1)
    root = ET.parse(xml).getroot()  # noqa: S314 - our own junit file
    case = root.find(".//testcase[@name='wrong_status']")
    assert case is not None
    failure = case.find("failure").text
    assert "status: expected 201, got 200" in failure
    assert "serving model 1.0.0 on port 8000" in failure
    assert "token=***" in failure  # the app logged the secret; the plugin masked it
    assert "serving model" not in (case.find("system-out").text or "")  # not twice
    assert "tok-very-secret-1" not in xml.read_text()
    assert "tok-very-secret-1" not in result.stdout.str()


def test_crashing_container_fails_fast_with_exit_code_and_logs(pytester, good_image):
    pytester.makefile(".yaml", **{"modelship-cases": GOOD_CASES})
    t0 = time.monotonic()
    result = run_pytest(
        pytester, "--modelship-image", good_image, "--modelship-env", "APP_MODE=crash", "--modelship-timeout", "60"
    )
    elapsed = time.monotonic() - t0
    assert elapsed < 20, f"took {elapsed:.1f} s: the exit was not noticed before the 60 s timeout"
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # the first item that needs the container has the details; the others fail at once, naming it
    result.assert_outcomes(passed=2, errors=3 + 4)
    result.stdout.fnmatch_lines(
        [
            "modelship: container of * exited with code 3 * s after start, before it was ready",
            "*- modelship container log: modelship-*-main -*",
            "fatal: cannot load model weights.bin: corrupt header",
            "modelship: container not running: container of * exited with code 3 *"
            "(details and log: modelship-image::labels_match_model)",
        ]
    )
    assert result.stdout.str().count("corrupt header") == 1
    assert "Traceback" not in result.stdout.str()


def test_instant_exit_is_reported_with_exit_code_not_a_port_error(pytester, good_image):
    pytester.makeconftest(
        """
        def pytest_modelship_container(config, container, settings):
            return container.with_command(["sh", "-c", "echo cannot start >&2; exit 7"])
        """
    )
    result = run_pytest(pytester, "--modelship-image", good_image, "-k", "labels")
    result.stdout.fnmatch_lines(["modelship: container of * exited with code 7 *", "cannot start"])


def test_never_ready_fails_at_the_timeout_with_last_answer_and_logs(pytester, good_image):
    t0 = time.monotonic()
    result = run_pytest(
        pytester, "--modelship-image", good_image, "--modelship-ready-path", "/nope", "--modelship-timeout", "1.5"
    )
    elapsed = time.monotonic() - t0
    assert 1.5 <= elapsed < 20  # at the 1.5 s timeout (plus start-up on a loaded machine), not later
    result.stdout.fnmatch_lines(
        [
            "modelship: container of * not ready after 1.5 s: GET http://127.0.0.1:*/nope last gave HTTP 404;*",
            "*- modelship container log: modelship-*-main -*",
            "(* access-log line(s) of GET /nope left out)",  # the probes' lines (tests/test_plugin_reports.py)
            "serving model 1.0.0 on port 8000",
        ]
    )


def test_readiness_is_polled_at_20_hz_or_more(pytester, good_image):
    pytester.makepyfile(
        """
        def test_polls(modelship_container):
            logs = modelship_container.logs(tail=10000)
            not_ready = logs.count('"GET /health/ready HTTP/1.1" 503')
            print("POLLS", not_ready)
            # two seconds of "not ready": ~40 polls at 20 Hz; a loaded machine answers each poll more slowly, so
            # 20 is the bound (a 2 Hz poller, testcontainers' usual pace, makes 4)
            assert not_ready >= 20
        """
    )
    result = run_pytest(
        pytester, "--modelship-image", good_image, "--modelship-env", "APP_READY_DELAY=2.0", "-k", "polls"
    )
    result.assert_outcomes(passed=1)


def test_image_checks_catch_root_user_secret_and_tampered_model(pytester, bad_image):
    result = run_pytest(pytester, "--modelship-image", bad_image, "-v")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines_random(
        [
            "modelship-image::labels_match_model PASSED*",
            "modelship-image::healthcheck PASSED*",
            "modelship-image::non_root_user FAILED*",
            "modelship-image::no_secrets FAILED*",
            "modelship-image::model_files_sha256 FAILED*",
            "  - container runs as root (USER is not set): add 'USER 10001:10001' to the Dockerfile",
            "  - ENV AZURE_STORAGE_CONNECTION_STRING: Azure storage account key",
            "  - weights.bin: sha256 * but modelship.json says *",
        ]
    )
    assert SECRET not in result.stdout.str()


def test_checks_can_be_deselected_with_k(pytester, bad_image):
    result = run_pytest(
        pytester, "--modelship-image", bad_image, "-k", "not no_secrets and not non_root and not sha256"
    )
    result.assert_outcomes(passed=2, deselected=3)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_removes_the_container(pytester, own_tag, docker_client, sig):
    marker = pytester.path / "started"
    pytester.makepyfile(
        f"""
        import pathlib, time
        def test_hang(modelship_url):
            pathlib.Path({str(marker)!r}).write_text(modelship_url)
            time.sleep(120)
        """
    )
    proc = _popen(pytester, "--modelship-image", own_tag, "-k", "hang", "-s")
    wait_for(marker.exists, 30, "the test to start")
    assert len(containers_of(docker_client, own_tag)) == 1
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert "KeyboardInterrupt" in out
    assert proc.returncode == 128 + sig, out[-2000:]  # 130 / 143, what a shell reports for the signal
    assert containers_of(docker_client, own_tag) == []


def test_ctrl_c_while_the_engine_creates_the_container_still_removes_it(pytester, own_tag, docker_client):
    """Ctrl-C while the create request waits for its answer: the engine creates the container anyway, after the
    sweep by label found nothing and the run ended (a clean-clone CI run once left one so). The engine's late
    create is played by another process, 0.5 s after the conftest's hook sent SIGINT instead of the request.
    The hook sits in a conftest.py met during collection, so the container is started afresh in the main
    thread, as in that run."""
    sub = pytester.mkdir("sub")
    (sub / "conftest.py").write_text(
        """
import json, os, signal, subprocess, sys, threading

LATE = "import json, sys, time, docker; time.sleep(0.5); docker.APIClient().create_container(**json.loads(sys.argv[1]))"

def pytest_modelship_container(config, container, settings):
    api = container.get_docker_client().client.api

    def create_container(**kwargs):
        subprocess.Popen([sys.executable, "-c", LATE, json.dumps(kwargs)], start_new_session=True)
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C while the answer is awaited
        threading.Event().wait(30)
        raise RuntimeError("no interrupt came")

    api.create_container = create_container
"""
    )
    (sub / "test_hang.py").write_text("def test_hang(modelship_url):\n    pass\n")
    proc = _popen(pytester, "--modelship-image", own_tag, "-s")  # sub/ found by collection, not named
    out, _ = proc.communicate(timeout=60)
    assert "KeyboardInterrupt" in out and proc.returncode == 130, out[-2000:]
    time.sleep(1.5)  # the late create has landed by now: it must have been waited for and removed
    assert containers_of(docker_client, own_tag) == [], out[-2000:]


def test_sigkill_leftover_is_reaped_by_the_next_run(pytester, own_tag, docker_client):
    marker = pytester.path / "started"
    pytester.makepyfile(
        f"""
        import pathlib, time
        def test_hang(modelship_url):
            pathlib.Path({str(marker)!r}).write_text(modelship_url)
            time.sleep(120)
        """
    )
    proc = _popen(pytester, "--modelship-image", own_tag, "-k", "hang")
    wait_for(marker.exists, 30, "the test to start")
    proc.kill()
    proc.communicate(timeout=30)  # reap it: a zombie still has its /proc entry
    assert len(containers_of(docker_client, own_tag)) == 1, "SIGKILL gives no chance to clean up"
    result = run_pytest(pytester, "--modelship-image", own_tag, "-k", "nothing_matches")
    # Any plugin session reaps dead owners' containers; under xdist a parallel test's session may get there
    # first, so the header line is only expected when this run was the one that found it.
    assert containers_of(docker_client, own_tag) == []
    if "left by killed runs" in result.stdout.str():
        result.stdout.fnmatch_lines(["modelship: removed 1 container(s) left by killed runs"])


def test_xdist_workers_get_their_own_containers(pytester, own_tag, docker_client):
    pytester.makefile(".yaml", **{"modelship-cases": GOOD_CASES})
    out_dir = pytester.mkdir("seen")
    tests = "\n".join(
        f"""
def test_{i}(modelship_container, modelship_client, worker_id):
    assert modelship_client.get("/version").status_code == 200
    seen = f"{{worker_id}} {{modelship_container.name}} {{modelship_container.url}}"
    (pathlib.Path({str(out_dir)!r}) / "{i}").write_text(seen)
"""
        for i in range(8)
    )
    pytester.makepyfile("import pathlib\n" + tests)
    result = run_pytest(pytester, "--modelship-image", own_tag, "-n", "2")
    result.assert_outcomes(passed=8 + 5 + 4)
    # the summary names one container per worker; they differ in name and host port
    summary = [line for line in result.outlines if line.startswith(f"image {own_tag}: container ")]
    started = {line.split()[4]: (line.split()[3], line.split()[6]) for line in summary}
    assert set(started) == {"(gw0)", "(gw1)"}, summary
    (name0, url0), (name1, url1) = started.values()
    assert name0 != name1 and url0 != url1
    # every test ran against its own worker's container (xdist may give one worker all of them)
    for p in out_dir.iterdir():
        worker, name, url = p.read_text().split()
        assert started[f"({worker})"] == (name, url)
    result.stdout.fnmatch_lines(["latency over 4 case(s):*"])
    assert containers_of(docker_client, own_tag) == []


def test_pull_fetches_an_image_missing_locally(pytester, docker_client, good_image, registry):
    ref = f"{registry}/modelship-plugin-test/pull:{uuid.uuid4().hex[:8]}"
    repo, tag = ref.rsplit(":", 1)
    docker_client.images.get(good_image).tag(repo, tag)
    docker_client.images.push(repo, tag=tag)
    docker_client.images.remove(ref)
    try:
        result = run_pytest(pytester, "--modelship-image", ref, "-k", "healthcheck")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert "not found locally: build it first, or pass --modelship-pull" in result.stderr.str()
        result = run_pytest(pytester, "--modelship-image", ref, "--modelship-pull", "-k", "healthcheck")
        result.assert_outcomes(passed=1, deselected=4)
        result.stdout.fnmatch_lines(["modelship pull: yes (from --modelship-pull)"])
        assert docker_client.images.get(ref)
    finally:
        remove_image(docker_client, ref)


def test_ryuk_that_cannot_start_falls_back_to_own_cleanup(pytester, monkeypatch, own_tag, docker_client, registry):
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "false")
    # a reaper image that cannot be pulled, from the local registry only (no traffic leaves the machine)
    monkeypatch.setenv("RYUK_CONTAINER_IMAGE", f"{registry}/modelship/no-such-ryuk:0")
    pytester.makepyfile("def test_up(modelship_url):\n    assert modelship_url\n")
    result = run_pytest(pytester, "--modelship-image", own_tag, "-k", "test_up")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["note: Ryuk could not start (*); modelship removes its containers itself*"])
    assert containers_of(docker_client, own_tag) == []
