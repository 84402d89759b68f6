"""Reading an image in a registry without pulling it: the platform of an index entry, an image's labels."""

from __future__ import annotations

from typing import Any

from ..errors import ModelshipError, NotFoundError
from .auth import login
from .reference import parse_reference
from .registry import RegistryClient


def platform_of(entry: dict[str, Any]) -> str:
    """``os/architecture[/variant]`` of an index entry ("" when it names none)."""
    p = entry.get("platform") or {}
    return "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)


def host_platform() -> str:
    import platform as _platform

    machine = _platform.machine().lower()
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def remote_image(
    ref: str, *, username: str | None = None, password: str | None = None, platform: str | None = None
) -> dict[str, Any]:
    """Manifest digest, config digest (= image id) and labels of a remote image, without pulling it.

    Of an image index, the image of ``platform`` (default: this machine's, else the first listed) is read;
    ``platform`` and ``platforms`` say which one and what there was, so that nothing is picked silently.
    """
    r = parse_reference(ref)
    with RegistryClient(r.registry, login(username, password)) as client:
        got = client.get_manifest(r.repository, r.reference)
        digest, manifest = got.digest, got.json()
        chosen_platform, platforms = None, []
        if got.is_index or "manifests" in manifest:
            entries = manifest.get("manifests") or []
            platforms = [platform_of(m) or "unknown" for m in entries]
            want = platform or host_platform()
            chosen = next((m for m in entries if platform_of(m).startswith(want)), None)
            if chosen is None and platform is None and entries:
                chosen = entries[0]
            if chosen is None:
                listed = ", ".join(platforms) or "none"
                raise NotFoundError(f"{ref}: no {want} image in the index (platforms: {listed})")
            chosen_platform = platform_of(chosen) or "unknown"
            manifest = client.get_manifest(r.repository, chosen["digest"]).json()
        config_digest = (manifest.get("config") or {}).get("digest")
        if not config_digest:
            raise ModelshipError(f"{ref}: manifest has no config (schema 1 manifests are not supported)")
        config = client.blob_json(r.repository, config_digest)
    labels = (config.get("config") or {}).get("Labels") or {}
    return {
        "ref": str(r),
        "digest": digest,
        "id": config_digest,
        "labels": dict(labels),
        "platform": chosen_platform,
        "platforms": platforms,
    }


__all__ = ["host_platform", "platform_of", "remote_image"]
