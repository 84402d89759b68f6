"""One small app (the test app, one local wheel, a model) built both ways -- `--builder engine` into the engine,
`--builder registry` straight into the registry -- and run through the same plugin smoke run: the same cases,
the same image checks, the same outcomes; the engine reads the same user, workdir, command, ports,
healthcheck, environment and model labels from both."""

from __future__ import annotations

import uuid

import pytest

import modelship
from support.builds import local_requirements, make_app, make_wheel
from support.models import make_model
from support.plugin_images import GOOD_CASES, MODEL_FILES, MODEL_URI, MODEL_VERSION, remove_image
from support.plugin_runs import junit_cases, junit_outcome, run_pytest

pytestmark = pytest.mark.docker
pytest_plugins = ["pytester"]
IMAGE_CHECKS = {"labels_match_model", "model_files_sha256", "non_root_user"}


@pytest.fixture(scope="module")
def both(tmp_path_factory, docker_client, base_image, registry, registry_base_image):
    """{builder: image reference} of the same app and model."""
    root = tmp_path_factory.mktemp("parity")
    make_wheel(root / "wheels", "tinydep", "1.0")
    app = make_app(root / "app", requirements=local_requirements(root / "wheels", "tinydep==1.0"))
    model = make_model(root / "model", MODEL_FILES, uri=MODEL_URI, version=MODEL_VERSION)
    same = {"entrypoint": "python app.py", "quiet": True}
    engine = f"modelship-test/parity:{uuid.uuid4().hex[:8]}"
    modelship.build(app, model, engine, base_image=base_image, **same)
    tag = f"{registry}/appimage-test/parity-{uuid.uuid4().hex[:8]}:1"
    built = modelship.build(app, model, tag, base_image=registry_base_image, builder="registry", **same)
    images = {"engine": engine, "registry": built.ref}
    yield images
    for ref in images.values():
        remove_image(docker_client, ref)


def test_built_either_way_the_app_passes_the_same_smoke_cases_and_image_checks(both, pytester, docker_client):
    pytester.makefile(".yaml", **{"modelship-cases": GOOD_CASES})
    outcomes, configs = {}, {}
    for builder, ref in both.items():
        junit = pytester.path / f"{builder}.xml"
        result = run_pytest(pytester, "--modelship-image", ref, f"--junitxml={junit}", timeout=300)
        cases = junit_cases(junit)
        outcomes[builder] = {name: junit_outcome(case) for name, case in cases.items()}
        assert result.ret == 0, f"{builder}: {outcomes[builder]}\n" + "\n".join(result.outlines[-40:])
        configs[builder] = docker_client.images.get(ref).attrs["Config"]  # the plugin had the engine pull it
    assert outcomes["engine"] == outcomes["registry"]
    assert IMAGE_CHECKS | {"predict_cat", "bad_input_422"} <= set(outcomes["registry"])
    assert set(outcomes["registry"].values()) == {"passed"}

    def seen(c: dict) -> dict:
        labels = {k: v for k, v in c["Labels"].items() if k.startswith("io.modelship.model.") and "layers" not in k}
        keys = ("User", "WorkingDir", "Cmd", "ExposedPorts", "Entrypoint")
        return {**{k: c.get(k) for k in keys}, "Env": set(c["Env"]), "Test": c["Healthcheck"]["Test"], **labels}

    assert seen(configs["registry"]) == seen(configs["engine"])
