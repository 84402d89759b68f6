"""The Azure Pipelines templates, offline: what the example pipeline runs (a commit, a pull request, the nightly
run), the gate before every promote, and the signatures and evidence promote requires."""

from __future__ import annotations

import argparse
import re
import subprocess

import pytest
import yaml

from modelship.cli import build_parser
from support import ROOT
from support import pipelines as pc
from support.pipelines import REPOS

TEMPLATES = ROOT / "pipelines" / "templates"


def test_pull_requests_never_push_and_only_the_schedule_deploys():
    root = yaml.safe_load((ROOT / "azure-pipelines.yml").read_text())
    assert root["trigger"]["branches"]["include"] == ["main"]
    assert root["pr"]["branches"]["include"] == ["main"]
    (nightly,) = root["schedules"]
    assert nightly["branches"]["include"] == ["main"]
    ci, release = root["stages"]
    assert ci["template"].endswith("stages/ci.yml")
    assert "ne(variables['Build.Reason'], 'PullRequest')" in ci["parameters"]["pushCondition"]
    assert "eq(variables['Build.Reason'], 'Schedule')" in release["parameters"]["condition"]
    # the push step really uses the condition it is given
    push = yaml.safe_load((ROOT / "pipelines/templates/steps/push-image.yml").read_text())
    (push_step,) = [s for s in push["steps"] if "bash" in s]
    assert push_step["condition"] == "${{ parameters.condition }}"
    assert push_step["name"] == "push"
    # its output variables, as modelship prints them for the step (isOutput=true: other jobs read push.imageRef)
    assert set(_pipeline_lines(push_step["bash"], PUSHED)) >= {
        f"##vso[task.setvariable variable=imageRef;isOutput=true]{PUSHED['ref']}",
        f"##vso[task.setvariable variable=imageDigest;isOutput=true]{PUSHED['image_digest']}",
    }


PUSHED = {"image": "reg:5000/app:1", "ref": "reg:5000/app@sha256:" + "a" * 64, "image_digest": "sha256:" + "a" * 64}


def _pipeline_lines(script: str, result: dict) -> list[str]:
    """The ##vso lines modelship prints for the one command of ``script``, given the verb's result."""
    import contextlib
    import io

    from modelship._cli_output import emit

    script = re.sub(r"\$\{\{[^}]*\}\}", result["image"], script)  # the template's parameters
    (args,) = [args for _, args in pc.modelship_commands(script) if args]
    ns = build_parser().parse_args(args)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        emit(ns, result, lambda: print("human line"))
    return [line for line in out.getvalue().splitlines() if line.startswith("##vso[")]


def _root_commands(template: str) -> list[list[str]]:
    """The modelship command lines the root pipeline runs through ``template`` (parameters as it passes them)."""
    report = pc.check([ROOT / "azure-pipelines.yml"], REPOS, build_parser)
    assert report.problems == []
    return [c.args for c in report.commands if c.where.startswith("azure-pipelines.yml") and template in c.where]


def _steps(job_template: str) -> list[dict]:
    return yaml.safe_load((TEMPLATES / "jobs" / job_template).read_text())["jobs"][0]["steps"]


def test_a_commit_builds_the_app_in_the_registry_assembles_the_model_smoke_tests_the_digest_and_promotes():
    runs = _root_commands("jobs/app-image.yml")
    verbs = [a[0] for a in runs]
    # build the app only, straight into the registry (no engine, nothing to push) -> lock + fetch -> assemble ->
    # promote (the assembled image, then the app)
    assert [v for v in verbs if v != "inspect"] == ["build", "lock", "fetch", "assemble", "promote", "promote"]
    build = runs[verbs.index("build")]
    assert (
        "--model" not in build and build[build.index("--tag") + 1] == "acrLoginServer/imageRepository:Build.BuildId-app"
    )
    assert build[build.index("--builder") + 1] == "registry" and "imageRef=ref" in build  # sets push.imageRef
    assemble = runs[verbs.index("assemble")]
    assert (
        assemble[1] == "$APP_IMAGE"
        and assemble[assemble.index("--tag") + 1] == "acrLoginServer/imageRepository:Build.BuildId"
    )
    promotes = [a for a in runs if a[0] == "promote"]
    assert promotes == [["promote", "$IMAGE_REF", "--tag", "stable"], ["promote", "$IMAGE_REF", "--tag", "app-stable"]]
    steps = _steps("app-image.yml")
    by_template = [(s.get("template"), s.get("parameters") or {}) for s in steps if "template" in s]
    names = [t for t, _ in by_template]
    assert names.index("../steps/assemble-image.yml") < names.index("../steps/smoke-test.yml")
    assert names.index("../steps/smoke-test.yml") < names.index("../steps/promote-image.yml")
    params = dict(by_template)
    assert params["../steps/assemble-image.yml"]["appImage"] == "$(push.imageRef)"  # the pushed app, by digest
    smoke = params["../steps/smoke-test.yml"]
    assert smoke["image"] == "$(assemble.imageRef)" and smoke["pull"] == "true"  # the digest that gets promoted
    promote = [p for t, p in by_template if t == "../steps/promote-image.yml"]
    assert [p["imageRef"] for p in promote] == ["$(assemble.imageRef)", "$(push.imageRef)"]
    # the assemble step's outputs are the digest, not a tag
    text = (TEMPLATES / "steps" / "assemble-image.yml").read_text()
    step = yaml.safe_load(text)["steps"][0]
    assembled = {**PUSHED, "unchanged": False}
    assert step["name"] == "assemble" and set(_pipeline_lines(step["bash"], assembled)) >= {
        f"##vso[task.setvariable variable=imageRef;isOutput=true]{PUSHED['ref']}",
        "##vso[task.setvariable variable=unchanged;isOutput=true]false",
    }
    assert step["env"]["APP_IMAGE"] == "${{ parameters.appImage }}"


def test_a_pull_request_builds_app_and_model_with_one_engine_and_pushes_nothing():
    runs = _root_commands("jobs/image.yml")
    builds = [a for a in runs if a[0] == "build"]
    assert builds and all("--model" in b for b in builds)  # the one-engine local path
    ci = yaml.safe_load((TEMPLATES / "stages" / "ci.yml").read_text())
    jobs = {j["template"]: j["parameters"] for j in ci["stages"][0]["jobs"]}
    assert jobs["../jobs/app-image.yml"]["condition"] == "${{ parameters.pushCondition }}"
    assert jobs["../jobs/image.yml"]["condition"] == "and(succeeded(), not(${{ parameters.pushCondition }}))"
    assert jobs["../jobs/image.yml"]["pushCondition"] == "false"


def test_the_nightly_baked_run_assembles_onto_the_promoted_app_without_building_then_deploys_the_digest():
    runs = _root_commands("jobs/model-assemble.yml")
    # no build, no push, no engine; the gate's baseline pinned (inspect) before the smoke test
    assert [a[0] for a in runs] == ["lock", "fetch", "assemble", "inspect", "inspect", "promote"]
    steps = _steps("model-assemble.yml")
    assert not [
        s for s in steps if "Docker@" in str(s.get("task", "")) and s["inputs"]["command"] not in ("login", "logout")
    ]
    params = {s["template"]: s.get("parameters") or {} for s in steps if "template" in s}
    assert params["../steps/assemble-image.yml"]["appImage"] == "${{ parameters.appImage }}"
    assert params["../steps/smoke-test.yml"]["image"] == "$(assemble.imageRef)"
    root = yaml.safe_load((ROOT / "azure-pipelines.yml").read_text())
    ci, release = root["stages"]
    assert release["parameters"]["appImage"].endswith(":app-stable")  # what the commit path promotes
    assert "ne(variables['Build.Reason'], 'Schedule')" in ci["parameters"]["condition"]  # no CI at night
    assert "not(or(failed(), canceled()))" in release["parameters"]["condition"]  # a skipped CI does not block it
    stage = yaml.safe_load((TEMPLATES / "stages" / "release.yml").read_text())["stages"][0]
    baked = stage["jobs"][1]["${{ else }}"]
    assert [j["template"] for j in baked] == ["../jobs/model-assemble.yml", "../jobs/deploy-aks.yml"]
    assert baked[1]["parameters"]["imageRef"] == "$[ dependencies.assemble.outputs['assemble.imageRef'] ]"
    renders = [a for a in _root_commands("deploy-aks.yml") if a[:2] == ["deploy", "render"]]
    assert renders and all("--image" in r for r in renders)


def _job_call(stage_file: str, job: str) -> str:
    """The text of a stage template's call of a job template (its parameters as written)."""
    text = (TEMPLATES / "stages" / stage_file).read_text()
    return text[text.index(f"template: ../jobs/{job}") :].split("- template:")[0]


GATED_JOBS = {  # job template -> (the baseline it compares with, the smoke-test's parameter that names it)
    "app-image.yml": ("baseline", "${{ parameters.imageRepository }}:${{ parameters.baselineTag }}"),
    "model-assemble.yml": ("baseline", "${{ parameters.imageRepository }}:${{ parameters.baselineTag }}"),
    "model-update.yml": (
        "baselineModelImage",
        "${{ replace(parameters.modelImageRepository, 'oci://', '') }}:${{ parameters.baselineTag }}",
    ),
}


@pytest.mark.parametrize("job", sorted(GATED_JOBS))
def test_every_promote_is_gated_against_what_production_runs(job):
    steps = _steps(job)
    templates = [s.get("template") for s in steps]
    first_promote = templates.index("../steps/promote-image.yml")
    smoke = templates.index("../steps/smoke-test.yml")
    assert smoke < first_promote  # a candidate that fails the gate is never promoted
    gate = steps[smoke]["parameters"]["${{ if ne(parameters.baselineTag, '') }}"]
    key, baseline = GATED_JOBS[job]
    assert gate[key] == baseline
    for name in ("minAgreement", "maxLatencyRatio"):
        assert steps[smoke]["parameters"][name] == f"${{{{ parameters.{name} }}}}"
    declared = {p["name"]: p for p in yaml.safe_load((TEMPLATES / "jobs" / job).read_text())["parameters"]}
    assert declared["baselineTag"]["default"] == "stable"


def test_the_example_pipeline_names_the_gate_thresholds_and_the_stages_pass_them_on():
    root = yaml.safe_load((ROOT / "azure-pipelines.yml").read_text())
    for stage in root["stages"]:
        assert float(stage["parameters"]["minAgreement"]) == 0.98
        assert float(stage["parameters"]["maxLatencyRatio"]) == 1.5
    stages = {"ci.yml": ["app-image.yml"], "release.yml": ["model-update.yml", "model-assemble.yml"]}
    for stage_file, jobs in stages.items():
        for job in jobs:
            call = _job_call(stage_file, job)
            for name in ("baselineTag", "minAgreement", "maxLatencyRatio"):
                assert f"{name}: ${{{{ parameters.{name} }}}}" in call, (stage_file, job, name)


def test_the_smoke_step_gives_the_thresholds_to_the_plugin():
    step = yaml.safe_load((TEMPLATES / "steps" / "smoke-test.yml").read_text())["steps"][0]
    from pytest_modelship.settings import OPTIONS

    envs = {o.env for o in OPTIONS}
    assert step["env"]["MODELSHIP_MIN_AGREEMENT"] == "${{ parameters.minAgreement }}"
    assert step["env"]["MODELSHIP_MAX_LATENCY_RATIO"] == "${{ parameters.maxLatencyRatio }}"
    assert step["env"]["MODELSHIP_ATTEST_KEY"] == "${{ parameters.attestKey }}"
    assert {"MODELSHIP_MIN_AGREEMENT", "MODELSHIP_MAX_LATENCY_RATIO", "MODELSHIP_ATTEST_KEY"} <= envs  # the plugin's
    assert '"${gate[@]}"' in step["bash"]


FETCHING_JOBS = ["app-image.yml", "image.yml", "model-assemble.yml"]


@pytest.mark.parametrize("job", FETCHING_JOBS)
def test_every_job_that_fetches_a_model_verifies_its_signature_when_given_a_key(job):
    steps = _steps(job)
    cond = "${{ if ne(parameters.modelVerifyKey, '') }}"
    keyed = [i for i, s in enumerate(steps) if cond in s]
    fetch = [i for i, s in enumerate(steps) if s.get("template") == "../steps/fetch-model.yml"]
    assert keyed and fetch and keyed[0] < fetch[0]  # the key is in place before the first lock/fetch
    (call,) = steps[keyed[0]][cond]
    assert call == {
        "template": "../steps/verify-key.yml",
        "parameters": {"secureFile": "${{ parameters.modelVerifyKey }}"},
    }


def test_the_verify_key_step_names_the_key_in_the_variable_modelship_reads(tmp_path):
    from modelship.trust.check import VERIFY_KEYS_ENV

    download, export = yaml.safe_load((TEMPLATES / "steps" / "verify-key.yml").read_text())["steps"]
    assert download["task"] == "DownloadSecureFile@1" and download["name"] == "modelVerifyKey"
    assert export["env"]["KEY_PATH"] == "$(modelVerifyKey.secureFilePath)"
    key = tmp_path / "team.pub"
    out = subprocess.run(["bash", "-c", export["bash"]], env={"KEY_PATH": str(key)}, capture_output=True, text=True)
    # a job variable: Azure Pipelines maps it into the environment of every later step of the job
    assert out.stdout.strip() == f"##vso[task.setvariable variable={VERIFY_KEYS_ENV}]{key}"


def test_the_example_pipeline_installs_only_signed_models():
    root = yaml.safe_load((ROOT / "azure-pipelines.yml").read_text())
    assert all(stage["parameters"]["modelVerifyKey"] == "iris-team.pub" for stage in root["stages"])
    for stage_file, jobs in {"ci.yml": ["app-image.yml", "image.yml"], "release.yml": ["model-assemble.yml"]}.items():
        for job in jobs:
            call = _job_call(stage_file, job)
            assert "modelVerifyKey: ${{ parameters.modelVerifyKey }}" in call, (stage_file, job)


def _expand(node, env: dict):
    """``node`` as Azure expands it for the parameters ``env``: the ``${{ if }}`` branches that hold inlined
    (after ``pc.prune`` dropped the others), ``${{ parameters.x }}`` and ``join`` filled in."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_expand(v, env) if k.startswith("${{") else {k: _expand(v, env)})
        return out
    if isinstance(node, list):
        items = []
        for v in node:
            inline = isinstance(v, dict) and len(v) == 1 and next(iter(v)).startswith("${{")
            items += _expand(next(iter(v.values())), env) if inline else [_expand(v, env)]
        return items
    return pc.substitute(node, env) if isinstance(node, str) else node


def _expanded_steps(template: str, env: dict) -> list[dict]:
    """The steps of steps/``template`` as Azure expands them for ``env`` (its parameters, over the declared
    defaults: a new optional parameter does not change what an existing call expands to)."""
    body = yaml.safe_load((TEMPLATES / "steps" / template).read_text())
    env = {**{p["name"]: p["default"] for p in body["parameters"] if "default" in p}, **env}
    return _expand(pc.prune(body["steps"], env), env)


def _promote_step(env: dict) -> list[dict]:
    return _expanded_steps("promote-image.yml", env)


def _run_promote_script(script: str, env: dict[str, str]) -> argparse.Namespace:
    """Run a step's bash with a stand-in ``modelship`` that prints its words; parse them."""
    fake = "modelship() { printf '%s\\n' \"$@\"; }\n"
    out = subprocess.run(["bash", "-c", fake + script], env=env, capture_output=True, text=True, check=True)
    return build_parser().parse_args(out.stdout.splitlines())


def test_the_promote_step_passes_the_key_from_a_secure_file_and_each_attestation_type(tmp_path):
    from modelship.trust.attestations import PREDICATE_TYPES

    ref = "acr.example/iris@sha256:" + "a" * 64
    env = {"imageRef": ref, "tags": ["stable", "1.4"], "requireKey": "iris-release.pub"}
    env["requireAttestation"] = list(PREDICATE_TYPES)
    download, bash = _promote_step(env)
    assert download["task"] == "DownloadSecureFile@1" and download["name"] == "promoteRequireKey"
    assert download["inputs"]["secureFile"] == "iris-release.pub"
    # the downloaded file's path: the macro $(promoteRequireKey.secureFilePath) (pc.substitute leaves its name)
    assert bash["env"]["REQUIRE_KEY"] == f"{download['name']}.secureFilePath"
    assert bash["env"]["REQUIRE_ATTESTATION"] == "slsa cyclonedx test-result"
    key = tmp_path / "iris-release.pub"
    run_env = {"PATH": "/usr/bin:/bin", "IMAGE_REF": ref, "REQUIRE_KEY": str(key)}
    a = _run_promote_script(bash["bash"], {**run_env, "REQUIRE_ATTESTATION": bash["env"]["REQUIRE_ATTESTATION"]})
    assert a.command == "promote" and a.ref == ref and a.tag == ["stable", "1.4"]
    assert a.require_key == [str(key)] and a.require_attestation == ["slsa", "cyclonedx", "test-result"]

    # no requireKey: no download, no requirement on the command line
    (bash,) = _promote_step({"imageRef": ref, "tags": ["stable"], "requireKey": "", "requireAttestation": []})
    assert "REQUIRE_KEY" not in bash["env"]
    a = _run_promote_script(bash["bash"], {"PATH": "/usr/bin:/bin", "IMAGE_REF": ref, "REQUIRE_ATTESTATION": ""})
    assert a.tag == ["stable"] and a.require_key is None and a.require_attestation is None


PROMOTING_JOBS = {"ci.yml": "app-image.yml", "release.yml": "model-assemble.yml"}


@pytest.mark.parametrize(("stage_file", "job"), sorted(PROMOTING_JOBS.items()))
def test_the_promote_of_the_tested_digest_requires_the_evidence_the_stage_names(stage_file, job):
    call = _job_call(stage_file, job)
    for name in ("requireKey", "requireAttestation"):
        assert f"{name}: ${{{{ parameters.{name} }}}}" in call, (stage_file, job, name)
    promotes = [s["parameters"] for s in _steps(job) if s.get("template") == "../steps/promote-image.yml"]
    keyed = [p for p in promotes if "requireKey" in p]
    # one promote per job downloads the key (its step name is fixed): the one of the smoke-tested digest
    assert keyed == [
        {
            "imageRef": "$(assemble.imageRef)",
            "tags": "${{ parameters.promoteTags }}",
            "requireKey": "${{ parameters.requireKey }}",
            "requireAttestation": "${{ parameters.requireAttestation }}",
        }
    ]


def test_the_example_pipeline_promotes_and_deploys_only_a_digest_with_a_signature_and_all_three_attestations():
    from modelship.trust.attestations import PREDICATE_TYPES

    root = yaml.safe_load((ROOT / "azure-pipelines.yml").read_text())
    for stage in root["stages"]:
        assert stage["parameters"]["requireKey"] == "iris-release.pub"  # a secure file
        assert (
            stage["parameters"]["requireAttestation"] == ["slsa", "cyclonedx", "test-result"] == list(PREDICATE_TYPES)
        )
    # the nightly deployment waits for the job whose promote checks them: a refused digest is never deployed
    stage = yaml.safe_load((TEMPLATES / "stages" / "release.yml").read_text())["stages"][0]
    assemble, deploy = stage["jobs"][1]["${{ else }}"]
    assert assemble["template"] == "../jobs/model-assemble.yml" and deploy["parameters"]["dependsOn"] == ["assemble"]
    steps = _steps("model-assemble.yml")
    assert steps[-2]["template"] == "../steps/promote-image.yml"  # the job's last step before the registry logout
    report = pc.check([ROOT / "azure-pipelines.yml"], REPOS, build_parser)
    assert report.problems == []


def test_the_assemble_step_signs_and_attests_with_the_key_from_a_secure_file(tmp_path):
    params = {"appImage": "acr.example/iris:app", "image": "acr.example/iris:7", "modelDir": "/w/model"}
    (step,) = _expanded_steps("assemble-image.yml", {**params, "signKey": "iris-release.pem"})
    (download,) = yaml.safe_load((TEMPLATES / "steps" / "sign-key.yml").read_text())["steps"]
    assert (
        download["task"] == "DownloadSecureFile@1" and step["env"]["SIGN_KEY"] == f"{download['name']}.secureFilePath"
    )
    key = tmp_path / "iris-release.pem"
    run_env = {"PATH": "/usr/bin:/bin", "APP_IMAGE": params["appImage"]}
    a = _run_promote_script(step["bash"], {**run_env, "SIGN_KEY": str(key)})
    assert a.command == "assemble" and a.app_image == params["appImage"] and a.sign_key == str(key)
    (step,) = _expanded_steps("assemble-image.yml", {**params, "signKey": ""})
    assert "SIGN_KEY" not in step["env"] and _run_promote_script(step["bash"], run_env).sign_key is None


@pytest.mark.parametrize(("stage_file", "job"), sorted(PROMOTING_JOBS.items()))
def test_the_job_downloads_the_sign_key_before_assemble_and_the_stage_passes_it_on(stage_file, job):
    assert "signKey: ${{ parameters.signKey }}" in _job_call(stage_file, job)
    steps = _steps(job)
    cond = "${{ if ne(parameters.signKey, '') }}"
    keyed = [i for i, s in enumerate(steps) if cond in s]
    (assemble,) = [i for i, s in enumerate(steps) if s.get("template") == "../steps/assemble-image.yml"]
    assert keyed and keyed[0] < assemble
    assert steps[keyed[0]][cond] == [
        {"template": "../steps/sign-key.yml", "parameters": {"secureFile": "${{ parameters.signKey }}"}}
    ]
    assert steps[assemble]["parameters"]["signKey"] == "${{ parameters.signKey }}"
    # the smoke test after it attests its verdict with the same downloaded key, for the digest assemble wrote
    (smoke,) = [s["parameters"] for s in steps if s.get("template") == "../steps/smoke-test.yml"]
    assert smoke["image"] == "$(assemble.imageRef)" and smoke[cond] == {"attestKey": "$(signKey.secureFilePath)"}
    (download,) = yaml.safe_load((TEMPLATES / "steps" / "sign-key.yml").read_text())["steps"]
    assert download["name"] == "signKey"


def test_the_example_pipeline_signs_with_the_private_half_of_the_key_promote_requires():
    root = yaml.safe_load((ROOT / "azure-pipelines.yml").read_text())
    for stage in root["stages"]:
        assert stage["parameters"]["signKey"] == "iris-release.pem"
        assert stage["parameters"]["requireKey"] == "iris-release.pub"


def test_the_promote_step_accepts_the_model_publishers_key_beside_the_release_key(tmp_path):
    """The split shape's model image: --require-key twice (each requirement met by either key), both keys from
    secure files with fixed download names."""
    ref = "acr.example/models/iris@sha256:" + "b" * 64
    env = {"imageRef": ref, "tags": ["stable"], "requireKey": "iris-release.pub", "modelRequireKey": "iris-team.pub"}
    env["requireAttestation"] = ["slsa", "cyclonedx", "test-result"]
    release, team, bash = _promote_step(env)
    assert (release["name"], release["inputs"]["secureFile"]) == ("promoteRequireKey", "iris-release.pub")
    assert (team["name"], team["inputs"]["secureFile"]) == ("promoteModelRequireKey", "iris-team.pub")
    assert bash["env"]["MODEL_REQUIRE_KEY"] == f"{team['name']}.secureFilePath"
    run_env = {"PATH": "/usr/bin:/bin", "IMAGE_REF": ref, "REQUIRE_ATTESTATION": "slsa cyclonedx test-result"}
    keys = {"REQUIRE_KEY": str(tmp_path / "iris-release.pub"), "MODEL_REQUIRE_KEY": str(tmp_path / "iris-team.pub")}
    a = _run_promote_script(bash["bash"], {**run_env, **keys})
    assert a.require_key == [keys["REQUIRE_KEY"], keys["MODEL_REQUIRE_KEY"]]
    assert a.require_attestation == ["slsa", "cyclonedx", "test-result"]
