"""The smoke-test template's gate, run the way an agent runs the step: its bash script, the real `modelship`
CLI, the real registry. A baseline tag the registry does not have yet (the first release) skips the gate
with a warning; one it has is pinned by digest and handed to the plugin; a registry that cannot be read fails
the step rather than skipping the gate. `python -m pytest` itself is a recorder here (a `python` first on
PATH): the plugin's gate is tested with containers in test_gate.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import yaml

from support import ROOT
from support.modelimage import push_model_image
from support.pipelines import declared

STEP = ROOT / "pipelines" / "templates" / "steps" / "smoke-test.yml"
RECORDER = """#!/bin/sh
printf '%s\\n' "$@" > "$RECORD_ARGS"
env | grep '^MODELSHIP_' | sort > "$RECORD_ENV"
"""


def run_step(tmp_path: Path, **parameters: str) -> tuple[subprocess.CompletedProcess[str], list[str], str]:
    """The step's script with the template's parameters and the agent's macros filled in; (run, pytest's
    arguments, the MODELSHIP_* environment pytest saw)."""
    step = yaml.safe_load(STEP.read_text())["steps"][0]
    # the template's defaults (as a caller that leaves them out gets), then the required ones and the test's
    values = {name: str(p.default).lower() if isinstance(p.default, bool) else str(p.default)
              for name, p in declared(STEP).items() if p.has_default}  # fmt: skip
    values |= {"image": "cand/app@sha256:" + "c" * 64, "casesFile": "cases.yaml", "timeout": "60", "pull": "true"}
    values |= parameters

    def fill(text: str) -> str:
        text = re.sub(r"\$\{\{\s*parameters\.(\w+)\s*\}\}", lambda m: values[m.group(1)], text)
        for macro in ("Agent.TempDirectory", "System.DefaultWorkingDirectory", "Common.TestResultsDirectory"):
            text = text.replace(f"$({macro})", str(tmp_path))
        return text

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(RECORDER)
    (bin_dir / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSHIP_") or k.startswith("MODELSHIP_TESTBED")}
    env |= {k: fill(str(v)) for k, v in step["env"].items()}
    env |= {"RECORD_ARGS": str(tmp_path / "args"), "RECORD_ENV": str(tmp_path / "env")}
    env["PATH"] = f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin"
    proc = subprocess.run(["bash", "-c", fill(step["bash"])], env=env, capture_output=True, text=True, timeout=120)
    args = (tmp_path / "args").read_text().splitlines() if (tmp_path / "args").exists() else []
    seen = (tmp_path / "env").read_text() if (tmp_path / "env").exists() else ""
    return proc, args, seen


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_the_first_release_skips_the_gate_with_a_warning(tmp_path, registry):
    baseline = f"{registry}/gate-pipe-{uuid.uuid4().hex[:8]}:stable"  # nothing promoted yet
    proc, args, _ = run_step(tmp_path, baseline=baseline)
    assert proc.returncode == 0, proc.stderr
    assert f"##vso[task.logissue type=warning]no {baseline}" in proc.stdout
    assert "the gate is skipped" in proc.stdout
    assert args and "--modelship-baseline" not in args  # pytest ran: the smoke cases still do
    assert _option(args, "--modelship-image") == "cand/app@sha256:" + "c" * 64


def test_a_promoted_baseline_is_pinned_by_digest_and_the_thresholds_reach_the_plugin(tmp_path, registry):
    repo = f"gate-pipe-{uuid.uuid4().hex[:8]}"
    digest = push_model_image(registry, repo, "stable", [], {})
    proc, args, seen = run_step(tmp_path, baseline=f"{registry}/{repo}:stable", minAgreement="0.98")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stdout
    # the digest the tag pointed at when the step ran: the report and the Tests tab name what was compared
    assert _option(args, "--modelship-baseline") == f"{registry}/{repo}@{digest}"
    assert "MODELSHIP_MIN_AGREEMENT=0.98" in seen.splitlines()
    assert "MODELSHIP_MAX_LATENCY_RATIO=" in seen.splitlines()  # empty: the cases file's


def test_the_split_shape_compares_with_the_model_image_production_runs(tmp_path, registry):
    repo = f"gate-pipe-{uuid.uuid4().hex[:8]}"
    app = push_model_image(registry, repo, "app-stable", [], {})
    model = push_model_image(registry, f"{repo}-model", "stable", [], {})
    app_ref = f"{registry}/{repo}@{app}"
    proc, args, _ = run_step(tmp_path, baseline=app_ref, baselineModelImage=f"{registry}/{repo}-model:stable")
    assert proc.returncode == 0, proc.stderr
    assert _option(args, "--modelship-baseline") == app_ref
    assert _option(args, "--modelship-baseline-model-image") == f"{registry}/{repo}-model@{model}"
    # no model image promoted yet: the first split release skips the gate too
    proc, args, _ = run_step(tmp_path, baseline=app_ref, baselineModelImage=f"{registry}/{repo}-none:stable")
    assert proc.returncode == 0 and "the gate is skipped" in proc.stdout
    assert "--modelship-baseline" not in args


def test_a_registry_that_cannot_be_read_fails_the_step_instead_of_skipping_the_gate(tmp_path):
    proc, args, _ = run_step(tmp_path, baseline="127.0.0.1:9/nobody/app:stable")
    assert proc.returncode != 0
    assert args == []  # pytest never ran: nothing can be promoted after this step
    assert "modelship:" in proc.stderr and "the gate is skipped" not in proc.stdout
