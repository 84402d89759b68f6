"""The pytest plugin against the real Docker engine, its configuration: one-line errors (no image, no engine,
ambiguous port, a malformed cases file), option precedence, hooks, config fixtures overridden in a conftest,
and nothing loaded without an image. pytester runs pytest in a subprocess on small images (good_image,
own_tag: conftest.py)."""

from __future__ import annotations

import uuid

import pytest

from support.plugin_images import GOOD_CASES, containers_of, remove_image
from support.plugin_runs import run_pytest

pytest_plugins = ["pytester"]


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
