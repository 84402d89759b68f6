"""The gate in the split shape: one app image, the model as its own image. ``--modelship-model-image`` goes to
both containers unless ``--modelship-baseline-model-image`` names the baseline's own; no volume outlives the run."""

from __future__ import annotations

import re

import pytest

from modelship.oci.modelimage import publish_image
from support.modelimage import unique_repo
from support.plugin_images import MODEL_FILES, build_app_only, containers_of, remove_image
from support.plugin_runs import junit_cases, run_pytest

pytest_plugins = ["pytester"]

SECTION = "compare:\n  probes:\n    - {path: /version}\n    - {path: /predict, json: {x: [1, 2]}}\n"


@pytest.fixture(scope="module")
def app_only(docker_client, base_image):
    tag = build_app_only(docker_client, base_image)
    yield tag
    remove_image(docker_client, tag)


@pytest.fixture(scope="module")
def models(tmp_path_factory, registry):
    """The same files published as two model versions (the app's /version answers the mounted one's)."""
    root = tmp_path_factory.mktemp("model")
    for name, data in MODEL_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return {
        v: publish_image(root, f"oci://{registry}/{unique_repo('gate/model')}", version=v, quiet=True).ref
        for v in ("1.0.0", "2.0.0")
    }


def _volumes(docker_client) -> list[str]:
    return [v.name for v in docker_client.volumes.list(filters={"label": "io.modelship.session"})]


def test_the_baseline_gets_its_own_model_image_only_when_asked(pytester, app_only, models, docker_client):
    pytester.makefile(".yaml", **{"modelship-cases": SECTION})
    xml = pytester.path / "junit.xml"
    common = ["--modelship-image", app_only, "--modelship-baseline", app_only, f"--junitxml={xml}", "-k", "compare"]
    # the model image goes to both: the same app and model on both sides agree
    result = run_pytest(pytester, *common, "--modelship-model-image", models["2.0.0"])
    result.assert_outcomes(passed=1)
    # the baseline serves its own model: the versions differ, the answers to /version too
    result = run_pytest(
        pytester, *common, "--modelship-model-image", models["2.0.0"],
        "--modelship-baseline-model-image", models["1.0.0"],
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    text = junit_cases(xml)["compare"].find("failure").text
    assert "agreement 50.00% (1 of 2 probes) is below min_agreement 100.00%" in text, text
    side_by_side = '    candidate: 200 {"version": "2.0.0"}\n    baseline:  200 {"version": "1.0.0"}'
    assert "probe #1: GET /version\n" + side_by_side in text
    assert containers_of(docker_client, app_only) == []
    # both model volumes went with the run (their names carry the run id; other runs come and go meanwhile)
    run_id = re.search(r"container modelship-([0-9a-f]+)-main ", result.stdout.str()).group(1)
    assert [v for v in _volumes(docker_client) if v.startswith(f"modelship-model-{run_id}-")] == []
