"""The real server: gunicorn started exactly as the image starts it ([tool.modelship] entrypoint),
answering the smoke cases of modelship-cases.yaml the way the pytest plugin checks them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import requests

EXAMPLE = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """(base url, log path) of gunicorn serving the model; stopped with SIGTERM, which must exit 0."""
    entrypoint = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["tool"]["modelship"]["entrypoint"]
    assert entrypoint[0] == "gunicorn"
    port = _free_port()
    env = {**os.environ, "MODELSHIP_MODEL_DIR": str(model_dir), "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "2"}
    # same command as the image, bound to loopback only (the config file binds 0.0.0.0 for containers)
    cmd = [sys.executable, "-m", "gunicorn", *entrypoint[1:], "-b", f"127.0.0.1:{port}"]
    log_path = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=EXAMPLE, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # workers load the model: slow on a loaded CI machine
        status = None
        while time.monotonic() < deadline and proc.poll() is None and status != 200:
            try:
                status = requests.get(f"{url}/health/ready", timeout=5).status_code
            except requests.RequestException:  # not listening yet, or a worker busy loading
                time.sleep(0.1)
        assert status == 200, log_path.read_text()
        yield url, log_path
    finally:
        proc.send_signal(signal.SIGTERM)  # what Kubernetes sends: graceful shutdown
        rc = proc.wait(timeout=30)
    assert rc == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()


def test_gunicorn_serves_predictions_and_logs(server):
    url, log_path = server
    r = requests.post(f"{url}/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}, timeout=5)
    assert r.status_code == 200
    assert r.json()["predictions"][0]["label"] == "setosa"
    # each worker loads and checks its own model before it accepts connections (the second may still be booting)
    deadline = time.monotonic() + 30
    while log_path.read_text().count("model ready: version=1.0.0") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    output = log_path.read_text()
    assert output.count("model ready: version=1.0.0") == 2, output
    assert '"POST /predict" 200' in output  # access log on stdout


def test_smoke_cases_pass_against_gunicorn(server):
    """The cases file the image is tested with, checked here without Docker (catches app/cases drift)."""
    from pytest_modelship.cases import load_file, match

    url, _ = server
    cases = load_file(EXAMPLE / "modelship-cases.yaml")
    assert len(cases) >= 5
    for case in cases:
        kwargs = {"json": case.json} if case.has_json else {"data": case.body}
        start = time.perf_counter()
        r = requests.request(case.method, url + case.path, headers=case.headers, timeout=10, **kwargs)
        problems = match(case.expect, r, (time.perf_counter() - start) * 1000)
        assert problems == [], f"{case.name}: {problems}"
