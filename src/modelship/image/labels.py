"""Image labels: OCI provenance (from git when available), the model it carries (io.modelship.model.*) and
what a deployment needs to know about the app (io.modelship.app.*: port, readiness and liveness paths).
The keys themselves are spelled in ``modelship.conventions``."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ..conventions import APP_LABELS, MODEL_SIGNER_LABEL, OCI, OCI_CREATED, OCI_TITLE, created, model_labels
from ..manifest import Manifest


def _git(app_dir: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(app_dir), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None  # no git installed: no git provenance, not an error
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and out else None


def clean_remote(url: str) -> str:
    """A git remote URL without any credentials (``https://user:token@host/x`` -> ``https://host/x``)."""
    if "://" not in url:
        return url  # scp-like git@host:path: "git" is an SSH user name, not a secret
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    # a token may be the whole userinfo (https://TOKEN@github.com/...), so drop all of it, and any query
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def git_provenance(app_dir: Path) -> dict[str, str]:
    """revision, source and version of the git checkout holding APP_DIR ({} outside git)."""
    revision = _git(app_dir, "rev-parse", "HEAD")
    if revision is None:
        return {}
    out = {"revision": revision}
    remote = _git(app_dir, "config", "--get", "remote.origin.url")
    if remote is None:
        first = (_git(app_dir, "remote") or "").split()
        remote = _git(app_dir, "config", "--get", f"remote.{first[0]}.url") if first else None
    if remote:
        out["source"] = clean_remote(remote)
    version = _git(app_dir, "describe", "--tags", "--always", "--dirty")
    if version:
        out["version"] = version
    return out


def app_labels(port: int, ready_path: str, live_path: str) -> dict[str, str]:
    """Where the app listens and answers its probes: what `modelship deploy render` puts in the manifests."""
    values = {"port": str(port), "ready_path": ready_path, "live_path": live_path}
    return {label: values[key] for label, key in APP_LABELS.items()}


def app_settings(labels: dict[str, str]) -> dict[str, int | str | None]:
    """The app block of an image's labels: port (int, None if absent or not a number), ready_path, live_path."""
    out: dict[str, int | str | None] = {key: labels.get(label) or None for label, key in APP_LABELS.items()}
    port = out["port"]
    out["port"] = int(port) if isinstance(port, str) and port.isdigit() else None
    return out


def image_labels(
    app_dir: Path,
    manifest: Manifest | None,
    project: dict[str, str],
    app: dict[str, str] | None = None,
    signer: str | None = None,
) -> dict[str, str]:
    """All labels of a built image: OCI provenance, the model it carries (none for an app-only image), ``app``
    (see app_labels) and ``signer``, the key its model.sig was verified against (none: not verified)."""
    git = git_provenance(app_dir)
    labels = {OCI_CREATED: created(), OCI_TITLE: project.get("name") or app_dir.name}
    version = git.get("version") or project.get("version")
    if version:
        labels[f"{OCI}.version"] = version
    for key in ("revision", "source"):
        if key in git:
            labels[f"{OCI}.{key}"] = git[key]
    if manifest is not None:
        labels.update(model_labels(manifest))
    if signer is not None:
        labels[MODEL_SIGNER_LABEL] = signer
    labels.update(app or {})
    return labels
