"""The gate (issue #22): real pytest runs comparing a candidate image with a baseline image, both started
on the testbed's Docker engine from small test apps (support.apps) that differ only by their environment."""

from __future__ import annotations

import signal
import uuid

import pytest

from support.oci import push_image
from support.plugin_images import Variant, build_image, containers_of, remove_image
from support.plugin_runs import junit_cases, junit_outcome, popen_pytest, run_pytest
from support.waiting import wait_for

pytest_plugins = ["pytester"]

PROBES = """\
compare:
  probes:
    - {path: /predict, json: {x: [1]}}
    - {path: /predict, json: {x: [2]}}
    - {path: /predict, json: {x: [3]}}
    - {path: /predict, json: {x: [-1, -2]}}
    - {path: /predict, json: {x: [0.5, 0.5, 1, 1, 1]}}
    - {path: /predict, json: {x: nope}}
    - {path: /version}
"""


@pytest.fixture(scope="module")
def images(docker_client, base_image):
    """The test app as several models: the same one under two version strings, a retrained one whose
    boundary moved, a slower one and one that crashes at start."""
    variants = {
        "v1": {"APP_MODEL_VERSION": "1.0.0"},
        "v2": {"APP_MODEL_VERSION": "2.0.0"},
        "moved": {"APP_MODEL_VERSION": "1.0.0", "APP_THRESHOLD": "2.5"},
        "slow": {"APP_MODEL_VERSION": "1.0.0", "APP_DELAY_MS": "50"},
        "crash": {"APP_MODE": "crash"},
    }
    tags = {name: build_image(docker_client, base_image, Variant(env=env)) for name, env in variants.items()}
    yield tags
    for tag in tags.values():
        remove_image(docker_client, tag)


@pytest.fixture
def own(images, docker_client):
    """This test's own tags of the images (made on first use), so that its containers are counted without
    ambiguity while other xdist workers run containers of the same images; removed afterwards."""

    class Own(dict):
        def __missing__(self, name: str) -> str:
            tag = self[name] = f"modelship-gate-{name}:own-{uuid.uuid4().hex[:8]}"
            docker_client.images.get(images[name]).tag(tag)
            return tag

    tags = Own()
    yield tags
    for tag in tags.values():
        remove_image(docker_client, tag)


def _gate(pytester, candidate, baseline, section, *args):
    pytester.makefile(".yaml", **{"modelship-cases": section})
    xml = pytester.path / "junit.xml"
    result = run_pytest(
        pytester, "--modelship-image", candidate, "--modelship-baseline", baseline, f"--junitxml={xml}", *args
    )
    return result, junit_cases(xml)


def _left(docker_client, *images):
    return [c.name for image in images for c in containers_of(docker_client, image)]


def test_same_answers_under_other_version_strings_pass_with_ignore_and_fail_without(pytester, own, docker_client):
    result, cases = _gate(pytester, own["v2"], own["v1"], PROBES + "  ignore: [model_version]\n", "-k", "compare")
    result.assert_outcomes(passed=1)
    props = {p.get("name"): p.get("value") for p in cases["compare"].iter("property")}
    assert props["modelship_agreement"] == "1.0"
    assert props["modelship_compare"].startswith("agreement: 100.00% (7 of 7 probes match); latency: candidate p50")
    result.stdout.fnmatch_lines(
        [
            "modelship baseline: * (from --modelship-baseline)",
            "modelship-cases.yaml::compare vs baseline *: passed: agreement: 100.00% (7 of 7 probes match); latency:*",
        ]
    )

    result, cases = _gate(pytester, own["v2"], own["v1"], PROBES, "-k", "compare")
    result.assert_outcomes(failed=1)
    text = cases["compare"].find("failure").text
    assert "agreement 28.57% (2 of 7 probes) is below min_agreement 100.00%" in text, text
    assert '>> model_version: candidate "2.0.0", baseline "1.0.0"' in text
    assert _left(docker_client, own["v1"], own["v2"]) == []


def test_a_retrained_model_fails_naming_the_diverging_inputs_in_the_junit_file(pytester, own, docker_client):
    section = PROBES + "  min_agreement: 0.8\n"
    result, cases = _gate(pytester, own["moved"], own["v1"], section, "-k", "compare")
    result.assert_outcomes(failed=1)
    assert junit_outcome(cases["compare"]) == "failure"
    text = cases["compare"].find("failure").text
    assert "agreement 71.43% (5 of 7 probes) is below min_agreement 80.00%" in text, text
    assert "first 2 of 2 diverging probe(s):" in text
    # the inputs whose answers moved, each with both answers and the differing path
    assert 'probe #1: POST /predict {"x": [1]}' in text and 'probe #2: POST /predict {"x": [2]}' in text
    assert '    candidate: 200 {"label": "dog", "score": 0.7311, "n": 1, "model_version": "1.0.0"}' in text
    assert '    baseline:  200 {"label": "cat", "score": 0.7311, "n": 1, "model_version": "1.0.0"}' in text
    assert '>> label: candidate "dog", baseline "cat"' in text
    assert "probe #3" not in text
    # the candidate's log tail is attached as for the smoke cases, and the baseline's
    assert "modelship container log: modelship-" in text and "modelship baseline container log: modelship-" in text
    assert "compare" in result.stdout.str() and "FAILED" in result.stdout.str()
    assert _left(docker_client, own["moved"], own["v1"]) == []


def test_an_added_50_ms_per_request_fails_the_latency_bound(pytester, own):
    # 20 predictions: a p95 that one slow first request cannot move much
    probes = "".join(f"    - {{path: /predict, json: {{x: [{i}]}}}}\n" for i in range(20))
    section = f"compare:\n  probes:\n{probes}  max_latency_ratio: 1.5\n"
    result, cases = _gate(pytester, own["slow"], own["v1"], section, "-k", "compare")
    result.assert_outcomes(failed=1)
    text = cases["compare"].find("failure").text
    assert "agreement: 100.00% (20 of 20 probes match)" in text, text
    assert "is above max_latency_ratio 1.5" in text and "latency ratio " in text
    # the same images the other way round: the baseline is the slow one, the bound holds
    result, _ = _gate(pytester, own["v1"], own["slow"], section, "-k", "compare")
    result.assert_outcomes(passed=1)


def test_a_baseline_that_crashes_fails_the_gate_with_its_log(pytester, own, docker_client):
    result, cases = _gate(pytester, own["v1"], own["crash"], PROBES, "-k", "compare")
    result.assert_outcomes(failed=1)
    text = cases["compare"].find("failure").text
    assert text.startswith("modelship: the baseline could not start: "), text
    assert "exited with code 3" in text
    assert "modelship baseline container log: modelship-" in text
    assert "fatal: cannot load model weights.bin: corrupt header" in text
    assert _left(docker_client, own["v1"], own["crash"]) == []


def test_without_a_baseline_the_compare_item_is_skipped_saying_why(pytester, own):
    pytester.makefile(".yaml", **{"modelship-cases": PROBES})
    result = run_pytest(pytester, "--modelship-image", own["v1"], "-k", "compare", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no baseline to compare with: pass --modelship-baseline REF*"])


def test_a_baseline_tag_that_is_not_local_is_pulled(pytester, own, docker_client, registry):
    remote = f"{registry}/gate/baseline:{uuid.uuid4().hex[:8]}"
    docker_client.images.get(own["v1"]).tag(remote)
    try:
        push_image(docker_client, remote)
        docker_client.images.remove(remote)  # only in the registry now: production's image, not a local build
        section = PROBES + "  ignore: [model_version]\n"
        result, _ = _gate(pytester, own["v2"], remote, section, "-k", "compare")
        result.assert_outcomes(passed=1)
        docker_client.images.get(remote)  # pulled by the run
        assert _left(docker_client, remote) == []
    finally:
        remove_image(docker_client, remote)


def test_a_baseline_that_cannot_be_pulled_fails_the_gate_not_the_run(pytester, own, registry):
    absent = f"{registry}/gate/absent:{uuid.uuid4().hex[:8]}"
    section = "cases:\n  - {name: version, path: /version}\n" + PROBES
    result, cases = _gate(pytester, own["v1"], absent, section, "-k", "compare or version")
    result.assert_outcomes(passed=1, failed=1)  # the smoke case still ran against the candidate
    text = cases["compare"].find("failure").text
    first, _, rest = text.partition("\n")
    assert first.startswith(f"modelship: the baseline {absent} could not be prepared: "), text
    assert "not found" in first or "manifest unknown" in first, first
    assert "modelship baseline container log" not in rest  # no container was ever started


def test_ctrl_c_mid_gate_leaves_no_container(pytester, own, docker_client):
    # 400 probes at 50 ms each on the candidate: seconds of comparing, interrupted once probes flow
    probes = "".join(f"    - {{path: /predict, json: {{x: [{i}]}}}}\n" for i in range(400))
    pytester.makefile(".yaml", **{"modelship-cases": f"compare:\n  probes:\n{probes}"})
    proc = popen_pytest(pytester, "--modelship-image", own["slow"], "--modelship-baseline", own["v1"])

    def probes_flow() -> bool:
        import docker.errors

        for c in containers_of(docker_client, own["slow"]):
            try:
                if "POST /predict" in docker_client.containers.get(c.id).logs().decode():
                    return True
            except docker.errors.NotFound:  # listed, then removed before its logs were read: not this one
                continue
        return False

    try:
        wait_for(probes_flow, 60, "the gate to send its probes")
        assert len(_left(docker_client, own["slow"], own["v1"])) == 2  # candidate and baseline
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in out
    assert proc.returncode in (130, -signal.SIGINT), out[-2000:]  # see tests/reliability/test_cancel.py
    assert _left(docker_client, own["slow"], own["v1"]) == []
