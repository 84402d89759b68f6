"""The package's shape: every module importable as a module, the public functions lazily; the shared engine
helper's one-line reasons."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import types

import docker.errors
import pytest
import requests

import modelship
from modelship import _docker
from modelship.errors import DockerError


def _raise_from(outer: BaseException, inner: BaseException) -> None:
    try:
        raise inner
    except BaseException as e:
        raise outer from e


def test_short_reason_takes_the_innermost_cause_on_one_bounded_line():
    with pytest.raises(requests.ConnectionError) as exc:
        _raise_from(requests.ConnectionError("Connection aborted."), FileNotFoundError(2, "No such file\nor directory"))
    assert _docker.short_reason(exc.value) == "[Errno 2] No such file or directory"
    assert _docker.short_reason(RuntimeError("x" * 500)) == "x" * 157 + "..."
    assert _docker.short_reason(RuntimeError()) == "RuntimeError"


def test_short_reason_prefers_the_engines_words_and_hides_secrets():
    response = requests.Response()
    response.status_code = 500
    api = docker.errors.APIError("500 Server Error", response, explanation="pull failed: password=hunter2")
    with pytest.raises(docker.errors.APIError) as exc:
        _raise_from(api, requests.HTTPError("500 Server Error for http+docker://localhost/v1.43/build"))
    assert _docker.short_reason(exc.value) == "pull failed: password=***"


def test_connect_to_a_missing_engine_is_one_line(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")
    assert _docker.docker_host() == "unix:///nonexistent"
    with pytest.raises(DockerError) as exc:
        _docker.connect()
    assert str(exc.value) == (
        "Docker engine not reachable at unix:///nonexistent ([Errno 2] No such file or directory): start the Docker "
        "daemon (e.g. 'sudo systemctl start docker') or point DOCKER_HOST at a running engine"
    )
    with pytest.raises(DockerError, match="not reachable"), _docker.engine():
        pass
    monkeypatch.delenv("DOCKER_HOST")
    assert _docker.docker_host() == "unix:///var/run/docker.sock"


def test_every_module_imports_as_a_module():
    names = [m.name for m in pkgutil.walk_packages(modelship.__path__, "modelship.")]
    assert {"modelship._fetch", "modelship._resolve", "modelship.image._push", "modelship.oci.registry"} <= set(names)
    for name in names:
        assert isinstance(importlib.import_module(name), types.ModuleType), name
    # the public names stay the functions, also after their modules were imported
    for name in ("fetch", "lock", "resolve", "publish", "build", "push", "inspect"):
        assert isinstance(getattr(modelship, name), types.FunctionType), name
    assert set(modelship.__all__) <= set(dir(modelship))


def test_import_modelship_loads_no_store_or_build_machinery():
    code = "import json, sys, modelship; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    heavy = [m for m in loaded if m.startswith(("docker", "azure", "boto", "modelship.image", "modelship._"))]
    assert "modelship.manifest" in loaded and not heavy, heavy


def test_store_table_declares_each_scheme_once_and_imports_a_store_on_first_use(tmp_path):
    code = (
        "import json, sys\n"
        "from modelship import stores\n"
        "schemes = sorted(stores.registry.factories())\n"
        "before = [m for m in sys.modules if m.startswith(('modelship.stores.', 'azure', 'boto'))]\n"
        f"source = stores.open_source({str(tmp_path)!r})\n"
        "print(json.dumps([schemes, before, type(source).__name__]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    schemes, before, opened = json.loads(out)
    assert schemes == ["az", "file", "http", "https", "oci", "s3"]
    assert before == ["modelship.stores.base"] and opened == "LocalSource"
