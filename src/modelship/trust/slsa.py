"""The SLSA v1 provenance predicate (``https://slsa.dev/provenance/v1``) of an image modelship wrote.

:func:`provenance` is pure: what was asked (``externalParameters``), what was used (``resolvedDependencies``:
the app image, the model, the source commit) and the run (``runDetails``). :func:`source_from_env` and
:func:`invocation_id` read Azure Pipelines' variables (or ``git``) for the caller. No secret goes in: every URI
loses its userinfo, query and fragment (:func:`public_uri`); registry credentials are never parameters.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

BUILD_TYPE = "https://modelship.dev/build-types/{verb}/v1"  # what externalParameters mean, per verb
BUILDER_ID = "https://modelship.dev/builder/cli"


@dataclass(frozen=True)
class ModelInput:
    """The model an image carries: its URI (as published), version, tree digest and verified signer."""

    uri: str
    version: str | None
    digest: str  # the model manifest's tree digest, sha256:<hex>
    signer: str | None = None  # sha256:<hex> fingerprint of the key its model.sig verified against


@dataclass(frozen=True)
class Source:
    """The source the build ran from: repository URI (no credentials), commit, and ref when known."""

    uri: str
    commit: str
    ref: str | None = None  # refs/heads/main


def public_uri(uri: str) -> str:
    """``uri`` without userinfo, query or fragment (a SAS, a token); ``git@host:path`` as ``ssh://host/path``."""
    if "://" not in uri:
        user, at, rest = uri.partition("@")
        if at and ":" in rest and "/" not in user:  # scp-like git remote
            host, _, path = rest.partition(":")
            return f"ssh://{host}/{path.lstrip('/')}"
        return uri
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _hex(digest: str) -> dict[str, str]:
    algorithm, _, value = digest.partition(":")
    return {algorithm: value} if value else {}


def image_descriptor(ref: str, name: str) -> dict[str, Any]:
    """A resource descriptor of the image ``REGISTRY/REPO@sha256:…``: a ``pkg:docker`` purl and its digest."""
    where, _, digest = ref.partition("@")
    registry, _, repository = where.partition("/")
    uri = f"pkg:docker/{quote(repository, safe='/')}@{quote(digest, safe='')}?repository_url={quote(registry)}"
    return {"name": name, "uri": uri, "digest": _hex(digest)}


def model_descriptor(model: ModelInput) -> dict[str, Any]:
    """The model as a resource descriptor: URI, tree digest (sha256 over its files' paths and sha256s, the
    manifest's ``digest``), and version and signer as annotations."""
    annotations: dict[str, Any] = {}
    if model.version is not None:
        annotations["version"] = model.version
    if model.signer is not None:
        annotations["signer"] = model.signer
    out = {"name": "model", "uri": public_uri(model.uri), "digest": _hex(model.digest)}
    return {**out, "annotations": annotations} if annotations else out


def source_descriptor(source: Source) -> dict[str, Any]:
    """The source commit, SLSA's way: ``git+URI[@REF]`` with the ``gitCommit`` digest."""
    uri = public_uri(source.uri)
    uri = uri if uri.startswith("git+") else f"git+{uri}"
    return {
        "name": "source",
        "uri": uri + (f"@{source.ref}" if source.ref else ""),
        "digest": {"gitCommit": source.commit},
    }


def provenance(
    verb: str,
    external: Mapping[str, Any],
    *,
    model: ModelInput,
    started: str,
    finished: str,
    app_ref: str | None = None,
    source: Source | None = None,
    invocation: str | None = None,
    internal: Mapping[str, Any] | None = None,
    builder_version: str | None = None,
) -> dict[str, Any]:
    """The provenance predicate of an image made by ``modelship VERB`` (``assemble``, ``publish``) with the
    parameters ``external`` (strings and lists; URIs in it are made public), between ``started`` and ``finished``
    (RFC 3339 UTC). ``app_ref``: the pinned app image it started from."""
    deps = [model_descriptor(model)]
    if app_ref is not None:
        deps.insert(0, image_descriptor(app_ref, "app image"))
    if source is not None:
        deps.append(source_descriptor(source))
    builder: dict[str, Any] = {"id": BUILDER_ID}
    if builder_version:
        builder["version"] = {"modelship": builder_version}
    metadata = {"startedOn": started, "finishedOn": finished}
    if invocation:
        metadata["invocationId"] = invocation
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE.format(verb=verb),
            "externalParameters": {k: _public(v) for k, v in external.items() if v is not None},
            "internalParameters": dict(internal or {}),
            "resolvedDependencies": deps,
        },
        "runDetails": {"builder": builder, "metadata": metadata},
    }


def _public(value: Any) -> Any:
    if isinstance(value, str):
        return public_uri(value) if "://" in value else value
    if isinstance(value, (list, tuple)):
        return [_public(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _public(v) for k, v in value.items() if v is not None}
    return value


# ---- what the run knows about itself -------------------------------------------------------------------------


def invocation_id(env: Mapping[str, str] | None = None) -> str | None:
    """The pipeline run: Azure Pipelines' build results URL (``BUILD_BUILDID`` alone without the collection)."""
    env = os.environ if env is None else env
    build = env.get("BUILD_BUILDID")
    if not build:
        return None
    collection, project = env.get("SYSTEM_COLLECTIONURI"), env.get("SYSTEM_TEAMPROJECT")
    if collection and project:
        return f"{public_uri(collection).rstrip('/')}/{quote(project)}/_build/results?buildId={quote(build)}"
    return build


def source_from_env(env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> Source | None:
    """The source commit: Azure Pipelines' ``BUILD_SOURCEVERSION`` (+ ``BUILD_REPOSITORY_URI``,
    ``BUILD_SOURCEBRANCH``), else the ``git`` checkout at ``cwd``; None when neither says."""
    env = os.environ if env is None else env
    commit, uri = env.get("BUILD_SOURCEVERSION"), env.get("BUILD_REPOSITORY_URI")
    if commit and uri:
        return Source(public_uri(uri), commit, env.get("BUILD_SOURCEBRANCH") or None)
    commit = _git(cwd, "rev-parse", "HEAD")
    remote = _git(cwd, "config", "--get", "remote.origin.url")
    if not commit or not remote:
        return None
    return Source(public_uri(remote), commit, _git(cwd, "symbolic-ref", "-q", "HEAD"))


def _git(cwd: str | Path | None, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None  # no git: no source, not an error
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and out else None


__all__ = [
    "ModelInput",
    "Source",
    "image_descriptor",
    "invocation_id",
    "provenance",
    "public_uri",
    "source_from_env",
]
