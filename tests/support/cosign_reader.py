"""A second, minimal reader (and writer) of cosign image signatures, written apart from modelship.trust.cosign.

Nothing on this machine can judge a cosign signature (no cosign binary; Debian's podman and skopeo have
sigstore patched out), so the tests judge what modelship writes with this: plain ``requests`` calls of the
distribution API and ``cryptography``'s ECDSA, following cosign's documented layout (sigstore/cosign
``pkg/oci/static``, ``pkg/cosign/verifiers.go``) and not modelship's code. :func:`write_signature` makes a
signature the way cosign does, for ``modelship verify`` to judge in turn.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

LAYER_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
ANNOTATION = "dev.cosignproject.cosign/signature"
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")


@dataclass(frozen=True)
class Found:
    """One signature layer: the payload bytes (checked against the layer digest) and the decoded signature."""

    payload: bytes
    signature: bytes
    annotations: dict

    @property
    def claims(self) -> dict:
        return json.loads(self.payload)


def sig_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def tagged_manifest(registry: str, repo: str, tag: str) -> tuple[dict, str, str] | None:
    """The manifest at ``tag`` (its JSON, media type, digest), or None when there is no such tag."""
    resp = requests.get(
        f"http://{registry}/v2/{repo}/manifests/{tag}",
        headers={"Accept": ", ".join(MANIFEST_TYPES)},
        timeout=30,
    )
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return resp.json(), resp.headers["Content-Type"], "sha256:" + hashlib.sha256(resp.content).hexdigest()


def signature_manifest(registry: str, repo: str, digest: str) -> tuple[dict, str, str] | None:
    """The manifest at ``sha256-<hex>.sig`` (its JSON, media type, digest), or None when there is no such tag."""
    return tagged_manifest(registry, repo, sig_tag(digest))


def _blob(registry: str, repo: str, digest: str) -> bytes:
    resp = requests.get(f"http://{registry}/v2/{repo}/blobs/{digest}", timeout=30)
    resp.raise_for_status()
    assert "sha256:" + hashlib.sha256(resp.content).hexdigest() == digest, f"blob {digest} does not match"
    return resp.content


def read_layers(registry: str, repo: str, manifest: dict) -> list[Found]:
    """Every simple-signing layer of a signature manifest, its payload read and checked against its digest."""
    out = []
    for layer in manifest["layers"]:
        assert layer["mediaType"] == LAYER_TYPE, layer
        payload = _blob(registry, repo, layer["digest"])
        assert len(payload) == layer["size"]
        annotations = layer.get("annotations") or {}
        out.append(Found(payload, base64.b64decode(annotations[ANNOTATION], validate=True), annotations))
    return out


def read_signatures(registry: str, repo: str, digest: str) -> list[Found]:
    """The signature layers at the image's ``.sig`` tag ([] when it has none)."""
    got = signature_manifest(registry, repo, digest)
    if got is None:
        return []
    manifest, media_type, _ = got
    assert media_type.split(";")[0] in MANIFEST_TYPES, media_type
    return read_layers(registry, repo, manifest)


def _public(path: Path) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    return key


def accepts(found: Found, public_key: Path, repository: str, digest: str) -> bool:
    """cosign verify --key's rule for one layer: the ECDSA P-256/SHA-256 signature is valid over the payload
    bytes, and the payload is a simple-signing claim naming exactly ``digest`` (and, here, ``repository``)."""
    try:
        _public(public_key).verify(found.signature, found.payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    critical = found.claims["critical"]
    return (
        critical["type"] == "cosign container image signature"
        and critical["image"]["docker-manifest-digest"] == digest
        and critical["identity"]["docker-reference"] == repository
        and found.claims.get("optional") is None
    )


def verified_by(registry: str, repo: str, digest: str, public_key: Path, *, signed_at: str | None = None) -> int:
    """How many signatures at the image's ``.sig`` tag verify for ``digest`` with ``public_key``, naming the
    repository they were made in: ``signed_at`` (REGISTRY/REPO), else this one. A copied signature names the
    repository it was made in (``cosign copy`` copies it as it is; cosign's claim check compares the digest only)."""
    found = read_signatures(registry, repo, digest)
    return sum(accepts(f, public_key, signed_at or f"{registry}/{repo}", digest) for f in found)


# ---- writing, as cosign sign --key does -----------------------------------------------------------------------


def _push_blob(registry: str, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if requests.head(f"http://{registry}/v2/{repo}/blobs/{digest}", timeout=30).status_code == 200:
        return digest
    resp = requests.post(f"http://{registry}/v2/{repo}/blobs/uploads/", timeout=30)
    resp.raise_for_status()
    location = resp.headers["Location"]
    location = location if location.startswith("http") else f"http://{registry}{location}"
    sep = "&" if "?" in location else "?"
    requests.put(
        f"{location}{sep}digest={digest}", data=data, headers={"Content-Type": "application/octet-stream"}, timeout=30
    ).raise_for_status()
    return digest


def write_signature(
    registry: str, repo: str, digest: str, private_key: Path, *, claimed_digest: str | None = None
) -> None:
    """Append a signature of ``digest`` (or, to forge one, of ``claimed_digest`` put at ``digest``'s tag) by
    ``private_key`` to the image's ``.sig`` manifest, with Go's key order and spacing in the payload."""
    key = serialization.load_pem_private_key(Path(private_key).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    claim = claimed_digest or digest
    payload = (
        f'{{"critical":{{"identity":{{"docker-reference":"{registry}/{repo}"}},"image":{{"docker-manifest-digest":'
        f'"{claim}"}},"type":"cosign container image signature"}},"optional":null}}'
    ).encode()
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    got = signature_manifest(registry, repo, digest)
    layers = got[0]["layers"] if got else []
    layer = {
        "mediaType": LAYER_TYPE,
        "size": len(payload),
        "digest": _push_blob(registry, repo, payload),
        "annotations": {ANNOTATION: signature},
    }
    layers = [*layers, layer]
    config = json.dumps(
        {
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]},
        }
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPES[0],
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": len(config),
            "digest": _push_blob(registry, repo, config),
        },
        "layers": layers,
    }
    requests.put(
        f"http://{registry}/v2/{repo}/manifests/{sig_tag(digest)}",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": MANIFEST_TYPES[0]},
        timeout=30,
    ).raise_for_status()
