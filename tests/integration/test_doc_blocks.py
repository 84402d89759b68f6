"""Every ``bash`` block of README.md, docs/*.md and the example's README runs as written, on the testbed.

The placeholders (``myacr.azurecr.io``, ``az://myaccount``) become the testbed's registry and Azurite by the
table of ``support/docblocks.py``; a block marked ``docs-test: skip (REASON)`` is left out and listed by
``tests/unit/test_docs.py``. A command a doc shows that no longer works fails here, with the block's place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import docker.errors
import pytest

from support import ROOT
from support import docblocks as db
from support import testbed as tb

APP = ROOT / "examples" / "flask_app"
FILES = [p for p in db.doc_files() if any(b.skip is None for b in db.blocks(p))]


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """The example's model, trained once per session (the README's ``model/``)."""
    out = tmp_path_factory.mktemp("trained") / "model"
    subprocess.run([sys.executable, str(APP / "train.py"), "--out", str(out)], check=True, timeout=600)
    return out


@pytest.fixture(scope="session")
def user_cache(tmp_path_factory) -> Path:
    """One modelship cache for every doc, as a user's machine has one: the app's wheels are resolved once."""
    return tmp_path_factory.mktemp("docs-cache")


def _workspace(tmp_path: Path, doc: Path, trained: Path) -> Path:
    """Where the doc's blocks run (see support/docblocks.py)."""
    if doc.parent == APP:
        work = tmp_path / "repo" / "examples" / "flask_app"
        shutil.copytree(APP, work, ignore=shutil.ignore_patterns("build", "__pycache__", ".pytest_cache"))
        (tmp_path / "repo" / ".venv").symlink_to(Path(sys.executable).parent.parent)
        (tmp_path / "repo" / ".testbed").symlink_to(tb.env_file().parent)
        return work
    work = tmp_path / "work"
    shutil.copytree(APP, work / "app", ignore=shutil.ignore_patterns("build", "tests", "__pycache__", ".pytest*"))
    shutil.copytree(trained, work / "model")
    return work


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.azurite
@pytest.mark.parametrize("doc", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_the_docs_commands_run_as_written(
    doc, tmp_path, testbed, registry, base_image, blob_service, docker_client, trained, user_cache
):
    run = f"docs-{uuid.uuid4().hex[:8]}"
    container = blob_service.create_container(run).container_name
    work = _workspace(tmp_path, doc, trained)
    env = {
        **os.environ,
        **testbed,
        "AZURE_STORAGE_CONNECTION_STRING": testbed["MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING"],
        "MODELSHIP_BASE_IMAGE": base_image,
        "MODELSHIP_NO_PROGRESS": "1",
        "MODELSHIP_CACHE_DIR": str(user_cache),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    for var in ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_CURRENT_TEST"):
        env.pop(var, None)  # the blocks' own pytest runs are a user's, not a worker of this one
    # one shell per file, as a reader pastes the blocks into one terminal: variables carry over
    runnable = [b for b in db.blocks(doc) if b.skip is None]
    script = "".join(
        f"echo '>>> {b.where}' >&2\n{db.substitute(b.text, container=container, registry=registry, run=run)}\n"
        for b in runnable
    )
    try:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=1200
        )
        where = [line[4:] for line in proc.stderr.splitlines() if line.startswith(">>> ")]
        out = (proc.stdout + proc.stderr)[-4000:]
        assert proc.returncode == 0, f"{where[-1] if where else doc} failed (exit {proc.returncode}):\n{out}"
        assert where == [b.where for b in runnable]  # not vacuous: every runnable block ran
    finally:
        blob_service.delete_container(container)
        ours: tuple[str, ...] = (f"{registry}/{run}/",)  # what the blocks tag
        if doc.parent == APP:  # its own names: another doc's cleanup must not take them from under it
            ours += ("iris-service:", f"{registry}/iris-service:")
        # one listing call: images.list() inspects every image, racing other workers' removals (ImageNotFound)
        for image in docker_client.api.images():
            for tag in image.get("RepoTags") or []:
                if tag.startswith(ours):
                    with contextlib.suppress(docker.errors.APIError):
                        docker_client.images.remove(tag, force=True)
