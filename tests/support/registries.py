"""Registries of a test's own: the testbed's docker-registry binary on a free port, with the auth a test needs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import testbed
from .ports import free_port
from .servers import answers, running


@contextmanager
def registry(root: Path, auth: str) -> Iterator[str]:
    """A registry storing under ``root`` with ``auth`` (the config's auth mapping, YAML flow style); yields
    host:port once /v2/ asks for credentials."""
    binary = testbed.registry_binary()
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (root / "config.yml").write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
        f"auth: {auth}\n"
    )
    ready = answers(f"http://127.0.0.1:{port}/v2/", status=401)
    with running([binary, "serve", str(root / "config.yml")], ready=ready, what="registry", log=root / "registry.log"):
        yield f"127.0.0.1:{port}"


@contextmanager
def htpasswd_registry(root: Path, user: str, password: str) -> Iterator[str]:
    """A registry with Basic auth for ``user`` / ``password``; yields host:port."""
    import bcrypt

    root.mkdir(parents=True, exist_ok=True)
    (root / "htpasswd").write_text(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode()}\n")
    with registry(root, f"{{htpasswd: {{realm: modelship-test, path: {root / 'htpasswd'}}}}}") as addr:
        yield addr
