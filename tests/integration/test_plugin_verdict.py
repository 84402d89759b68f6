"""``pytest --modelship-image REF --modelship-attest-key KEY.pem``: the smoke test's verdict as an in-toto
test-result attestation about the digest it ran, in the real registry, read back by the independent reader
(tests/support/attestation_reader.py) and judged by ``modelship verify --attestation test-result``.

Each test pushes its own small image (the test app with an env value of its own, so a digest of its own) to
one repository of the testbed registry: the verdicts of different tests never meet at one ``.att`` tag."""

from __future__ import annotations

import hashlib
import signal
import uuid

import pytest

from modelship import __version__
from support.attestation_reader import accepts, read_attestations
from support.cli import run_cli
from support.oms import keypair
from support.plugin_images import GOOD_CASES, Variant, build_image, remove_image
from support.plugin_runs import popen_pytest, run_pytest
from support.waiting import wait_for

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.docker
TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"
REPO = "modelship-plugin-test/verdict"
BAD_CASE = (
    "  - name: wrong_label\n    path: /predict\n    json: {x: [1]}\n    expect:\n      json_subset: {label: dog}\n"
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return keypair(tmp_path_factory.mktemp("verdict-keys"), "team")


@pytest.fixture
def pushed(docker_client, base_image, registry):
    """(the tag in the registry, pinned REF@DIGEST, the digest) of an image of this test's own."""
    repo = f"{registry}/{REPO}"
    tag = uuid.uuid4().hex[:10]
    ref = build_image(docker_client, base_image, Variant(env={"VERDICT_TEST": tag}), tag=f"{repo}:{tag}")
    docker_client.images.push(repo, tag=tag)
    held = docker_client.images.get(ref).attrs["RepoDigests"]
    digest = next(d for d in held if d.startswith(repo + "@")).partition("@")[2]
    yield ref, f"{repo}@{digest}", digest
    remove_image(docker_client, ref)
    remove_image(docker_client, f"{repo}@{digest}")  # left when a test moved the tag


def _run(pytester, image: str, key, *args: str, cases: str = GOOD_CASES):
    pytester.makefile(".yaml", cases=cases)
    # KEY=VALUE: a path after a space counts for pytest's rootdir (it sees the plugin's options too late)
    key_args = (f"--modelship-attest-key={key}",) if key else ()
    return run_pytest(pytester, "-v", "--modelship-image", image, "--modelship-cases", "cases.yaml", *key_args, *args)


def _verdicts(registry: str, digest: str, public) -> list[dict]:
    found = read_attestations(registry, REPO, digest)
    assert all(accepts(f, public, digest, TEST_RESULT) for f in found), found
    return [f.statement["predicate"] for f in found]


def test_a_passing_run_attests_passed_for_the_digest_and_none_without_the_option(pytester, registry, keys, pushed):
    private, public = keys
    _, pinned, digest = pushed
    result = _run(pytester, pinned, None, "-k", "predict_cat")
    result.assert_outcomes(passed=1, deselected=8)
    assert read_attestations(registry, REPO, digest) == []  # no option, no attestation

    result = _run(pytester, pinned, private)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([f"modelship attest key: {private} (from --modelship-attest-key)"])
    (predicate,) = _verdicts(registry, digest, public)
    assert predicate["result"] == "PASSED"
    assert predicate["failedTests"] == []
    assert {"cases.yaml::predict_cat", "cases.yaml::bad_input_422", "modelship-image::non_root_user"} <= set(
        predicate["passedTests"]
    )
    cases_sha = hashlib.sha256((pytester.path / "cases.yaml").read_bytes()).hexdigest()
    assert predicate["configuration"] == [
        {"name": "cases.yaml", "digest": {"sha256": cases_sha}},
        {"name": "pytest-modelship", "uri": f"pkg:pypi/modelship@{__version__}"},
    ]
    result.stdout.fnmatch_lines([f"modelship: test-result PASSED (* passed, 0 failed) attested for {pinned} at *.att"])


def test_a_failing_case_attests_failed_and_verify_refuses_the_digest(pytester, registry, keys, pushed):
    private, public = keys
    _, pinned, digest = pushed
    assert run_cli("sign", pinned, "--key", str(private)).returncode == 0  # signed: only the verdict can refuse
    result = _run(pytester, pinned, private, "-k", "predict or wrong", cases=GOOD_CASES + BAD_CASE)
    result.assert_outcomes(passed=2, failed=1, deselected=7)
    (predicate,) = _verdicts(registry, digest, public)
    assert predicate["result"] == "FAILED"
    assert predicate["failedTests"] == ["cases.yaml::wrong_label"]
    assert sorted(predicate["passedTests"]) == ["cases.yaml::predict_cat", "cases.yaml::predict_dog_subset"]
    verified = run_cli("verify", pinned, "--key", str(public), "--attestation", "test-result")
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert "says FAILED (failed: cases.yaml::wrong_label), not PASSED" in verified.stderr
    assert len(verified.stderr.strip().splitlines()) == 1


def test_a_tag_is_resolved_to_its_digest(pytester, registry, keys, pushed):
    private, public = keys
    tag_ref, pinned, digest = pushed
    result = _run(pytester, tag_ref, private, "-k", "predict_cat")
    result.assert_outcomes(passed=1, deselected=8)
    (predicate,) = _verdicts(registry, digest, public)
    assert predicate["passedTests"] == ["cases.yaml::predict_cat"]
    result.stdout.fnmatch_lines([f"modelship: test-result PASSED (1 passed, 0 failed) attested for {pinned} at *"])


def test_a_local_tag_that_is_not_the_registrys_digest_stops_at_start(pytester, docker_client, base_image, keys, pushed):
    private, _ = keys
    tag_ref, pinned, _ = pushed
    other = f"{tag_ref}-local"
    docker_client.images.get(tag_ref).tag(other)  # never pushed: the registry has no such tag
    stranger = build_image(docker_client, base_image, Variant(env={"VERDICT_TEST": "moved"}))
    try:
        result = _run(pytester, other, private)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: modelship: --modelship-attest-key: {other} is not in *; push it first*"])
        assert "modelship image:" not in result.stdout.str()  # stopped before the run's header, no container
        docker_client.images.get(stranger).tag(tag_ref)  # the local tag moved on: it is not the pushed digest
        result = _run(pytester, tag_ref, private)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            [f"ERROR: modelship: --modelship-attest-key: the local {tag_ref} (image *) is not {pinned}: *"]
        )
    finally:
        remove_image(docker_client, other)
        remove_image(docker_client, stranger)


def test_a_container_of_another_image_is_not_attested(pytester, docker_client, base_image, registry, keys, pushed):
    private, _ = keys
    _, pinned, digest = pushed
    stranger = build_image(docker_client, base_image, Variant(env={"VERDICT_TEST": "stranger"}))
    pytester.makeconftest(
        f"def pytest_modelship_container(config, container, settings):\n"
        f"    container.image = {stranger!r}\n"
        f"    return container\n"
    )
    try:
        # under xdist: the workers' containers reach the controller's verdict in the reports
        result = _run(pytester, pinned, private, "-p", "xdist", "-n", "2", "-k", "predict")
        result.assert_outcomes(passed=2)
        assert result.ret == pytest.ExitCode.TESTS_FAILED  # the cases passed, the evidence was refused
        result.stdout.fnmatch_lines([f"modelship: not attested: a container of image * ran the tests, not {pinned} *"])
        assert read_attestations(registry, REPO, digest) == []
    finally:
        remove_image(docker_client, stranger)


def test_a_bad_key_fails_at_start_in_one_line_without_its_content(pytester, registry, keys):
    _, public = keys
    pinned = f"{registry}/{REPO}@sha256:{'0' * 64}"  # never looked at: the key is read first
    bogus = pytester.path / "bogus.pem"
    bogus.write_text("-----BEGIN EC PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END EC PRIVATE KEY-----\n")
    for key, why in ((bogus, "not a PEM private key"), (public, "not a PEM private key"), ("nope.pem", "cannot read")):
        result = _run(pytester, pinned, key)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        errors = [line for line in result.stderr.lines if "modelship" in line]
        assert len(errors) == 1 and "--modelship-attest-key" in errors[0] and why in errors[0], errors
        assert "c2VjcmV0" not in result.stdout.str() + result.stderr.str()
        assert "modelship image:" not in result.stdout.str()  # stopped at start-up: no header, no container


def test_an_interrupted_run_attests_nothing(pytester, registry, keys, pushed):
    private, _ = keys
    _, pinned, digest = pushed
    marker = pytester.path / "started"
    pytester.makepyfile(
        f"import pathlib, time\n\ndef test_hang(modelship_url):\n"
        f"    pathlib.Path({str(marker)!r}).write_text(modelship_url)\n    time.sleep(120)\n"
    )
    proc = popen_pytest(pytester, "--modelship-image", pinned, f"--modelship-attest-key={private}", "-s")
    try:
        wait_for(marker.exists, 60, "the test to start")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    assert "modelship: interrupted: no test-result attested" in out
    assert read_attestations(registry, REPO, digest) == []
