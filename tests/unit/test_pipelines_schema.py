"""The Azure Pipelines templates, offline: the schema, template references and parameters, every modelship
command line parsing, and the checker that proves it (not vacuous)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelship.cli import build_parser
from support import ROOT
from support import pipelines as pc
from support.pipelines import REPOS

PIPELINE_FILES = [*sorted([*(ROOT / "pipelines").rglob("*.y*ml")]), ROOT / "azure-pipelines.yml"]
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
# The vendored schema's patterns are not valid in unicode regex mode (check-jsonschema issue #550)
SCHEMA_ARGS = ["--builtin-schema", "vendor.azure-pipelines", "--data-transform", "azure-pipelines"]
SCHEMA_ARGS += ["--regex-variant", "nonunicode"]


def schema_check(files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHECK_JSONSCHEMA), *SCHEMA_ARGS, *map(str, files)], capture_output=True, text=True)


def readme_pipelines(tmp_path: Path) -> list[Path]:
    """The YAML examples of pipelines/README.md, as files."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "pipelines" / "README.md").read_text(), re.S)
    out = []
    for i, block in enumerate(blocks):
        data = yaml.safe_load(block)
        if isinstance(data, list):  # a steps fragment: wrap it as a pipeline
            block = "steps:\n" + block
        path = tmp_path / f"readme-{i}.yml"
        path.write_text(block)
        out.append(path)
    return out


def test_there_is_a_template_for_every_step_of_the_flow():
    names = {
        p.relative_to(ROOT / "pipelines" / "templates").as_posix() for p in PIPELINE_FILES if "templates" in p.parts
    }
    assert {
        "steps/install-modelship.yml",
        "steps/fetch-model.yml",
        "steps/build-image.yml",
        "steps/smoke-test.yml",
        "steps/push-image.yml",
        "steps/deploy-aks.yml",
        "steps/assemble-image.yml",
        "steps/promote-image.yml",
        "jobs/app-image.yml",
        "jobs/model-assemble.yml",
        "stages/ci.yml",
        "stages/release.yml",
    } <= names


def test_every_pipeline_file_matches_the_azure_pipelines_schema():
    proc = schema_check(PIPELINE_FILES)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert "ok -- validation done" in proc.stdout


def test_the_schema_check_catches_a_broken_file(tmp_path):
    # not vacuous: a misspelt step key fails it
    text = (ROOT / "pipelines" / "templates" / "steps" / "build-image.yml").read_text()
    broken = tmp_path / "broken.yml"
    broken.write_text(text.replace("  - bash: |", "  - bsah: |", 1))
    assert "bsah" in broken.read_text()
    assert schema_check([broken]).returncode == 1


def test_readme_examples_match_the_schema(tmp_path):
    files = readme_pipelines(tmp_path)
    assert len(files) >= 2
    proc = schema_check(files)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


def test_references_parameters_and_modelship_commands_are_consistent():
    report = pc.check(PIPELINE_FILES, REPOS, build_parser)
    assert report.problems == []
    # every template is used by the root pipeline or another template
    templates = {p.resolve() for p in PIPELINE_FILES if "templates" in p.parts}
    assert templates - {t for t in templates if t.parent.name == "stages"} <= report.templates_seen
    # not vacuous: the commands of the whole flow were found and parsed
    verbs = {c.args[0] for c in report.commands if c.args}
    assert {"lock", "fetch", "build", "inspect", "push", "assemble", "promote", "deploy"} <= verbs
    root_commands = [c for c in report.commands if c.where.startswith("azure-pipelines.yml")]
    assert any(c.args[:2] == ["lock", "az://modelshipdemo/models/iris"] for c in root_commands)
    assert any(c.args[:3] == ["deploy", "render", "--image"] and "iris-service" in c.args for c in root_commands)


def test_readme_consumer_passes_the_same_checks(tmp_path):
    files = readme_pipelines(tmp_path)
    report = pc.check(files, {**REPOS, "self": tmp_path}, build_parser)
    assert report.problems == []
    assert any(c.args[:2] == ["lock", "az://mlmodels/models/churn"] for c in report.commands)


def test_no_secret_is_passed_on_a_command_line():
    # credentials reach modelship through env (secretEnv) or a service connection, never as arguments
    for path in PIPELINE_FILES:
        text = path.read_text()
        assert not re.search(r"--password(?!-stdin)", text), path
        assert not re.search(r"(?i)(AccountKey|sig)=", text), path
        for line in text.splitlines():
            if "modelship " in line and "$(" in line:
                assert not re.search(r"\$\((?i:[^)]*(secret|password|key|sas|token)[^)]*)\)", line), (path, line)


# --------------------------------------------------------------------- the checker itself (not vacuous)


def _write(tmp_path: Path, files: dict[str, str]) -> list[Path]:
    out = []
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        out.append(p)
    return out


CALLEE = """
parameters:
  - name: image
    type: string
  - name: replicas
    type: number
    default: "2"
  - name: push
    type: boolean
    default: "true"
  - name: mode
    type: string
    default: a
    values: [a, b]
steps:
  - bash: modelship deploy render --image ${{ parameters.image }} --out k8s --replicas ${{ parameters.replicas }}
"""


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        ("template: steps/missing.yml", "no such file"),
        ("template: steps/callee.yml\n    parameters: {image: x, colour: red}", "undeclared parameter 'colour'"),
        ("template: steps/callee.yml\n    parameters: {replicas: '3'}", "required parameter 'image' not passed"),
        ("template: steps/callee.yml\n    parameters: {image: x, replicas: many}", "is a number but gets 'many'"),
        ("template: steps/callee.yml\n    parameters: {image: x, push: maybe}", "is a boolean but gets 'maybe'"),
        ("template: steps/callee.yml\n    parameters: {image: x, mode: c}", "not one of ['a', 'b']"),
        ("template: steps/callee.yml\n    parameters: {image: [x]}", "is a string but gets a list"),
        ("template: steps/callee.yml\n    parameters: {image: x, push: '${{ parameters.count }}'}", "of type number"),
        ("template: steps/callee.yml@other", "unknown repository alias"),
        ("template: steps/callee.yml\n    parameters: {image: '${{ parameters.imgae }}'}", "imgae }} is not declared"),
        ("template: steps/callee.yml\n    parameters: {image: 'x --bogus'}", "does not parse"),
        ("bash: modelship fetch", "does not parse"),
        ("bash: 'echo x | modelship lock a b c'", "does not parse"),
        ("script: modelship build app --model m --tag 'unclosed", "cannot split"),
    ],
)
def test_checker_reports(tmp_path, call, problem):
    caller = "parameters:\n  - name: count\n    type: number\n    default: '1'\nsteps:\n  - " + call + "\n"
    files = _write(tmp_path, {"steps/callee.yml": CALLEE, "pipeline.yml": caller})
    report = pc.check(files, {"self": tmp_path}, build_parser)
    assert any(problem in p for p in report.problems), report.problems


def test_checker_accepts_good_calls_and_fills_parameters(tmp_path):
    caller = """
parameters:
  - name: count
    type: number
    default: "3"
steps:
  - template: steps/callee.yml
    parameters:
      image: reg/app@sha256:$(digest)
      replicas: ${{ parameters.count }}
      push: false
      mode: b
  - bash: |
      set -e
      modelship fetch az://a/b/c model --json > out.json 2>/dev/null && modelship inspect img:1
      python - <<'PY'
      print("modelship bogus --nope")
      PY
"""
    files = _write(tmp_path, {"steps/callee.yml": CALLEE, "pipeline.yml": caller})
    report = pc.check(files, {"self": tmp_path}, build_parser)
    assert report.problems == []
    args = [c.args for c in report.commands if c.where.startswith("pipeline.yml")]
    assert ["deploy", "render", "--image", "reg/app@sha256:digest", "--out", "k8s", "--replicas", "3"] in args
    assert ["fetch", "az://a/b/c", "model", "--json"] in args
    assert ["inspect", "img:1"] in args
    assert not any("bogus" in a for a in args)  # heredoc bodies are not shell lines


def test_checker_follows_known_if_branches_only(tmp_path):
    callee = """
parameters:
  - name: model
    type: string
    default: ""
steps:
  - ${{ if eq(parameters.model, '') }}:
      - bash: modelship build app --tag reg/app:1
  - ${{ else }}:
      - bash: modelship build app --model ${{ parameters.model }} --tag reg/app:1
"""
    caller = "steps:\n  - template: steps/callee.yml\n    parameters: {model: m}\n"
    files = _write(tmp_path, {"steps/callee.yml": callee, "pipeline.yml": caller})
    report = pc.check(files, {"self": tmp_path}, build_parser)
    assert report.problems == []
    via_caller = [c.args for c in report.commands if c.where.startswith("pipeline.yml")]
    assert via_caller == [["build", "app", "--model", "m", "--tag", "reg/app:1"]]
    alone = [c.args for c in report.commands if c.where.startswith("steps/callee.yml")]
    assert alone == [["build", "app", "--tag", "reg/app:1"]]


def test_no_template_carries_python():
    # the CLI prints what a pipeline needs (--pipeline-variable NAME=KEY): no inline interpreter parses its JSON
    carriers = [
        str(p.relative_to(ROOT))
        for p in PIPELINE_FILES
        if re.search(r"\bpython3?\s+-(\s|$)|\bpython3?\s+-c\b", p.read_text())
    ]
    assert carriers == []
    # not vacuous: the output variables the templates hand on come from modelship's own command lines
    report = pc.check(PIPELINE_FILES, REPOS, build_parser)
    variables = {spec for c in report.commands for spec in c.args if re.fullmatch(r"[A-Za-z]+=[a-z_.]+", spec)}
    assert {"imageRef=ref", "imageDigest=image_digest", "modelImageRef=ref", "appImageRef=ref"} <= variables
    assert {"modelVersion=version", "modelDigest=model_digest", "unchanged=unchanged"} <= variables
