"""modelship._docker, the shared Docker engine helper: where the engine is, and its failures as one line."""

from __future__ import annotations

import docker.errors
import pytest
import requests

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
