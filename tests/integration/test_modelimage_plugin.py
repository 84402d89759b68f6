"""The plugin runs the split shape: ``--modelship-model-image MODEL@sha256`` (env MODELSHIP_MODEL_IMAGE, ini
modelship_model_image) mounts the model image's content read-only at the app's model dir, the app serves
that model, and the image checks compare the mounted files with the model image's manifest. A model image
whose layers lie fails them; an image that is not a model image is one line; no volume outlives the run."""

from __future__ import annotations

import json
import re

import pytest

from modelship.oci.modelimage import publish_image
from support.modelimage import dir_member, file_member, push_model_image, tar_layer, unique_repo
from support.plugin_images import MODEL_FILES, build_app_only, remove_image
from support.plugin_runs import run_pytest

pytest_plugins = ["pytester"]

CHECKS_AND_VERSION = """
def test_serves_the_mounted_model(modelship_client):
    assert modelship_client.get("/version").json() == {"version": "1.0.0"}

def test_model_dir_is_a_read_only_mount(modelship_container):
    (m,) = [m for m in modelship_container.attrs["Mounts"] if m["Destination"] == "/opt/modelship/model"]
    assert m["Type"] == "volume" and m["RW"] is False
"""


@pytest.fixture(scope="module")
def app_only(docker_client, base_image):
    """The app without a model (what the split shape deploys), built by the engine."""
    tag = build_app_only(docker_client, base_image)
    yield tag
    remove_image(docker_client, tag)


@pytest.fixture(scope="module")
def model_image(tmp_path_factory, registry):
    root = tmp_path_factory.mktemp("model")
    for name, data in MODEL_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return publish_image(root, f"oci://{registry}/{unique_repo('mp/model')}", version="1.0.0", quiet=True)


def _volumes(docker_client) -> list[str]:
    return [v.name for v in docker_client.volumes.list(filters={"label": "io.modelship.session"})]


def test_app_and_model_image_together_pass_their_cases_and_checks(pytester, app_only, model_image, docker_client):
    pytester.makepyfile(CHECKS_AND_VERSION)
    result = run_pytest(
        pytester, "-v", "--modelship-image", app_only, "--modelship-model-image", model_image.ref,
        timeout=180,
    )  # fmt: skip
    out = result.stdout.str()
    result.assert_outcomes(passed=7)  # 5 image checks + 2 tests
    assert "labels_match_model PASSED" in out and "model_files_sha256 PASSED" in out
    assert f"modelship model image: {model_image.ref}" in out and "read-only at /opt/modelship/model" in out
    # the model volume went with the run (its name carries the run id; other workers' runs come and go meanwhile)
    run_id = re.search(r"container modelship-([0-9a-f]+)-main ", out).group(1)
    assert [v for v in _volumes(docker_client) if v.startswith(f"modelship-model-{run_id}-")] == []


def test_the_model_image_can_come_from_the_environment_or_the_ini_file(pytester, app_only, model_image, monkeypatch):
    pytester.makepyfile(CHECKS_AND_VERSION)
    monkeypatch.setenv("MODELSHIP_MODEL_IMAGE", model_image.ref)
    result = run_pytest(pytester, "--modelship-image", app_only, timeout=180)
    result.assert_outcomes(passed=7)
    assert "(from MODELSHIP_MODEL_IMAGE)" in result.stdout.str()
    monkeypatch.delenv("MODELSHIP_MODEL_IMAGE")
    pytester.makeini(f"[pytest]\nmodelship_model_image = {model_image.ref}\n")
    result = run_pytest(pytester, "--modelship-image", app_only, timeout=180)
    result.assert_outcomes(passed=7)
    assert "modelship_model_image)" in result.stdout.str()


def test_a_model_image_whose_files_differ_from_its_manifest_fails_the_checks(pytester, app_only, registry):
    """Its config and modelship.json say one thing, its layer holds other weights: the mounted files are
    compared with the manifest, so the pair is not passed."""
    from modelship.manifest import FileEntry, Manifest

    repo = unique_repo("mp/lying")
    base = "opt/modelship/model"
    claimed = dict(MODEL_FILES)
    import hashlib

    entries = [FileEntry(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in claimed.items()]
    manifest = Manifest.create(f"oci://{registry}/{repo}", "1.0.0", entries, stamp=False)
    weights = claimed["weights.bin"]
    members = [
        dir_member("opt"), dir_member("opt/modelship"), dir_member(base), dir_member(f"{base}/config"),
        file_member(f"{base}/config/labels.txt", claimed["config/labels.txt"]),
        file_member(f"{base}/modelship.json", manifest.to_json().encode()),
        file_member(f"{base}/weights.bin", b"X" + weights[1:]),  # same size, other bytes
    ]  # fmt: skip
    digest = push_model_image(registry, repo, "1.0.0", [tar_layer(members)], claimed)
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = run_pytest(
        pytester, "--modelship-image", app_only,
        "--modelship-model-image", f"{registry}/{repo}@{digest}", timeout=180,
    )  # fmt: skip
    result.assert_outcomes(passed=5, failed=1)
    assert "model_files_sha256" in result.stdout.str() and "weights.bin: sha256" in result.stdout.str()


def test_an_image_that_is_not_a_model_image_is_one_line(pytester, app_only):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = run_pytest(pytester, "--modelship-image", app_only, "--modelship-model-image", app_only, timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.stderr.lines if "modelship" in line]
    assert len(lines) == 1 and "is not a model image" in lines[0] and "modelship publish" in lines[0], lines
    assert json.dumps(lines)  # one plain line, nothing else
