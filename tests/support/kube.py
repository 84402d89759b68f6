"""Rendered Kubernetes manifests: read them, validate them offline against the shipped schemas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate.utils as kv
import yaml

KUBE_VALIDATE = Path(sys.executable).with_name("kubernetes-validate")
# the oldest Kubernetes we claim (preStop sleep is on by default from 1.30) and the newest schema shipped
KUBE_VERSIONS = ["1.30.0", kv.latest_version()]


def by_kind(paths: list[Path]) -> dict[str, dict]:
    """The documents of the manifest files by kind."""
    found = [d for p in paths for d in yaml.safe_load_all(p.read_text()) if d]
    return {d["kind"]: d for d in found}


def app_container(paths: list[Path]) -> dict:
    """The Deployment's (first) container."""
    return by_kind(paths)["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def validate(paths: list[Path], version: str = KUBE_VERSIONS[-1]) -> subprocess.CompletedProcess:
    """kubernetes-validate --strict of ``paths`` for Kubernetes ``version``."""
    cmd = [str(KUBE_VALIDATE), "--strict", "-k", version, *map(str, paths)]
    return subprocess.run(cmd, capture_output=True, text=True)
