"""The pytest plugin against the real Docker engine: pytester runs pytest in a subprocess on small images."""

from __future__ import annotations

import signal
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

from support.plugin_images import GOOD_CASES, Variant, alias, build_image, containers_of, remove_image
from support.plugin_runs import popen_pytest as _popen
from support.plugin_runs import run_pytest
from support.waiting import wait_for

pytest_plugins = ["pytester"]

SECRET = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="
AZURE_CS = f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={SECRET};EndpointSuffix=core.windows.net"


@pytest.fixture(scope="session")
def good_image(docker_client, base_image):
    tag = build_image(docker_client, base_image)
    yield tag
    remove_image(docker_client, tag)


@pytest.fixture(scope="session")
def bad_image(docker_client, base_image):
    """Runs as root, bakes an Azure connection string into ENV and ships weights that differ from its manifest."""
    variant = Variant(user=None, env={"AZURE_STORAGE_CONNECTION_STRING": AZURE_CS}, tamper_model=True)
    tag = build_image(docker_client, base_image, variant)
    yield tag
    remove_image(docker_client, tag)


@pytest.fixture
def own_tag(docker_client, good_image):
    with alias(docker_client, good_image, "modelship-plugin-test") as ref:
        yield ref


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


def test_missing_image_is_one_line(pytester):
    result = run_pytest(pytester, "--modelship-image", "modelship-plugin-test:does-not-exist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines == [
        "ERROR: modelship: image modelship-plugin-test:does-not-exist not found locally: build it first, "
        "or pass --modelship-pull to pull it",
        "",
    ]


def test_docker_down_is_one_line_with_the_fix(pytester, monkeypatch, good_image):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")
    result = run_pytest(pytester, "--modelship-image", good_image)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line]
    assert len(errors) == 1, errors
    assert errors[0].startswith("ERROR: modelship: Docker engine not reachable at unix:///nonexistent (")
    assert "start the Docker daemon" in errors[0]


def test_ambiguous_port_and_missing_cases_file_are_one_line(pytester, docker_client, good_image):
    tag = f"modelship-plugin-test:ports-{uuid.uuid4().hex[:8]}"
    docker_client.images.build(
        fileobj=_dockerfile(f"FROM {good_image}\nEXPOSE 9000\n"), custom_context=True, tag=tag, pull=False, rm=True
    )
    try:
        result = run_pytest(pytester, "--modelship-image", tag)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert result.stderr.lines[0] == (
            f"ERROR: modelship: image {tag} exposes several ports (8000, 9000): choose one with --modelship-port"
        )
        result = run_pytest(
            pytester, "--modelship-image", tag, "--modelship-port", "8000", "--modelship-cases", "nope.yml"
        )
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert result.stderr.lines[0] == (
            f"ERROR: modelship: cases file {pytester.path / 'nope.yml'} not found (from --modelship-cases)"
        )
    finally:
        remove_image(docker_client, tag)


def test_option_precedence_cli_over_env_over_ini_in_header(pytester, monkeypatch, good_image):
    pytester.makeini(
        """
        [pytest]
        modelship_timeout = 7
        modelship_ready_path = /from-ini
        modelship_env =
            MODE=ini
            DB_PASSWORD=ini-pass-123
        """
    )
    monkeypatch.setenv("MODELSHIP_IMAGE", good_image)
    monkeypatch.setenv("MODELSHIP_TIMEOUT", "9")
    monkeypatch.setenv("MODELSHIP_ENV", "MODE=env API_KEY=env-key-456")
    result = run_pytest(pytester, "--co", "--modelship-timeout", "11")
    result.stdout.fnmatch_lines(
        [
            f"modelship image: {good_image} * (from MODELSHIP_IMAGE)",
            "modelship ready path: /from-ini (from tox.ini modelship_ready_path)",
            "modelship timeout: 11 s (from --modelship-timeout)",
            "modelship env: MODE=env API_KEY=*** (from MODELSHIP_ENV)",
        ]
    )
    assert "env-key-456" not in result.stdout.str()
    monkeypatch.delenv("MODELSHIP_ENV")
    result = run_pytest(pytester, "--co")
    result.stdout.fnmatch_lines(
        ["modelship timeout: 9 s (from MODELSHIP_TIMEOUT)", "modelship env: MODE=ini DB_PASSWORD=*** (from tox.ini *)"]
    )
    assert "ini-pass-123" not in result.stdout.str()
    monkeypatch.delenv("MODELSHIP_TIMEOUT")
    result = run_pytest(pytester, "--co")
    result.stdout.fnmatch_lines(["modelship timeout: 7 s (from tox.ini modelship_timeout)"])


def test_malformed_cases_file_is_a_collection_error_naming_file_case_and_problem(pytester, good_image):
    pytester.makefile(
        ".yaml",
        **{
            "modelship-cases": """
            cases:
              - {name: ok, path: /version}
              - name: typo
                path: /predict
                exepct: {status: 200}
            """
        },
    )
    result = run_pytest(pytester, "--modelship-image", good_image, "--co")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting modelship-cases.yaml*",
            "modelship-cases.yaml: case 'typo' (#2): unknown key 'exepct' (expected one of *)",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_hooks_customise_probe_add_cases_and_checks(pytester, good_image):
    pytester.makeconftest(
        """
        import pytest

        PROBES = []

        def pytest_modelship_container(config, container, settings):
            container.with_env("APP_READY_DELAY", "0.3")
            return container

        def pytest_modelship_ready(config, container, url):
            PROBES.append(url)
            return None  # keep the default HTTP probe

        def pytest_modelship_cases(config):
            return [{"name": "from_hook", "path": "/version", "expect": {"json": {"version": "1.0.0"}}}]

        def pytest_modelship_check_response(config, case, response, latency_ms):
            if case.name == "from_hook" and "X-Model-Version" not in response.headers:
                return "header X-Model-Version missing"

        @pytest.fixture
        def probes():
            return PROBES
        """
    )
    pytester.makepyfile(
        """
        def test_customised(modelship_container, probes):
            env = modelship_container.attrs["Config"]["Env"]
            assert "APP_READY_DELAY=0.3" in env
            assert len(probes) >= 5  # the probe ran for the 0.3 s the app was not ready
        """
    )
    result = run_pytest(pytester, "--modelship-image", good_image, "-k", "customised or from_hook")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["case 'from_hook' (pytest_modelship_cases): 1 problem", "  - header X-Model-Version missing"]
    )


def test_hook_in_a_nested_conftest_restarts_the_early_container(pytester, good_image):
    # The container boots while pytest collects; a conftest.py found during collection that customises
    # it must not be missed: the early container is dropped and a customised one started on first use.
    pytester.makepyfile(test_0slow="import time\ntime.sleep(1.5)  # the early container is up by now\n")
    sub = pytester.mkpydir("zz_sub")
    (sub / "conftest.py").write_text(
        "def pytest_modelship_container(config, container, settings):\n"
        "    return container.with_env('FROM_NESTED_CONFTEST', '1')\n"
    )
    (sub / "test_env.py").write_text(
        "def test_env(modelship_container):\n"
        "    assert 'FROM_NESTED_CONFTEST=1' in modelship_container.attrs['Config']['Env']\n"
    )
    # no path argument: zz_sub/ is not an initial conftest directory, its conftest.py loads during collection
    result = run_pytest(pytester, "--modelship-image", good_image)
    result.assert_outcomes(passed=1 + 5)


def test_ryuk_that_cannot_start_falls_back_to_own_cleanup(pytester, monkeypatch, own_tag, docker_client, registry):
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "false")
    # a reaper image that cannot be pulled, from the local registry only (no traffic leaves the machine)
    monkeypatch.setenv("RYUK_CONTAINER_IMAGE", f"{registry}/modelship/no-such-ryuk:0")
    pytester.makepyfile("def test_up(modelship_url):\n    assert modelship_url\n")
    result = run_pytest(pytester, "--modelship-image", own_tag, "-k", "test_up")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["note: Ryuk could not start (*); modelship removes its containers itself*"])
    assert containers_of(docker_client, own_tag) == []


def test_config_fixtures_overridden_in_a_conftest_take_effect(pytester, own_tag, docker_client):
    # pytest-httpserver's pattern: a conftest.py overrides modelship_env / modelship_settings, asking for the
    # plugin's own values; the fixtures' container is started from the result, the items keep the options'.
    pytester.makefile(".yaml", **{"modelship-cases": GOOD_CASES})
    pytester.makeconftest(
        """
        import dataclasses
        import pytest

        @pytest.fixture(scope="session")
        def modelship_env(modelship_env):
            return {**modelship_env, "FROM_FIXTURE": "1", "API_TOKEN": "tok-from-a-vault-42"}

        @pytest.fixture(scope="session")
        def modelship_settings(modelship_settings):
            return dataclasses.replace(modelship_settings, timeout=45.0)
        """
    )
    seen = pytester.path / "seen"
    pytester.makepyfile(
        test_own=f"""
        import pathlib

        def test_overrides(modelship_container, modelship_client):
            env = modelship_container.attrs["Config"]["Env"]
            assert {{"MODE=cli", "FROM_FIXTURE=1", "API_TOKEN=tok-from-a-vault-42"}} <= set(env)
            assert modelship_container.settings.timeout == 45.0
            assert "token=***" in modelship_container.logs()  # a secret given by a fixture is masked too
            assert modelship_client.get("/version").json() == {{"version": "1.0.0"}}
            pathlib.Path({str(seen)!r}).write_text(modelship_container.name)
        """
    )
    result = run_pytest(pytester, "--modelship-image", own_tag, "--modelship-env", "MODE=cli")
    result.assert_outcomes(passed=1 + 5 + 4)
    (summary,) = [line for line in result.outlines if line.startswith(f"image {own_tag}: container ")]
    options_container = summary.split()[3]
    assert seen.read_text() == f"{options_container}-1"  # its own container, next to the options' one
    assert "tok-from-a-vault-42" not in result.stdout.str()
    assert containers_of(docker_client, own_tag) == []
    # an override that returns something else than names to strings is one line naming the fixture
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def modelship_env():
            return {"N": 1}
        """
    )
    result = run_pytest(pytester, "--modelship-image", own_tag, "-k", "test_overrides")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*modelship: the modelship_env fixture must return a mapping of names to strings"])


def test_without_image_nothing_is_imported_or_collected(pytester, monkeypatch):
    monkeypatch.delenv("MODELSHIP_IMAGE", raising=False)
    pytester.makefile(".yaml", **{"modelship-cases": GOOD_CASES})
    pytester.makepyfile(
        """
        import sys
        def test_nothing_loaded():
            heavy = {"docker", "testcontainers", "pytest_modelship.cases", "pytest_modelship.container"}
            heavy |= {f"pytest_modelship.{m}" for m in ("session", "pool", "report", "signals", "matching")}
            heavy |= {f"pytest_modelship.{m}" for m in ("images", "reaper", "waiting", "client")}
            assert not heavy & set(sys.modules)

        def test_fixture_says_what_to_do(modelship_url):
            pass
        """
    )
    result = run_pytest(pytester, "-p", "no:xdist")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*modelship: no image to test: pass --modelship-image IMAGE (or set MODELSHIP_IMAGE)"])
    assert "modelship image:" not in result.stdout.str()


# ------------------------------------------------------------------------------------------------ helpers


def _dockerfile(text: str):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        data = text.encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf
