"""Helpers for the build tests: app folders, hand-made wheels, `modelship build` lines, image layer/step inspection."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import time
import zipfile
from pathlib import Path

from .apps import app_source
from .cli import MODELSHIP


def make_app(
    root: Path,
    *,
    port: int = 8000,
    ready_path: str = "/health/ready",
    live_path: str = "/health/live",
    requirements: str | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """An app folder: the test app (support.apps) as app.py, on ``port``, its probes answered at these paths."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text(app_source(port, ready_path, live_path))
    if requirements is not None:
        (root / "requirements.txt").write_text(requirements)
    for name, text in (extra or {}).items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def make_wheel(dest: Path, name: str, version: str, code: str = "") -> Path:
    """A minimal pure-Python wheel ``name-version-py3-none-any.whl`` with module ``name``."""
    dest.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": (code or f"VERSION = {version!r}\n").encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: modelship-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, data in files.items():
            z.writestr(p, data)
    return path


def build_cmd(app: Path, model: Path, tag: str, base: str, *extra: str) -> list[str]:
    """`modelship build` of ``app`` (started with ``python app.py``) as a process of its own would run it."""
    cmd = [MODELSHIP, "build", str(app), "--model", str(model), "--tag", tag, "--base-image", base]
    return [*cmd, "--entrypoint", "python app.py", *extra]


def local_requirements(wheel_dir: Path, *reqs: str) -> str:
    """A requirements file resolving only from a local wheel folder (no index: hermetic tests)."""
    return "--no-index\n" + f"--find-links {wheel_dir}\n" + "".join(f"{r}\n" for r in reqs)


def steps(client, tag: str) -> list[dict]:
    """Build steps of an image after the base image, oldest first: {id, created_by, size}."""
    hist = list(reversed(client.api.history(tag)))
    start = next(i for i, h in enumerate(hist) if "PYTHONDONTWRITEBYTECODE" in h["CreatedBy"])
    return [{"id": h["Id"], "created_by": h["CreatedBy"], "size": h["Size"]} for h in hist[start:]]


def fs_steps(client, tag: str) -> dict[str, dict]:
    """The four filesystem steps of a generated image by role (setup, deps, model, code)."""
    s = steps(client, tag)
    setup = next(i for i, h in enumerate(s) if "/etc/passwd" in h["created_by"])
    return dict(zip(("setup", "deps", "model", "code"), s[setup : setup + 4], strict=True))


def layers(client, tag: str) -> list[str]:
    return client.images.get(tag).attrs["RootFS"]["Layers"]


def wait_healthy(container, timeout: float = 60) -> str:
    """Poll the container's health status until healthy/unhealthy or the deadline; returns the last status."""
    deadline = time.monotonic() + timeout
    status = "starting"
    while time.monotonic() < deadline:
        container.reload()
        status = container.attrs["State"].get("Health", {}).get("Status", "none")
        if status in ("healthy", "unhealthy") or container.status == "exited":
            return status
        time.sleep(0.3)
    return status


def git(repo: Path, *args: str) -> str:
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
