"""Base images for the registry builder's tests, made by hand with plain distribution-API calls (no modelship
client): a tiny stand-in base whose files say which Python and C library it has, the testbed base mounted into
another repository, and an index listing them by platform."""

from __future__ import annotations

import base64
import hashlib
import json

import requests

from .modelimage import dir_member, file_member, tar_layer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = (OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json")
ACCEPT = ", ".join((*MANIFEST_TYPES, OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"))
GLIBC = b"\0GNU C Library (Debian GLIBC 2.36-9) stable release version 2.36.\0"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(registry: str, repo: str, data: bytes, auth: dict | None = None) -> str:
    digest = _sha(data)
    resp = requests.post(f"http://{registry}/v2/{repo}/blobs/uploads/", headers=auth or {}, timeout=30)
    resp.raise_for_status()
    loc = resp.headers["Location"]
    loc = f"http://{registry}{loc}" if loc.startswith("/") else loc
    sep = "&" if "?" in loc else "?"
    requests.put(f"{loc}{sep}digest={digest}", data=data, headers=auth or {}, timeout=60).raise_for_status()
    return digest


def put_manifest(registry: str, repo: str, ref: str, data: bytes, media_type: str, auth: dict | None = None) -> str:
    headers = {**(auth or {}), "Content-Type": media_type}
    url = f"http://{registry}/v2/{repo}/manifests/{ref}"
    requests.put(url, data=data, headers=headers, timeout=30).raise_for_status()
    return _sha(data)


def stand_in_base(
    registry: str, repo: str, tag: str, *, arch: str, python: str = "3.12", auth: dict | None = None
) -> dict:
    """A one-layer image that is a base to the registry builder's eyes only (it cannot run): /etc/passwd,
    /etc/group, ``/usr/local/bin/python<python>`` and a glibc 2.36 ``libc.so.6``, its config saying ``arch``.
    Returns its descriptor (mediaType, digest, size)."""
    machine = {"amd64": "x86_64", "arm64": "aarch64"}[arch]
    layer = tar_layer(
        [
            dir_member("etc"),
            file_member("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
            file_member("etc/group", b"root:x:0:\n"),
            file_member(f"lib/{machine}-linux-gnu/libc.so.6", GLIBC),
            file_member(f"usr/local/bin/python{python}", b"not a python: a stand-in for the registry builder\n"),
        ]
    )
    layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": len(layer)}
    layer_desc["digest"] = put_blob(registry, repo, layer, auth)
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["python3"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        }
    ).encode()
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config)}
    config_desc["digest"] = put_blob(registry, repo, config, auth)
    data = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": [layer_desc]})
    digest = put_manifest(registry, repo, tag, data.encode(), OCI_MANIFEST, auth)
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data.encode())}


def mounted(ref: str, repo: str) -> dict:
    """The single-platform image ``REGISTRY/REPO@DIGEST`` put into ``repo`` of the same registry, its blobs
    mounted (not sent) and its manifest's very bytes pushed; returns its descriptor."""
    registry, rest = ref.split("/", 1)
    src, digest = rest.split("@", 1)
    resp = requests.get(f"http://{registry}/v2/{src}/manifests/{digest}", headers={"Accept": ACCEPT}, timeout=30)
    resp.raise_for_status()
    media_type = resp.headers["Content-Type"].split(";")[0]
    assert media_type in MANIFEST_TYPES, f"{ref} is a {media_type}: give one platform's manifest"
    body = resp.json()
    for d in [body["config"], *body["layers"]]:
        url = f"http://{registry}/v2/{repo}/blobs/uploads/?mount={d['digest']}&from={src}"
        assert requests.post(url, timeout=30).status_code == 201, f"{d['digest']} not mounted from {src}"
    put_manifest(registry, repo, digest, resp.content, media_type)
    return {"mediaType": media_type, "digest": digest, "size": len(resp.content)}


def push_platform_index(registry: str, repo: str, tag: str, entries: dict[str, dict]) -> str:
    """An OCI index of ``{"os/arch": descriptor}`` (each manifest already in ``repo``); returns its digest."""
    manifests = []
    for platform, desc in entries.items():
        os_, arch = platform.split("/")
        manifests.append({**desc, "platform": {"os": os_, "architecture": arch}})
    data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()
    return put_manifest(registry, repo, tag, data, OCI_INDEX)
