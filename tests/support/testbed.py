"""The testbed (``scripts/testbed.sh up``): the one reader of the env file it writes, and where its tools are."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from . import ROOT

SETUP_HINT = "run 'scripts/testbed.sh up' (or 'make test', which does it) first"
# testcontainers reads these once, when it is imported: they must be in the environment before that
TESTCONTAINERS_KEYS = ("TESTCONTAINERS_RYUK_DISABLED", "TESTCONTAINERS_HOST_OVERRIDE")
# set in the environment, these win over the env file (a base image of one's own)
OVERRIDES = ("MODELSHIP_BASE_IMAGE",)


class NotUp(pytest.fail.Exception):
    """A testbed service or setting is missing. The message names it and says how to start the testbed; raised in
    a test or fixture, it fails it with that one line and no traceback, as ``pytest.fail(..., pytrace=False)``."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg, pytrace=False)


def env_file() -> Path:
    """``$MODELSHIP_TESTBED_DIR/env`` (default: .testbed/env in the repository)."""
    return Path(os.environ.get("MODELSHIP_TESTBED_DIR") or ROOT / ".testbed") / "env"


def read_env(path: Path | None = None) -> dict[str, str]:
    """The ``KEY='value'`` lines of the env file (shell-quoted, so that ``set -a; . FILE`` works); {} if absent."""
    path = path or env_file()
    if not path.is_file():
        return {}
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            env[key.strip()] = " ".join(shlex.split(value))
    return env


def need(key: str, env: dict[str, str] | None = None) -> str:
    """One value of the env file; NotUp naming the file and the fix when it is not there."""
    env = read_env() if env is None else env
    if key not in env:
        raise NotUp(f"testbed not up ({env_file()} has no {key}): {SETUP_HINT}")
    return env[key]


def with_overrides(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the OVERRIDES that are set in the environment."""
    return {**env, **{key: os.environ[key] for key in OVERRIDES if os.environ.get(key)}}


def base_image(env: dict[str, str] | None = None) -> str:
    """The local base image: $MODELSHIP_BASE_IMAGE, else the one the testbed built."""
    return need("MODELSHIP_BASE_IMAGE", with_overrides(read_env() if env is None else env))


def export_testcontainers_settings(env: dict[str, str] | None = None) -> None:
    """How containers are reached here (no Ryuk, loopback), unless the environment says otherwise already."""
    env = read_env() if env is None else env
    for key in TESTCONTAINERS_KEYS:
        if key in env:
            os.environ.setdefault(key, env[key])


def for_script(*keys: str) -> dict[str, str]:
    """For benchmarks: the env file (with the OVERRIDES), or exit with one line when it lacks one of ``keys``."""
    env = with_overrides(read_env())
    try:
        for key in keys:
            need(key, env)
    except NotUp as e:
        sys.exit(f"{Path(sys.argv[0]).name}: {e.msg}")
    return env


def tools_dir() -> Path:
    """Where the testbed installs what does not come from apt (Azurite from npm)."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelship" / "testbed"
    return Path(os.environ.get("MODELSHIP_TESTBED_TOOLS") or default)


def azurite_binary() -> str:
    """The testbed's azurite-blob, else one on PATH."""
    candidate = tools_dir() / "npm" / "node_modules" / ".bin" / "azurite-blob"
    found = str(candidate) if candidate.is_file() else shutil.which("azurite-blob")
    if found is None:
        raise NotUp(f"azurite-blob not found (the testbed installs it from npm): {SETUP_HINT}")
    return found


def registry_binary() -> str:
    """Debian's docker-registry (CNCF distribution), which the testbed installs."""
    found = shutil.which("docker-registry")
    if found is None:
        raise NotUp(f"docker-registry not installed: {SETUP_HINT}")
    return found


def moto_binary() -> str:
    """moto's server, installed next to this Python by the dev extra."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.is_file():
        raise NotUp(f"{exe} missing: install the dev extra (pip install -e '.[dev]', which 'make test' does)")
    return str(exe)
