"""The README's `make demo` story, end to end on the real testbed: the thin path every other test deepens.

Azurite (model store) → lock + fetch → build the app-only image on the local base image → push it to the
local registry → assemble the model onto it (no engine) → pytest --modelship-image REF@sha256 → promote →
a new model version assembled onto the same app image (only the model's bytes go up) → a run with nothing
new (0 bytes, same digest) → k8s manifests pinned by the promoted digest.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import docker.errors
import pytest
import requests

import modelship
from support import ROOT
from support.engine import remove_built


@pytest.mark.slow
def test_demo_story_end_to_end(tmp_path, testbed, registry, docker_client, base_image):
    env = {
        **os.environ,
        **testbed,
        "MODELSHIP_DEMO_DIR": str(tmp_path / "demo"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("AZURE_STORAGE_CONNECTION_STRING", None)  # the demo sets it from the testbed, like a pipeline secret
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    summary = out[out.index("== summary") :]
    digests = dict(re.findall(r"(v[12]|app) image\s+\S+@(sha256:[0-9a-f]{64})", summary))
    assert set(digests) == {"app", "v1", "v2"} and len(set(digests.values())) == 3
    assert "(model 1.0.0)" in summary and "(model 1.1.0)" in summary
    # v1 is the first release on this registry (or gated against an earlier run's); v2 is gated against v1
    assert re.search(r"smoke tests\s+\d+ passed(, 1 skipped)? in [\d.]+s / \d+ passed in", summary), summary
    gate = re.search(r"gate \(v2 vs v1\)\s+passed: agreement: ([\d.]+)% \((\d+) of (\d+) probes match\)", summary)
    assert gate and int(gate.group(3)) >= 200 and float(gate.group(1)) >= 95.0, summary
    assert "failed" not in summary
    # the model-only update sent the new model's bytes, not the app's; the run with nothing new sent none
    update = re.search(r"model-only update\s+(\d+) bytes uploaded in ([\d.]+) s \(model 1\.1\.0\)", summary)
    model_bytes = sum(p.stat().st_size for p in (tmp_path / "demo" / "model").rglob("*") if p.is_file())
    assert update and 0 < int(update.group(1)) < model_bytes + 100_000, summary
    assert re.search(r"no-change run\s+0 bytes, same digest", summary)
    assert f"promoted           {registry}/modelship-demo/iris:stable -> {digests['v2']}" in summary

    # The registry really holds the images under those tags and digests.
    for tag, digest in [
        ("app", digests["app"]),
        ("v1", digests["v1"]),
        ("v2", digests["v2"]),
        ("stable", digests["v2"]),
    ]:
        resp = requests.head(
            f"http://{registry}/v2/modelship-demo/iris/manifests/{tag}",
            headers={
                "Accept": "application/vnd.oci.image.manifest.v1+json, "
                "application/vnd.docker.distribution.manifest.v2+json"
            },
            timeout=10,
        )
        assert resp.status_code == 200 and resp.headers["Docker-Content-Digest"] == digest, tag

    # The image assembled second carries the second model, on the app image pushed once.
    info = modelship.inspect(f"{registry}/modelship-demo/iris@{digests['v2']}")
    assert info.model["version"] == "1.1.0" and info.ref == f"{registry}/modelship-demo/iris@{digests['v2']}"
    assert info.labels["io.modelship.model.uri"].startswith("az://devstoreaccount1/demo-")

    # Deploy manifests are pinned to the promoted digest and nothing else.
    deployment = (tmp_path / "demo" / "k8s" / "deployment.yaml").read_text()
    assert f"image: {registry}/modelship-demo/iris@{digests['v2']}" in deployment

    # Nothing of the credential reached the output (the Azurite key stands in for a real secret).
    key = testbed["MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING"].split("AccountKey=")[1].split(";")[0]
    assert key not in out
    for image in [
        f"{registry}/modelship-demo/iris:app",
        *(f"{registry}/modelship-demo/iris@{d}" for d in digests.values()),
    ]:
        with contextlib.suppress(docker.errors.ImageNotFound):
            remove_built(docker_client, image)
