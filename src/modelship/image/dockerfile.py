"""The generated Dockerfile: one readable template (Dockerfile.template) rendered with string.Template."""

from __future__ import annotations

import json
import re
from importlib import resources
from string import Template

from ..conventions import MODEL_DIR
from ..errors import UsageError
from .context import APP_ROOTFS, MODEL_ROOTFS, WHEELS_PATH

APP_DIR = "/app"
APP_UID = 10001
APP_HOME = "/home/app"  # the app user's writable home ($HOME)


def template_text() -> str:
    return resources.files(__package__).joinpath("Dockerfile.template").read_text()


def healthcheck_command(port: int, ready_path: str) -> list[str]:
    """Exec-form HEALTHCHECK: the image's own Python (curl is not in slim bases); exit 1 on any failure."""
    url = f"http://127.0.0.1:{port}{ready_path}"
    code = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=4)"
    return ["/opt/venv/bin/python", "-c", code]


def quote(value: str) -> str:
    """A Dockerfile double-quoted word: no variable expansion, no escapes left for the parser to eat."""
    value = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return '"' + " ".join(value.splitlines()) + '"'


# The image's layout (conventions): the same in every generated Dockerfile
_LAYOUT = {
    "model_dir": MODEL_DIR,
    "app_dir": APP_DIR,
    "model_rootfs": MODEL_ROOTFS,
    "app_rootfs": APP_ROOTFS,
    "wheels": WHEELS_PATH,
    "uid": APP_UID,
    "home": APP_HOME,
}


def render(
    *,
    base_image: str,
    python: str,
    cmd: tuple[str, ...] | list[str],
    port: int,
    ready_path: str,
    labels: dict[str, str],
    healthcheck_interval: str = "10s",
) -> str:
    """The Dockerfile for a generated build; every value is validated or JSON-quoted before it goes in."""
    if not labels:
        raise ValueError("the image needs its provenance labels")
    if not base_image or any(c.isspace() for c in base_image):
        raise UsageError(f"invalid base image name {base_image!r}")
    return Template(template_text()).substitute(
        _LAYOUT,
        base_image=base_image,
        python=python,
        port=int(port),
        healthcheck_interval=healthcheck_interval,
        # exec form is JSON: json.dumps quotes anything the user passed; no shell sees it
        healthcheck=json.dumps(healthcheck_command(port, ready_path)),
        cmd=json.dumps(list(cmd)),
        labels=" \\\n      ".join(f"{quote(k)}={quote(v)}" for k, v in sorted(labels.items())),
    )


APP_STAGE_LINE = "FROM model AS app"


def split_stages(text: str, model_image: str) -> tuple[str, str]:
    """(Dockerfile up to stage ``model``, stage ``app`` re-based ``FROM model_image``) of a rendered template."""
    head, sep, tail = text.partition(f"\n{APP_STAGE_LINE}\n")
    if not sep:
        raise AssertionError(f"Dockerfile.template lost its '{APP_STAGE_LINE}' line")
    return head + "\n", f"FROM {model_image}\n{tail}"


def base_from_dockerfile(text: str) -> str | None:
    """The base image of the final stage of a user's Dockerfile, following stage aliases; None if it uses ARGs."""
    stages: dict[str, str] = {}
    image = None
    for line in text.splitlines():
        m = re.match(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            image = stages.get(m.group(1).lower(), m.group(1))
            if m.group(2):
                stages[m.group(2).lower()] = image
    if image is None or "$" in image:
        return None
    return image
