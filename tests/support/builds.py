"""Helpers for the build tests: tiny apps, models, hand-made wheels, image layer/step inspection."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from modelship.manifest import FileEntry, Manifest

# A stdlib-only app: /health/ready answers 200 once the model manifest is readable; /model returns it.
APP_PY = """\
import http.server, json, os

MODEL_DIR = os.environ["MODELSHIP_MODEL_DIR"]
PORT = int(os.environ.get("PORT", "{port}"))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(os.path.join(MODEL_DIR, "modelship.json")) as f:
            manifest = json.load(f)
        if self.path == "/health/ready":
            body = b"ok"
        elif self.path == "/model":
            body = json.dumps(manifest).encode()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)


http.server.HTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
"""


def make_app(
    root: Path, *, port: int = 8000, requirements: str | None = None, extra: dict[str, str] | None = None
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text(APP_PY.replace("{port}", str(port)))
    if requirements is not None:
        (root / "requirements.txt").write_text(requirements)
    for name, text in (extra or {}).items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def make_model(root: Path, files: dict[str, bytes], *, uri: str | None = None, version: str | None = None) -> Path:
    """A model folder; with ``uri``, also a modelship.json as `modelship fetch` writes it (with fetched_at)."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        entries.append(FileEntry(name, len(data), hashlib.sha256(data).hexdigest()))
    if uri is not None:
        Manifest.create(uri, version, entries, stamp=True).write(root / "modelship.json")
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
    modelship = str(Path(sys.executable).with_name("modelship"))
    cmd = [modelship, "build", str(app), "--model", str(model), "--tag", tag, "--base-image", base]
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
