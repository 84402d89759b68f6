"""The app image's config: what the engine path's Dockerfile says after its FROM, as an OCI/Docker config.

The same user (``APP_UID``, numeric), workdir (/app), environment (the base's, then ``PYTHONDONTWRITEBYTECODE``,
``PYTHONUNBUFFERED``, ``VIRTUAL_ENV``, ``PATH`` with /opt/venv/bin first, ``MODELSHIP_MODEL_DIR``, ``HOME``),
command, exposed port, Docker healthcheck and labels (the base's, then modelship's). Times are the build's
``created`` (``SOURCE_DATE_EPOCH``, else the commit time, else the epoch), never "now"; no host path or name goes
in: the same inputs give the same bytes.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from ..conventions import EPOCH, MODEL_DIR, MODEL_DIR_ENV, rfc3339, source_date_epoch
from ..image.dockerfile import APP_DIR, APP_HOME, APP_UID, healthcheck_command
from .deps import VENV

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_UNITS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
HEALTHCHECK_TIMEOUT, HEALTHCHECK_START, HEALTHCHECK_RETRIES = "5s", "10s", 3  # as Dockerfile.template says


def build_time(app_dir: Path) -> int:
    """Seconds: ``SOURCE_DATE_EPOCH``, else the time of the commit APP_DIR is checked out at, else 0."""
    epoch = source_date_epoch()
    if epoch is not None:
        return epoch
    try:
        proc = subprocess.run(
            ["git", "-C", str(app_dir), "log", "-1", "--format=%ct"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    out = proc.stdout.strip()
    return int(out) if proc.returncode == 0 and out.isdigit() else 0


def created(seconds: int) -> str:
    return rfc3339(seconds) if seconds else EPOCH


def nanoseconds(duration: str) -> int:
    """``10s``, ``500ms``, ``1m`` as Docker's healthcheck fields want them."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    if not m:
        raise ValueError(f"not a duration: {duration!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def environment(base_env: list[str]) -> list[str]:
    """The base's environment with the app's variables set (each once, in the base's order, then the new ones)."""
    env = dict(str(e).split("=", 1) for e in base_env if "=" in str(e))
    ours = {
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "VIRTUAL_ENV": VENV,
        "PATH": f"{VENV}/bin:{env.get('PATH') or DEFAULT_PATH}",
        MODEL_DIR_ENV: MODEL_DIR,
        "HOME": APP_HOME,
    }
    merged = {**env, **ours}
    return [f"{k}={v}" for k, v in merged.items()]


def image_config(
    base: dict[str, Any],
    *,
    command: tuple[str, ...] | list[str],
    port: int,
    ready_path: str,
    healthcheck_interval: str,
    labels: dict[str, str],
    diff_ids: list[str],
    history: list[dict[str, Any]],
    when: str,
) -> dict[str, Any]:
    """The new config over the base's: ``diff_ids`` and ``history`` are the new layers' (appended)."""
    cfg = dict(base.get("config") or {})
    cfg.update(
        {
            "User": f"{APP_UID}:{APP_UID}",
            "WorkingDir": APP_DIR,
            "Env": environment(list(cfg.get("Env") or [])),
            "Cmd": list(command),
            "ExposedPorts": {**(cfg.get("ExposedPorts") or {}), f"{int(port)}/tcp": {}},
            "Healthcheck": {
                "Test": ["CMD", *healthcheck_command(port, ready_path)],
                "Interval": nanoseconds(healthcheck_interval),
                "Timeout": nanoseconds(HEALTHCHECK_TIMEOUT),
                "StartPeriod": nanoseconds(HEALTHCHECK_START),
                "Retries": HEALTHCHECK_RETRIES,
            },
            "Labels": {**(cfg.get("Labels") or {}), **labels},
        }
    )
    if not cfg.get("Entrypoint"):
        cfg.pop("Entrypoint", None)
    out: dict[str, Any] = {
        "architecture": base.get("architecture") or "amd64",
        "os": base.get("os") or "linux",
        "created": when,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [*((base.get("rootfs") or {}).get("diff_ids") or []), *diff_ids]},
        "history": [*(base.get("history") or []), *history],
    }
    if base.get("variant"):
        out["variant"] = base["variant"]
    return out


__all__ = ["build_time", "created", "environment", "image_config", "nanoseconds"]
