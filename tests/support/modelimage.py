"""Helpers of the model-image tests: model folders, raw pushes of hand-made (hostile) images, outside readers.

Hand-made images are pushed with plain HTTP calls of the distribution API, not with modelship's client, so
a test can put in the registry exactly the bytes an attacker (or a broken tool) would.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import requests

from modelship.manifest import FileEntry, Manifest

CTR_SOCKET = "/run/docker/containerd/containerd.sock"  # the containerd the testbed's Docker engine runs
MODEL_DIR = "/opt/modelship/model"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def model_files(root: Path, version: str, *, big_mb: int = 17, seed: bytes = b"") -> dict[str, bytes]:
    """A model folder as a data scientist has it (no modelship.json): one large file and two small ones."""
    big = hashlib.sha256(seed + version.encode()).digest() * (big_mb * 1024 * 1024 // 32)
    files = {"weights.bin": big, "config.json": json.dumps({"v": version}).encode(), "tok/vocab.txt": b"a\nb\n"}
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def sha256s(files: dict[str, bytes]) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


def tree_sha256s(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative paths), modelship.json excluded."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "modelship.json"
    }


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(registry: str, repo: str, data: bytes, auth: dict | None = None) -> str:
    digest = _sha(data)
    headers = auth or {}
    resp = requests.post(f"http://{registry}/v2/{repo}/blobs/uploads/", headers=headers, timeout=30)
    resp.raise_for_status()
    location = resp.headers["Location"]
    if location.startswith("/"):
        location = f"http://{registry}{location}"
    sep = "&" if "?" in location else "?"
    put = requests.put(
        f"{location}{sep}digest={digest}",
        data=data,
        headers={**headers, "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    put.raise_for_status()
    return digest


def push_manifest(registry: str, repo: str, ref: str, manifest: dict, media_type: str | None = None) -> str:
    data = json.dumps(manifest).encode()
    resp = requests.put(
        f"http://{registry}/v2/{repo}/manifests/{ref}",
        data=data,
        headers={"Content-Type": media_type or manifest.get("mediaType", "application/vnd.oci.image.manifest.v1+json")},
        timeout=30,
    )
    resp.raise_for_status()
    return _sha(data)


def push_plain_image(registry: str, repo: str, tag: str, config: dict, layer: bytes) -> str:
    """An OCI image of one (tar) layer and ``config``, pushed with plain HTTP calls (nothing of modelship's):
    its manifest digest."""
    data = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": OCI_CONFIG, "digest": push_blob(registry, repo, data), "size": len(data)},
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": push_blob(registry, repo, layer),
                "size": len(layer),
            }
        ],
    }
    return push_manifest(registry, repo, tag, manifest)


def tar_layer(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """An uncompressed tar of hand-made members (names, types and sizes as given, nothing cleaned)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o444
    return info, data


def dir_member(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o555
    return info, None


def push_model_image(
    registry: str,
    repo: str,
    tag: str,
    layers: list[bytes],
    files: dict[str, bytes],
    *,
    version: str | None = None,
    image_model_dir: str = MODEL_DIR,
    extra_layers: list[bytes] = (),
    layer_media_type: str = "application/vnd.oci.image.layer.v1.tar",
    manifest_layers: list[dict] | None = None,
) -> str:
    """A model image made by hand: the labels modelship reads, over whatever ``layers`` hold.

    ``files`` is what its modelship.json label claims; ``extra_layers`` are layers not named as model layers.
    Returns the manifest digest.
    """
    entries = [FileEntry(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in files.items()]
    model = Manifest.create(f"oci://{registry}/{repo}", version or tag, entries, stamp=False)
    digests = [push_blob(registry, repo, layer) for layer in layers]
    extra = [push_blob(registry, repo, layer) for layer in extra_layers]
    labels = {
        "io.modelship.model.manifest": model.to_json(compact=True),
        "io.modelship.model.dir": image_model_dir,
        "io.modelship.model.layers": ",".join(digests),
        "io.modelship.model.digest": model.digest,
        "io.modelship.model.uri": model.uri,
        "io.modelship.model.version": model.version,
    }
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": extra + digests},
        }
    ).encode()
    config_digest = push_blob(registry, repo, config)
    descs = manifest_layers or [
        {"mediaType": layer_media_type, "digest": d, "size": len(b)}
        for d, b in zip(extra + digests, [*extra_layers, *layers], strict=True)
    ]
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": descs,
    }
    return push_manifest(registry, repo, tag, manifest)


def ctr(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """containerd's own client against the engine's containerd, in a namespace of the tests' own."""
    return subprocess.run(
        ["ctr", "--address", CTR_SOCKET, "-n", "modelship-tests", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def ctr_mounted(ref: str, where: Path) -> Iterator[Path]:
    """``ctr images pull`` + ``ctr images mount``: containerd pulls, unpacks and mounts the image read-only."""
    pulled = ctr("images", "pull", "--plain-http", ref)
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    where.mkdir(parents=True, exist_ok=True)
    mounted = ctr("images", "mount", ref, str(where))
    assert mounted.returncode == 0, mounted.stderr[-2000:]
    try:
        yield where
    finally:
        ctr("images", "unmount", "--rm", str(where))
        ctr("images", "rm", ref)


def unique_repo(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
