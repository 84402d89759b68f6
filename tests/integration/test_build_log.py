"""The build log a user reads (quiet=False, as the CLI builds): each engine build headed, no huge echoed line."""

from __future__ import annotations

import os
import uuid

import pytest

from modelship.image import build
from support.builds import make_app
from support.models import make_model


@pytest.mark.docker
def test_the_two_engine_builds_are_told_apart_and_the_label_step_is_short(
    tmp_path, base_image, docker_client, image_tags, capfd
):
    app = make_app(tmp_path / "app")
    # many files: a manifest label of several kB, which the LABEL step used to echo in full
    files = {f"shard-{i:03d}.bin": os.urandom(64) for i in range(60)}
    model = make_model(tmp_path / "model", files, uri="az://acct/models/log", version="1.0")
    tag = f"modelship-test/log-{uuid.uuid4().hex[:10]}:1"
    image_tags.append(tag)
    img = build(app, model, tag, base_image=base_image, entrypoint="python app.py", quiet=False)
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert len(img.labels["io.modelship.model.manifest"]) > 4000
    firsts = [i for i, line in enumerate(lines) if line.startswith("Step 1/")]
    titles = [i for i, line in enumerate(lines) if line.startswith("modelship: build ")]
    assert len(firsts) == len(titles) == 2, err[-3000:]
    assert titles[0] < firsts[0] < titles[1] < firsts[1]  # each "Step 1/N" under the build it belongs to
    assert "stage model" in lines[titles[0]] and "stage app" in lines[titles[1]]
    (label,) = [line for line in lines if line.startswith("Step ") and " : LABEL " in line]
    assert len(label) < 300 and label.endswith("characters)"), label
    assert max(len(line) for line in lines) < 300
