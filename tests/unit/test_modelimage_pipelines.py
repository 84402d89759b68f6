"""The split shape in the pipeline templates, offline: a parameter of the example (modelShape), not a second
copy; its nightly path locks the newest model image, smoke-tests the pair, renders with the model digest and
deploys, and builds or pushes nothing; the data scientists' publish stage."""

from __future__ import annotations

from pathlib import Path

import yaml

import support.pipelines as pc
from modelship.cli import build_parser
from support import ROOT

TEMPLATES = ROOT / "pipelines" / "templates"
REPOS = {"self": ROOT, "modelship": ROOT}


def _report(*files: Path) -> pc.Report:
    return pc.check(list(files), REPOS, build_parser)


def test_the_example_has_one_pipeline_with_a_model_shape_parameter():
    root = yaml.safe_load((ROOT / "azure-pipelines.yml").read_text())
    (shape,) = [p for p in root["parameters"] if p["name"] == "modelShape"]
    assert shape["values"] == ["baked", "split"] and shape["default"] == "baked"
    ci, release = root["stages"]  # the same two stages: the shape is passed, nothing is copied
    assert release["parameters"]["modelShape"] == "${{ parameters.modelShape }}"
    assert release["parameters"]["modelImageRepository"].startswith("oci://")
    # both shapes: the nightly schedule does not rebuild the app image
    assert ci["parameters"]["condition"] == "and(succeeded(), ne(variables['Build.Reason'], 'Schedule'))"


SPLIT_CALLER = """
stages:
  - template: pipelines/templates/stages/release.yml@modelship
    parameters:
      modelShape: split
      modelUri: unused
      environment: prod
      modelImageRepository: oci://reg.example/models/iris
      appImage: reg.example/iris:app-stable
"""


def test_the_nightly_split_path_locks_tests_renders_and_deploys_without_building(tmp_path):
    (tmp_path / "split.yml").write_text(SPLIT_CALLER)
    report = _report(TEMPLATES / "jobs" / "model-update.yml", tmp_path / "split.yml")
    assert report.problems == []
    split = [c for c in report.commands if "model-update.yml" in c.where]
    verbs = [c.args[0] for c in split]
    assert "lock" in verbs and "inspect" in verbs and not {"build", "push", "assemble", "fetch"} & set(verbs)
    renders = [c.args for c in report.commands if c.args[:2] == ["deploy", "render"] and "--model-image" in c.args]
    assert renders and all("--mount" in r for r in renders)
    job = yaml.safe_load((TEMPLATES / "jobs" / "model-update.yml").read_text())
    steps = job["jobs"][0]["steps"]
    used = {s["template"] for s in steps if isinstance(s, dict) and "template" in s}
    assert "../steps/smoke-test.yml" in used and not any("build" in u or "push" in u for u in used)
    smoke = next(s for s in steps if s.get("template") == "../steps/smoke-test.yml")
    assert smoke["parameters"]["modelImage"] == "$(modelImageRef)" and smoke["parameters"]["pull"] == "true"
    # the smoke test really hands the model image to the plugin
    step = yaml.safe_load((TEMPLATES / "steps" / "smoke-test.yml").read_text())["steps"][0]
    assert step["env"]["MODELSHIP_MODEL_IMAGE"] == "${{ parameters.modelImage }}"


def test_the_release_stage_runs_the_split_path_without_waiting_for_ci():
    text = (TEMPLATES / "stages" / "release.yml").read_text()
    stage = yaml.safe_load(text)["stages"][0]
    assert stage["${{ if eq(parameters.modelShape, 'split') }}"] == {"dependsOn": []}
    split_jobs = stage["jobs"][0]["${{ if eq(parameters.modelShape, 'split') }}"]
    assert [j["template"] for j in split_jobs] == ["../jobs/model-update.yml", "../jobs/deploy-aks.yml"]
    deploy = split_jobs[1]["parameters"]
    assert deploy["modelImageRef"] == "$[ dependencies.model.outputs['lock.modelImageRef'] ]"
    assert deploy["imageRef"] == "$[ dependencies.model.outputs['lock.appImageRef'] ]"


def test_the_publish_stage_publishes_a_model_image_with_a_version():
    report = _report(TEMPLATES / "stages" / "publish-model.yml")
    assert report.problems == []
    (publish,) = [c.args for c in report.commands if c.args and c.args[0] == "publish"]
    assert "--version" in publish and publish[2] == "P_modelImageRepository"


def _split_steps() -> list[dict]:
    return yaml.safe_load((TEMPLATES / "jobs" / "model-update.yml").read_text())["jobs"][0]["steps"]


def test_the_split_path_downloads_the_key_attests_the_pair_and_promotes_the_model_image_with_requirements():
    steps = _split_steps()
    cond = "${{ if ne(parameters.signKey, '') }}"
    (keyed,) = [i for i, s in enumerate(steps) if cond in s]
    (smoke,) = [i for i, s in enumerate(steps) if s.get("template") == "../steps/smoke-test.yml"]
    (promote,) = [i for i, s in enumerate(steps) if s.get("template") == "../steps/promote-image.yml"]
    assert keyed < smoke < promote
    assert steps[keyed][cond] == [
        {"template": "../steps/sign-key.yml", "parameters": {"secureFile": "${{ parameters.signKey }}"}}
    ]
    # the verdict about the app image with the model image mounted, attested with the downloaded key
    assert steps[smoke]["parameters"][cond] == {"attestKey": "$(signKey.secureFilePath)"}
    assert steps[smoke]["parameters"]["modelImage"] == "$(modelImageRef)"
    assert steps[promote]["parameters"] == {
        "imageRef": "$(modelImageRef)",
        "tags": "${{ parameters.promoteTags }}",
        "requireKey": "${{ parameters.requireKey }}",
        "requireAttestation": "${{ parameters.requireAttestation }}",
        "modelRequireKey": "${{ parameters.modelRequireKey }}",
    }
    # the deployment waits for this job: a model image refused by promote is never deployed
    stage = yaml.safe_load((TEMPLATES / "stages" / "release.yml").read_text())["stages"][0]
    update, deploy = stage["jobs"][0]["${{ if eq(parameters.modelShape, 'split') }}"]
    assert deploy["parameters"]["dependsOn"] == ["model"]
    for name in ("signKey", "requireKey", "requireAttestation", "modelRequireKey"):
        assert update["parameters"][name] == f"${{{{ parameters.{name} }}}}", name


def test_the_example_split_release_requires_the_publishers_evidence_and_the_verdict():
    root = yaml.safe_load((ROOT / "azure-pipelines.yml").read_text())
    release = root["stages"][1]["parameters"]
    assert release["signKey"] == "iris-release.pem" and release["requireKey"] == "iris-release.pub"
    assert release["requireAttestation"] == ["slsa", "cyclonedx", "test-result"]
    # the team's public key (its publish --sign-key): the model image's signature, slsa and cyclonedx
    assert release["modelRequireKey"] == release["modelVerifyKey"] == "iris-team.pub"


SPLIT_CALLER_WITH_KEYS = (
    SPLIT_CALLER
    + """      signKey: iris-release.pem
      requireKey: iris-release.pub
      requireAttestation: [slsa, cyclonedx, test-result]
      modelRequireKey: iris-team.pub
"""
)


def test_a_split_caller_with_keys_passes_the_checks(tmp_path):
    (tmp_path / "split.yml").write_text(SPLIT_CALLER_WITH_KEYS)
    report = _report(TEMPLATES / "jobs" / "model-update.yml", tmp_path / "split.yml")
    assert report.problems == []
    assert any(c.args[:1] == ["promote"] for c in report.commands if "model-update.yml" in c.where)
