"""The README's `make demo` story, end to end on the real testbed: the thin path every other test deepens.

Azurite (model store) → lock + fetch → build on the local base image → pytest --modelship-image → push to the
local registry → k8s manifests pinned by digest → a new model version → rebuild reusing the dependency layers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import requests

import modelship
from support import ROOT


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
    digests = dict(re.findall(r"(v[12]) image\s+\S+@(sha256:[0-9a-f]{64})", summary))
    assert set(digests) == {"v1", "v2"} and digests["v1"] != digests["v2"]
    assert "(model 1.0.0)" in summary and "(model 1.1.0)" in summary
    assert re.search(r"smoke tests\s+\d+ passed in [\d.]+s / \d+ passed", summary)
    assert "failed" not in summary

    # The registry really holds both pushes under those digests.
    for tag, digest in digests.items():
        resp = requests.head(
            f"http://{registry}/v2/modelship-demo/iris/manifests/{tag}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            timeout=10,
        )
        assert resp.status_code == 200 and resp.headers["Docker-Content-Digest"] == digest

    # The image pushed second carries the second model, read back from the registry by digest.
    info = modelship.inspect(f"{registry}/modelship-demo/iris@{digests['v2']}")
    assert info["model"]["version"] == "1.1.0"
    assert info["labels"]["io.modelship.model.uri"].startswith("az://devstoreaccount1/demo-")

    # Deploy manifests are pinned to the first image's digest and nothing else.
    deployment = (tmp_path / "demo" / "k8s" / "deployment.yaml").read_text()
    assert f"image: {registry}/modelship-demo/iris@{digests['v1']}" in deployment

    # Nothing of the credential reached the output (the Azurite key stands in for a real secret).
    key = testbed["MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING"].split("AccountKey=")[1].split(";")[0]
    assert key not in out
    for image in (f"{registry}/modelship-demo/iris:v1", f"{registry}/modelship-demo/iris:v2"):
        docker_client.images.remove(image, force=True)
