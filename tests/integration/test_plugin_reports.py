"""What the plugin reports, read back as a CI system reads it: the JUnit XML and the run's one-line errors.

Real pytest runs (pytester, in a subprocess) against real images on the testbed's Docker engine and
registry: an app that crashes or never gets ready, a wrong port, pulls that cannot work, and an image
pulled by digest whose model files are checked against its labels (issue #14 item 13, issue #12 item 6).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

from support.builds import build_cmd, make_app
from support.models import make_model
from support.plugin_images import GOOD_CASES, push_index, remove_image
from support.plugin_runs import junit_cases, junit_outcome, run_pytest
from support.registries import htpasswd_registry

pytest_plugins = ["pytester"]

CHECKS = ("labels_match_model", "model_files_sha256", "non_root_user", "healthcheck", "no_secrets")
CASES = ("predict_cat", "predict_dog_subset", "version_schema", "bad_input_422")
NEED_CONTAINER = {"labels_match_model", "model_files_sha256", "non_root_user", *CASES}


@pytest.fixture(scope="module")
def image(docker_client, base_image):
    from support.plugin_images import build_image

    tag = build_image(docker_client, base_image)
    yield tag
    remove_image(docker_client, tag)


# ------------------------------------------------------------------------------- a container that is down


def test_a_crashing_app_reports_every_item_in_the_junit_xml(pytester, image):
    pytester.makefile(".yaml", **{"modelship-cases": GOOD_CASES})
    xml = pytester.path / "junit.xml"
    t0 = time.monotonic()
    result = run_pytest(pytester, "--modelship-image", image, "--modelship-env", "APP_MODE=crash", f"--junitxml={xml}")
    took = time.monotonic() - t0
    result.assert_outcomes(passed=2, errors=7)
    cases = junit_cases(xml)
    # every check and every case is in the report: none vanished because the run stopped
    assert set(cases) == {*CHECKS, *CASES}, sorted(cases)
    assert {name: junit_outcome(c) for name, c in cases.items()} == {
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
    result = run_pytest(pytester, "--modelship-image", image, *never_ready, "-k", "labels")
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


# An app that never gets ready as the example's does when its model is incomplete: it logs why once at the
# start, answers 503 with a body on its ready path, and writes gunicorn's access-log format of the example
# (examples/flask_app/gunicorn.conf.py: '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms', no protocol, no User-Agent).
UNREADY_APP = r"""
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LABELS = os.path.join(os.environ.get("MODELSHIP_MODEL_DIR", "/opt/modelship/model"), "labels.json")
try:
    open(LABELS).close()
    PROBLEM = None
except OSError as e:
    PROBLEM = f"model not loaded: {LABELS}: {e.strerror}"
    print(f"[ERROR] {PROBLEM}", flush=True)
print("[INFO] Listening at: http://0.0.0.0:8000", flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        status, body = (503, {"ready": False, "reason": PROBLEM}) if PROBLEM else (200, {"ready": True})
        if self.path != "/health/ready":
            status, body = 404, {"error": "not found"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        sys.stdout.write(f'{self.client_address[0]} "{self.command} {self.path}" {status} {len(data)} 0ms\n')
        sys.stdout.flush()

    def log_message(self, fmt, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""


def test_a_never_ready_app_is_reported_by_its_own_words_and_its_last_answer(pytester, docker_client, base_image):
    """Issue #19 item 15: the 503's body and the app's "[ERROR] model not loaded" were hidden behind 50 probe
    lines (the access-log filter wanted ' HTTP/1.1', which gunicorn's format omits), and the advice blamed the
    ready path for what was the app's own failure."""
    from support.plugin_images import Variant, build_image

    tag = build_image(docker_client, base_image, Variant(app=UNREADY_APP))
    try:
        # 3 s of probes at 40 Hz: ~120 access-log lines, more than the 50 lines of a tail
        result = run_pytest(pytester, "--modelship-image", tag, "--modelship-timeout", "3", "-k", "labels")
        result.assert_outcomes(errors=1)
        out = result.stdout.str()
        result.stdout.fnmatch_lines(
            [
                "modelship: container of * not ready after 3 s: GET http://127.0.0.1:*/health/ready last gave "
                "HTTP 503; the app answers but is not ready (a 5xx is the app's own failure, not a wrong path): "
                "its log below says why; raise --modelship-timeout only if it needs longer to load; its last "
                'answer: {"ready": false, "reason": "model not loaded: /opt/modelship/model/labels.json: '
                'No such file or directory"}',
                "*- modelship container log: modelship-*-main -*",
                "(* access-log line(s) of GET /health/ready left out)",
                "[[]ERROR] model not loaded: /opt/modelship/model/labels.json: No such file or directory",
                "[[]INFO] Listening at: http://0.0.0.0:8000",
            ]
        )
        assert '"GET /health/ready" 503' not in out
        assert "fix --modelship-ready-path" not in out  # the path is right: the app is not ready

        # the same app probed on a path it does not have: now the path is to blame
        result = run_pytest(
            pytester, "--modelship-image", tag, "--modelship-timeout", "2", "--modelship-ready-path", "/ready", "-k",
            "labels",
        )  # fmt: skip
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(
            [
                "modelship: container of * not ready after 2 s: GET http://127.0.0.1:*/ready last gave HTTP 404; "
                "the app has no /ready (from --modelship-ready-path): fix --modelship-ready-path; "
                'its last answer: {"error": "not found"}',
                "*- modelship container log: modelship-*-main -*",
                "(* access-log line(s) of GET /ready left out)",
            ]
        )
        assert '"GET /ready" 404' not in result.stdout.str()
    finally:
        remove_image(docker_client, tag)


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
    result = run_pytest(pytester, "--modelship-image", image, *env, "-k", "agent")
    result.assert_outcomes(passed=1)


def test_a_wrong_port_is_named_with_its_source_and_what_the_image_exposes(pytester, image):
    result = run_pytest(
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
    result = run_pytest(
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
    result = run_pytest(pytester, "--modelship-image", image, *secret, f"--junitxml={xml}")
    result.assert_outcomes(passed=9, failed=1)
    cases = junit_cases(xml)
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
    # the terminal: the failure has its log section once; passing tests have none (the short summary, which
    # pytest does not truncate when CI is set, may quote the message again: it is not a section)
    assert result.stdout.str().split(" short test summary info ")[0].count("modelship container log:") == 1
    result = run_pytest(pytester, "--modelship-image", image, "-rA", "-k", "not wrong_status")
    result.assert_outcomes(passed=9, deselected=1)
    assert "modelship container" not in result.stdout.str()


# ------------------------------------------------------------------------------------------------- pulls


def test_pull_failures_are_one_line_naming_the_image_and_the_fix(pytester, registry, tmp_path):
    absent = f"{registry}/modelship-plugin-test/absent-{uuid.uuid4().hex[:8]}"
    assert _one_error_line(run_pytest(pytester, "--modelship-image", f"{absent}:v1", "--modelship-pull")) == (
        f"ERROR: modelship: image {absent}:v1 not found in {registry}: check the repository and tag, "
        "or push the image there first"
    )
    # a digest needs no --modelship-pull (see below): an absent one is named as such
    digest = "sha256:" + "0" * 64
    assert _one_error_line(run_pytest(pytester, "--modelship-image", f"{absent}@{digest}")) == (
        f"ERROR: modelship: image {absent}@{digest} not found in {registry}: check the repository and digest, "
        "or push the image there first"
    )
    down = f"127.0.0.1:{_closed_port()}"
    assert _one_error_line(run_pytest(pytester, "--modelship-image", f"{down}/x:v1", "--modelship-pull")) == (
        f"ERROR: modelship: could not pull image {down}/x:v1: registry {down} not reachable (connection refused): "
        "check its address and that it is running"
    )
    with htpasswd_registry(tmp_path / "auth-registry", "smoke", "pw-not-given-1") as locked:
        ref = f"{locked}/modelship-plugin-test/app:v1"
        assert _one_error_line(run_pytest(pytester, "--modelship-image", ref, "--modelship-pull")) == (
            f"ERROR: modelship: could not pull image {ref}: {locked} denied access: run 'docker login {locked}' first"
        )


def test_an_index_without_the_engines_platform_says_so_and_lists_its_platforms(pytester, docker_client, registry):
    """Issue #19 item 13: an index without the engine's platform was reported as "no such image"."""
    info = docker_client.version()
    here = f"{info['Os']}/{info['Arch']}"
    others = [p for p in ("linux/arm64/v8", "linux/s390x", "linux/ppc64le") if not p.startswith(here)][:2]
    repo = f"{registry}/modelship-plugin-test/other-platforms-{uuid.uuid4().hex[:8]}"
    digest = push_index(registry, repo.split("/", 1)[1], "v1", others)
    listed = ", ".join(sorted(others))
    for ref, flags in ((f"{repo}:v1", ["--modelship-pull"]), (f"{repo}@{digest}", [])):
        assert _one_error_line(run_pytest(pytester, "--modelship-image", ref, *flags)) == (
            f"ERROR: modelship: could not pull image {ref}: no {here} image in the index (platforms: {listed}): "
            f"build and push the image for {here}, or test it on an engine of a listed platform"
        )


def test_a_digest_not_present_locally_is_pulled_and_its_model_files_checked(
    pytester, docker_client, base_image, registry, tmp_path
):
    import docker.errors

    # an image as `modelship build` makes it, pushed, then known only by its digest
    app = make_app(tmp_path / "app")
    files = {"weights.bin": b"\x01digest-pulled-weights" * 512, "tokenizer/vocab.txt": b"a\nb\nc\n"}
    model = make_model(tmp_path / "model", files, uri="az://models/by-digest", version="2.1.0")
    repo = f"{registry}/modelship-plugin-test/by-digest-{uuid.uuid4().hex[:8]}"
    build = subprocess.run(
        [*build_cmd(app, model, f"{repo}:v1", base_image), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    try:
        docker_client.images.push(repo, tag="v1")
        pushed = docker_client.images.get(f"{repo}:v1")
        (ref,) = [d for d in pushed.attrs["RepoDigests"] if d.startswith(repo + "@")]
        docker_client.images.remove(f"{repo}:v1", force=True)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(ref)

        result = run_pytest(pytester, "--modelship-image", ref, "-v")  # no --modelship-pull
        result.assert_outcomes(passed=5)
        result.stdout.fnmatch_lines_random(
            [
                f"modelship image: {ref} * (from --modelship-image)",
                "modelship pull: yes (digest not present locally)",
                "modelship-image::labels_match_model PASSED*",
                "modelship-image::model_files_sha256 PASSED*",
            ]
        )
        pulled = docker_client.images.get(ref)
        assert ref in pulled.attrs["RepoDigests"]
        assert pulled.labels["io.modelship.model.version"] == "2.1.0"
        # present now: the next run does not pull again
        result = run_pytest(pytester, "--modelship-image", ref, "-k", "healthcheck")
        result.assert_outcomes(passed=1, deselected=4)
        result.stdout.fnmatch_lines(["modelship pull: no (from default)"])
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            for img in docker_client.images.list(name=repo):
                docker_client.images.remove(img.id, force=True)


def test_a_model_dir_label_that_disagrees_with_the_env_fails_the_model_files_check(pytester, docker_client, image):
    tag = f"modelship-plugin-test:model-dir-{uuid.uuid4().hex[:8]}"
    dockerfile = f"FROM {image}\nLABEL io.modelship.model.dir=/srv/elsewhere\n"
    docker_client.images.build(fileobj=_tar("Dockerfile", dockerfile), custom_context=True, tag=tag, pull=False)
    try:
        result = run_pytest(pytester, "--modelship-image", tag, "-k", "sha256 or labels")
        result.assert_outcomes(passed=1, failed=1, deselected=3)
        result.stdout.fnmatch_lines(
            [
                "image check model_files_sha256 failed for *",
                "  - label io.modelship.model.dir is '/srv/elsewhere' but MODELSHIP_MODEL_DIR is "
                "'/opt/modelship/model', which the app reads",
            ]
        )
    finally:
        remove_image(docker_client, tag)


# ------------------------------------------------------------------------------------------------ helpers


def _tar(name: str, text: str):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        data = text.encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _one_error_line(result: pytest.RunResult) -> str:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-2000:]
    lines = [line for line in result.stderr.lines if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound and released: the kernel will not hand it out again soon)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
