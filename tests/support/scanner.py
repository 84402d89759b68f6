"""Helpers of the hardening tests (secrets, cancelled jobs, container restarts): labelled images, engine
state snapshots, a secret scanner, an htpasswd registry, and the counts file for docs/reliability.md."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

RUN_LABEL = "io.modelship.test.run"


# ---------------------------------------------------------------------------------------- counts file


def write_counts(section: str, rows: list[dict], basetemp: Path) -> Path:
    """``{"section": ..., "rows": [{"what", "scanned", "found"}, ...]}`` for docs/reliability.md.

    Written to the directory $MODELSHIP_RELIABILITY_OUT when set, else under the pytest basetemp.
    """
    out_dir = Path(os.environ.get("MODELSHIP_RELIABILITY_OUT") or basetemp / "reliability")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{section}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"section": section, "rows": rows}, indent=2) + "\n")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------- labelled images


def labelled_base(client, base_image: str) -> tuple[str, str]:
    """A base image of our own: ``base_image`` + one LABEL. Every image built on it (each build step, each
    stage) inherits the label, so this test's images are told apart from those of tests running in parallel."""
    run = uuid.uuid4().hex[:12]
    text = f"FROM {base_image}\nLABEL {RUN_LABEL}={run}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    tag = f"modelship-test/hardening-base:{run}"
    client.images.build(fileobj=io.BytesIO(buf.getvalue()), custom_context=True, tag=tag, rm=True, forcerm=True)
    return tag, f"{RUN_LABEL}={run}"


@dataclass
class EngineState:
    """The images carrying a run label, and the containers on them."""

    images: list[dict] = field(default_factory=list)
    dangling: list[str] = field(default_factory=list)  # untagged leaves: what `docker images` shows as <none>
    containers: list[str] = field(default_factory=list)

    @property
    def tags(self) -> set[str]:
        return {t for i in self.images for t in (i.get("RepoTags") or []) if t != "<none>:<none>"}


def engine_state(client, label: str) -> EngineState:
    images = client.api.images(all=True, filters={"label": label})
    ids = {i["Id"] for i in images}
    dangling = [i["Id"] for i in client.api.images(filters={"label": label, "dangling": True})]
    on_ours = [c for c in client.api.containers(all=True) if c["ImageID"] in ids]
    containers = [f"{c['Id'][:12]} {c['State']} {c['Command'][:60]}" for c in on_ours]
    return EngineState(images, dangling, containers)


def remove_labelled(client, label: str) -> None:
    """Remove every container and image carrying ``label`` (tags first, the labelled base last)."""
    import docker.errors

    state = engine_state(client, label)
    ids = {i["Id"] for i in state.images}
    for c in client.api.containers(all=True):
        if c["ImageID"] in ids:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(c["Id"], force=True)
    for tag in sorted(state.tags, key=lambda t: ("hardening-base" in t, t)):
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_image(tag, force=True)
    for img in client.api.images(all=True, filters={"label": label}):  # anything left untagged
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_image(img["Id"], force=True)


# ------------------------------------------------------------------------------------- secret scanner

WINDOW = 16  # any run of this many characters of a secret counts as a leak


@dataclass
class Scanner:
    """Looks for secrets -- whole, or any ``WINDOW``-character piece -- in every form they could be written:
    raw, URL-quoted, JSON-escaped and base64 (at each of the three byte alignments)."""

    secrets: dict[str, str]
    rows: dict[str, dict] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.needles: dict[bytes, str] = {}
        for name, value in self.secrets.items():
            for form in self._forms(value):
                data = form.encode()
                for i in range(max(1, len(data) - WINDOW + 1)):
                    self.needles.setdefault(data[i : i + WINDOW], name)

    @staticmethod
    def _forms(value: str) -> set[str]:
        forms = {value, quote(value, safe=""), quote(value, safe="/"), json.dumps(value)[1:-1]}
        for pad in range(3):
            b64 = base64.b64encode(b"\0" * pad + value.encode()).decode()
            start = 4 if pad else 0  # the first quad mixes in the padding bytes
            forms.add(b64[start:].rstrip("="))
        return {f for f in forms if len(f) >= 8}

    def _row(self, what: str) -> dict:
        return self.rows.setdefault(what, {"what": what, "items": 0, "scanned": 0, "found": 0})

    def text(self, what: str, text: str | bytes, where: str = "") -> None:
        data = text.encode("utf-8", "replace") if isinstance(text, str) else text
        row = self._row(what)
        row["items"] += 1
        row["scanned"] += len(data)
        for needle, name in self.needles.items():
            if needle in data:
                row["found"] += 1
                self.hits.append(f"{name} in {what} {where}: ...{_context(data, needle)}...")
                break

    def file(self, what: str, path: Path) -> None:
        """A large file, searched by grep's multi-pattern matcher (Aho-Corasick) in one pass."""
        row = self._row(what)
        row["items"] += 1
        row["scanned"] += path.stat().st_size
        patterns = path.with_name(f".needles-{uuid.uuid4().hex[:8]}")
        patterns.write_bytes(b"\n".join(self.needles))
        try:
            proc = subprocess.run(
                ["grep", "-a", "-F", "-o", "-b", "-m", "5", "-f", str(patterns), str(path)],
                capture_output=True,
                timeout=600,
            )
        finally:
            patterns.unlink()
        assert proc.returncode in (0, 1), proc.stderr.decode()[-500:]
        if proc.returncode == 0:
            row["found"] += 1
            for line in proc.stdout.splitlines()[:5]:
                offset, _, needle = line.partition(b":")
                self.hits.append(f"{self.needles.get(needle, '?')} in {what} {path.name} at byte {offset.decode()}")

    def counts(self) -> list[dict]:
        return [
            {"what": f"{r['what']} ({r['items']} items, bytes)", "scanned": r["scanned"], "found": r["found"]}
            for r in self.rows.values()
        ]


def _context(data: bytes, needle: bytes) -> str:
    i = data.find(needle)
    return data[max(0, i - 40) : i + len(needle) + 20].decode("utf-8", "replace")


# ------------------------------------------------------------------------------- htpasswd registry


@contextlib.contextmanager
def htpasswd_registry(root: Path, user: str, password: str):
    """The testbed's docker-registry binary on a free port, with Basic auth; yields host:port."""
    import bcrypt

    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry not installed: run 'scripts/testbed.sh up' first", pytrace=False)
    root.mkdir(parents=True, exist_ok=True)
    (root / "htpasswd").write_text(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode()}\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (root / "config.yml").write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
        f"auth: {{htpasswd: {{realm: modelship-test, path: {root / 'htpasswd'}}}}}\n"
    )
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 401:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"registry did not start: {(root / 'registry.log').read_text()[-500:]}", pytrace=False)
                time.sleep(0.2)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
