"""Fixtures: a model trained here with train.py's own functions, and apps serving it."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent
if str(EXAMPLE) not in sys.path:  # when run from another rootdir (e.g. the repository's test suite)
    sys.path.insert(0, str(EXAMPLE))

import train  # noqa: E402
from iris_app import create_app  # noqa: E402

MODEL_VERSION = "1.0.0"


def write_manifest(model_dir: Path, version: str) -> None:
    """The modelship.json `modelship fetch` would write (the app serves it on /metadata)."""
    from modelship.manifest import MANIFEST_NAME, FileEntry, Manifest

    entries = [
        FileEntry(p.name, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(model_dir.iterdir())
        if p.name != MANIFEST_NAME
    ]
    Manifest.create("file:///models/iris", version, entries).write(model_dir / MANIFEST_NAME)


@pytest.fixture(scope="session")
def trained() -> train.Trained:
    return train.train()


@pytest.fixture(scope="session")
def bare_model_dir(tmp_path_factory, trained) -> Path:
    """What `python train.py --out DIR` writes: no modelship.json."""
    return train.export(trained, tmp_path_factory.mktemp("bare-model"))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, trained) -> Path:
    """A fetched model: the training output plus modelship.json."""
    out = train.export(trained, tmp_path_factory.mktemp("model"))
    write_manifest(out, MODEL_VERSION)
    return out


@pytest.fixture
def app(model_dir):
    return create_app({"MODEL_DIR": str(model_dir), "MODEL_LOAD": "eager"})


@pytest.fixture
def client(app):
    return app.test_client()
