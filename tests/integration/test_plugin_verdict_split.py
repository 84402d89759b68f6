"""The split shape's verdict: ``pytest --modelship-image APP@sha256 --modelship-model-image MODEL@sha256
--modelship-attest-key KEY.pem`` attests one test-result statement whose subjects are both digests, at both
images' ``.att`` tags, in the real registry; read back by the independent reader
(tests/support/attestation_reader.py) and judged by ``modelship verify``, which then passes for the model image
its publisher signed (``publish --sign-key``: signature, slsa, cyclonedx) with the verdict beside them."""

from __future__ import annotations

import uuid

import pytest

from modelship.oci.modelimage import publish_image
from support.attestation_reader import accepts, read_attestations
from support.cli import run_cli
from support.modelimage import unique_repo
from support.oms import keypair
from support.plugin_images import MODEL_FILES, build_app_only, remove_image
from support.plugin_runs import run_pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.docker
TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"
APP_REPO = "modelship-plugin-test/verdict-split-app"
SERVES_THE_MODEL = """
def test_serves_the_mounted_model(modelship_client):
    assert modelship_client.get("/version").json() == {"version": "1.0.0"}
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return keypair(tmp_path_factory.mktemp("split-verdict-keys"), "team")


@pytest.fixture(scope="module")
def app(docker_client, base_image, registry):
    """(pinned REF@DIGEST, digest) of an app image without a model, pushed to the testbed registry."""
    local = build_app_only(docker_client, base_image)
    repo, tag = f"{registry}/{APP_REPO}", uuid.uuid4().hex[:10]
    docker_client.images.get(local).tag(repo, tag=tag)
    for line in docker_client.images.push(repo, tag=tag, stream=True, decode=True):
        assert "error" not in line, f"pushing {repo}:{tag}: {line}"
    held = docker_client.images.get(f"{repo}:{tag}").attrs["RepoDigests"]
    pinned = [d for d in held if d.startswith(repo + "@")]
    assert pinned, f"{repo}:{tag} was pushed but the engine records no digest for it: {held}"
    digest = pinned[0].partition("@")[2]
    yield f"{repo}@{digest}", digest
    for ref in (local, f"{repo}:{tag}", f"{repo}@{digest}"):
        remove_image(docker_client, ref)


@pytest.fixture(scope="module")
def model(tmp_path_factory, registry, keys):
    """The model image as its publisher writes it: ``publish --sign-key`` (signature, slsa, cyclonedx)."""
    root = tmp_path_factory.mktemp("split-model")
    for name, data in MODEL_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    uri = f"oci://{registry}/{unique_repo('modelship-plugin-test/verdict-model')}"
    return publish_image(root, uri, version="1.0.0", quiet=True, sign_key=keys[0])


def _test_results(registry: str, ref: str, public) -> list[dict]:
    name, _, digest = ref.partition("@")
    found = [f for f in read_attestations(registry, name.partition("/")[2], digest) if accepts(f, public, digest)]
    return [f.statement for f in found if f.statement["predicateType"] == TEST_RESULT]


def test_the_verdict_of_a_pair_is_attested_at_both_images_and_verifies_for_the_model(
    pytester, registry, keys, app, model, docker_client
):
    private, public = keys
    app_ref, app_digest = app
    before = run_cli("verify", model.ref, "--key", str(public), "--attestation", "test-result")
    assert before.returncode == 1 and "no test-result attestation" in before.stderr  # only its publisher's evidence
    pytester.makepyfile(SERVES_THE_MODEL)
    result = run_pytest(
        pytester, "-v", "--modelship-image", app_ref, "--modelship-model-image", model.ref,
        f"--modelship-attest-key={private}", timeout=180,
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [f"modelship: test-result PASSED (* passed, 0 failed) attested for {app_ref} at *.att and {model.ref} at *.att"]
    )
    (at_app,) = _test_results(registry, app_ref, public)
    (at_model,) = _test_results(registry, model.ref, public)
    assert at_app == at_model  # one statement, about both digests, at each image
    assert [(s["name"], "sha256:" + s["digest"]["sha256"]) for s in at_model["subject"]] == [
        (app_ref.partition("@")[0], app_digest),
        (model.ref.partition("@")[0], model.image_digest),
    ]
    assert at_model["predicate"]["result"] == "PASSED"
    passed = at_model["predicate"]["passedTests"]
    assert "modelship-image::model_files_sha256" in passed
    assert any(t.endswith("::test_serves_the_mounted_model") for t in passed)
    # what the split shape's promote requires of the model image: its publisher's evidence and the run's verdict
    every = ("--attestation", "slsa", "--attestation", "cyclonedx", "--attestation", "test-result")
    verified = run_cli("verify", model.ref, "--key", str(public), *every)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    other = run_cli("verify", app_ref, "--key", str(public), "--attestation", "test-result")
    assert "no test-result attestation" not in other.stderr  # the app image carries the same verdict


def test_a_container_without_the_model_volume_is_not_attested(pytester, registry, keys, app, model):
    private, public = keys
    app_ref, _ = app
    seen = len(_test_results(registry, model.ref, public))
    pytester.makeconftest(
        "def pytest_modelship_container(config, container, settings):\n"
        "    container.volumes.clear()  # the app runs, but with no model image mounted\n"
        "    return container\n"
    )
    pytester.makepyfile("def test_up(modelship_url):\n    pass\n")
    result = run_pytest(
        pytester, "-v", "--modelship-image", app_ref, "--modelship-model-image", model.ref,
        f"--modelship-attest-key={private}", "-k", "test_up",
        "--modelship-timeout=10",  # without its model the app never gets ready: no need to wait the default 60 s
        timeout=180,
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines([f"modelship: not attested: a container with no model image mounted ran *{model.ref}*"])
    assert len(_test_results(registry, model.ref, public)) == seen
