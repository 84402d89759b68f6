"""A small in-memory registry for tests that need the OCI 1.1 referrers API, which the testbed's registry
(distribution 2.8) does not have: blobs (monolithic and chunked uploads), manifests by tag and digest (404 when
absent), and ``GET /v2/<name>/referrers/<digest>`` computed from the ``subject`` of the manifests it holds.
``referrers_api=False`` answers that path 404 as distribution does. Plain HTTP on 127.0.0.1; no auth.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Iterator

from support.servers import QuietHandler, serving

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


class ReferrersRegistry(QuietHandler):
    protocol_version = "HTTP/1.1"
    blobs: dict[str, bytes]
    manifests: dict[tuple[str, str], tuple[bytes, str]]  # (repo, tag or digest) -> (bytes, media type)
    uploads: dict[str, bytearray]
    referrers_api = True
    lock = threading.Lock()

    def _answer(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path, _, query = self.path.partition("?")
        with self.lock:
            self._answer(*self._serve(path, dict(re.findall(r"(\w+)=([^&]*)", query)), body))

    def _serve(self, path: str, query: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if path == "/v2/":
            return 200, {}, b"{}"
        if m := re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]{64})", path):
            data = self.blobs.get(m.group(2))
            if data is None:
                return 404, {}, b""
            return 200, {"Content-Length": str(len(data))}, data
        if re.fullmatch(r"/v2/(.+)/blobs/uploads/", path) and self.command == "POST":
            session = uuid.uuid4().hex
            self.uploads[session] = bytearray()
            return 202, {"Location": f"/upload/{session}", "Range": "0-0"}, b""
        if m := re.fullmatch(r"/upload/(\w+)", path):
            got = self.uploads[m.group(1)]
            got.extend(body)
            if self.command == "PATCH":
                return 202, {"Location": path, "Range": f"0-{len(got) - 1}"}, b""
            digest = query["digest"].replace("%3A", ":")
            if "sha256:" + hashlib.sha256(got).hexdigest() != digest:
                return 400, {}, json.dumps({"errors": [{"code": "DIGEST_INVALID"}]}).encode()
            self.blobs[digest] = bytes(got)
            return 201, {"Docker-Content-Digest": digest}, b""
        if m := re.fullmatch(r"/v2/(.+)/manifests/(.+)", path):
            repo, ref = m.groups()
            if self.command == "PUT":
                digest = "sha256:" + hashlib.sha256(body).hexdigest()
                media = self.headers.get("Content-Type", "")
                self.manifests[(repo, ref)] = self.manifests[(repo, digest)] = (body, media)
                return 201, {"Docker-Content-Digest": digest}, b""
            if (repo, ref) not in self.manifests:
                return 404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'
            data, media = self.manifests[(repo, ref)]
            return 200, {"Content-Type": media, "Docker-Content-Digest": _digest(data)}, data
        if (m := re.fullmatch(r"/v2/(.+)/referrers/(sha256:[0-9a-f]{64})", path)) and self.referrers_api:
            repo, subject = m.groups()
            found = {}
            for (r, ref), (data, media) in self.manifests.items():
                doc = json.loads(data)
                if r == repo and ref.startswith("sha256:") and (doc.get("subject") or {}).get("digest") == subject:
                    found[ref] = {"mediaType": media, "digest": ref, "size": len(data),
                                  "artifactType": doc.get("artifactType") or doc["config"]["mediaType"]}  # fmt: skip
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(found.values())}
            return 200, {"Content-Type": OCI_INDEX}, json.dumps(index).encode()
        return 404, {"Content-Type": "text/plain"}, b"404 page not found"

    do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = _handle


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def referrers_registry(*, referrers_api: bool = True) -> Iterator[tuple[str, type[ReferrersRegistry]]]:
    """A running registry: (host:port, its handler class holding ``blobs`` and ``manifests``)."""
    attrs = {"blobs": {}, "manifests": {}, "uploads": {}, "referrers_api": referrers_api}
    handler = type("Registry", (ReferrersRegistry,), attrs)
    with serving(handler) as server:
        yield f"127.0.0.1:{server.server_port}", handler


def push_image(registry: str, handler: type[ReferrersRegistry], repo: str, seed: bytes = b"app") -> str:
    """A small image (config + one layer) put straight into the registry's memory; its digest."""
    layer, config = b"layer " + seed, json.dumps({"seed": seed.decode()}).encode()
    handler.blobs[_digest(layer)] = layer
    handler.blobs[_digest(config)] = config
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(layer),
                    "size": len(layer)}],
    }).encode()  # fmt: skip
    digest = _digest(manifest)
    handler.manifests[(repo, digest)] = (manifest, "application/vnd.oci.image.manifest.v1+json")
    return digest
