"""The registry client's protocol steps against a registry in this process (in-memory blobs, real HTTP):
uploads retried by the project's policy (a refused PATCH resumes, a lost commit answer is not sent again, a
registry that keeps failing gives up after MODELSHIP_MAX_ATTEMPTS), credentials that are refused, referrers.

Each retry test fails with the retries removed (``MODELSHIP_MAX_ATTEMPTS=1`` is the same as removing them:
the last test shows it).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import re
import threading
import time
import uuid

import pytest
import requests

from modelship.errors import AuthError, ModelshipError
from modelship.oci.auth import Credentials
from modelship.oci.registry import OCI_INDEX, OCI_MANIFEST, RegistryClient
from modelship.oci.write import blob, image, write
from support.servers import QuietHandler, serving

CHUNK = 64 * 1024


class MemoryRegistry(QuietHandler):
    """A registry of the distribution API's blob upload and manifest steps, holding everything in memory.

    Class attributes (a subclass per test): ``blobs`` (digest -> bytes), ``manifests`` (tag or digest -> bytes
    and media type), ``uploads`` (session -> bytes so far), ``log`` ((method, path) of each request), ``fault``
    (called with (method, path, n-th such request); returns None, a status to answer instead, or "lose" to do
    the work and close without an answer), ``user`` (Basic auth wanted when set), ``referrers`` (digest ->
    descriptors).
    """

    protocol_version = "HTTP/1.1"
    blobs: dict[str, bytes]
    manifests: dict[str, tuple[bytes, str]]  # tag or digest -> (bytes, media type)
    uploads: dict[str, bytearray]
    log: list[tuple[str, str]]
    fault = staticmethod(lambda method, path, n: None)
    user: tuple[str, str] | None = None
    referrers: dict[str, list[dict]] = {}
    lock = threading.Lock()

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        headers = {"Content-Length": str(len(body)), **(headers or {})}  # a HEAD says the blob's size
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self._body()
        with self.lock:
            self.log.append((self.command, path))
            n = sum(1 for m, p in self.log if m == self.command and _kind(p) == _kind(path))
        if self.user is not None:
            want = "Basic " + base64.b64encode(":".join(self.user).encode()).decode()
            if self.headers.get("Authorization") != want:
                body401 = json.dumps({"errors": [{"code": "UNAUTHORIZED"}]}).encode()
                return self._answer(401, {"WWW-Authenticate": 'Basic realm="test"'}, body401)
        fault = self.fault(self.command, path, n)
        if isinstance(fault, int):
            return self._answer(fault)
        status, headers, out = self._serve(path, body)
        if fault == "lose":
            self.close_connection = True
            return
        self._answer(status, headers, out)

    def _serve(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        query = dict(re.findall(r"(\w+)=([^&]*)", self.path.split("?", 1)[1])) if "?" in self.path else {}
        if m := re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]{64})", path):
            data = self.blobs.get(m.group(2))
            return (404, {}, b"") if data is None else (200, {"Content-Length": str(len(data))}, b"")
        if re.fullmatch(r"/v2/(.+)/blobs/uploads/", path) and self.command == "POST":
            session = uuid.uuid4().hex
            self.uploads[session] = bytearray()
            return 202, {"Location": f"/upload/{session}", "Range": "0-0"}, b""
        if m := re.fullmatch(r"/upload/(\w+)", path):
            got = self.uploads.get(m.group(1))
            if got is None:
                return 404, {}, json.dumps({"errors": [{"code": "BLOB_UPLOAD_UNKNOWN"}]}).encode()
            if self.command == "GET":
                return 204, {"Location": path, "Range": f"0-{max(len(got) - 1, 0)}"}, b""
            got.extend(body)
            if self.command == "PATCH":
                return 202, {"Location": path, "Range": f"0-{len(got) - 1}"}, b""
            digest = query["digest"].replace("%3A", ":")
            if "sha256:" + hashlib.sha256(got).hexdigest() != digest:
                del self.uploads[m.group(1)]
                return 400, {}, json.dumps({"errors": [{"code": "DIGEST_INVALID"}]}).encode()
            self.blobs[digest] = bytes(got)
            return 201, {"Docker-Content-Digest": digest}, b""
        if m := re.fullmatch(r"/v2/(.+)/manifests/(.+)", path):
            if self.command == "PUT":
                digest = "sha256:" + hashlib.sha256(body).hexdigest()
                media = self.headers.get("Content-Type", "")
                self.manifests[m.group(2)] = self.manifests[digest] = (body, media)
                return 201, {"Docker-Content-Digest": digest}, b""
            data, media = self.manifests.get(m.group(2), (b"{}", OCI_MANIFEST))
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            return 200, {"Content-Type": media, "Docker-Content-Digest": digest}, data
        if m := re.fullmatch(r"/v2/(.+)/referrers/(sha256:[0-9a-f]{64})", path):
            if m.group(2) not in self.referrers:
                return 404, {}, b"404 page not found"
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.referrers[m.group(2)]}
            return 200, {"Content-Type": OCI_INDEX}, json.dumps(index).encode()
        return 404, {}, b""

    do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = _handle


def _kind(path: str) -> str:
    return "upload" if path.startswith("/upload/") else path


def _registry(**attrs):
    handler = type("Registry", (MemoryRegistry,), {"blobs": {}, "manifests": {}, "uploads": {}, "log": [], **attrs})
    return handler, serving(handler)


class _Bytes:
    def __init__(self, data: bytes):
        self.data, self.size = data, len(data)

    def open(self, offset: int) -> io.BytesIO:
        return io.BytesIO(self.data[offset:])


@pytest.fixture(autouse=True)
def _quick_backoff(monkeypatch):
    monkeypatch.setattr(random, "random", lambda: 0.0)  # the policy's shortest waits, same count of retries


def _push(server, data: bytes, **kw) -> int:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with RegistryClient(f"127.0.0.1:{server.server_port}", timeout=kw.pop("timeout", 5), chunk_size=CHUNK) as c:
        return c.push_blob("team/app", digest, len(data), _Bytes(data), **kw)


def test_a_refused_patch_is_retried_from_where_the_registry_stands():
    data = random.Random(1).randbytes(5 * CHUNK + 123)
    handler, running = _registry(fault=staticmethod(lambda m, p, n: 503 if (m, n) == ("PATCH", 3) else None))
    with running as server:
        sent = _push(server, data)
    assert handler.blobs == {"sha256:" + hashlib.sha256(data).hexdigest(): data}
    assert [m for m, _ in handler.log].count("PATCH") == 6 + 1  # the refused one, then the rest once each
    assert sent == len(data) + CHUNK  # the refused PATCH's body, and every byte once


def test_a_commit_whose_answer_is_lost_is_not_uploaded_again():
    data = random.Random(2).randbytes(CHUNK // 2)
    handler, running = _registry(fault=staticmethod(lambda m, p, n: "lose" if (m, n) == ("PUT", 1) else None))
    with running as server:
        sent = _push(server, data, check_first=False)
    assert sent == len(data) and list(handler.blobs.values()) == [data]
    assert [m for m, _ in handler.log] == ["POST", "PUT", "HEAD"]  # the HEAD found it: nothing sent twice


def test_a_registry_that_keeps_failing_gives_up_after_the_policys_attempts(monkeypatch):
    monkeypatch.setenv("MODELSHIP_MAX_ATTEMPTS", "3")
    data = random.Random(3).randbytes(1000)
    handler, running = _registry(fault=staticmethod(lambda m, p, n: 503 if m == "PUT" else None))
    with running as server, pytest.raises(ModelshipError, match=r"failed 3 times, last: registry .* HTTP 503"):
        _push(server, data, check_first=False)
    assert [m for m, _ in handler.log].count("PUT") == 3 and handler.blobs == {}


def test_with_one_attempt_a_refused_patch_fails(monkeypatch):
    """MODELSHIP_MAX_ATTEMPTS=1 turns the retries off: the first test's fault is then a failure."""
    monkeypatch.setenv("MODELSHIP_MAX_ATTEMPTS", "1")
    data = random.Random(1).randbytes(5 * CHUNK + 123)
    handler, running = _registry(fault=staticmethod(lambda m, p, n: 503 if (m, n) == ("PATCH", 3) else None))
    with running as server, pytest.raises(ModelshipError, match="failed 1 times"):
        _push(server, data)
    assert handler.blobs == {}


def test_refused_credentials_are_not_reported_as_missing():
    """A 401 after credentials were sent says they were refused (issue 19 item 12), not 'run docker login'."""
    handler, running = _registry(user=("ci-bot", "right"))
    with running as server:
        host = f"127.0.0.1:{server.server_port}"
        with RegistryClient(host, Credentials("ci-bot", "wrong"), timeout=5) as c, pytest.raises(AuthError) as e:
            c.get_manifest("team/app", "1")
        assert str(e.value).startswith(f"registry {host} refused the credentials for team/app: check the username")
        assert "wrong" not in str(e.value)
        with RegistryClient(host, Credentials("ci-bot", "right"), timeout=5) as c:
            assert c.get_manifest("team/app", "1").data == b"{}"
    assert handler.log[0] == ("GET", "/v2/team/app/manifests/1")


def test_referrers_of_a_digest_and_a_registry_without_the_api():
    subject = "sha256:" + "b" * 64
    sig = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "c" * 64, "size": 9}
    att = {**sig, "digest": "sha256:" + "d" * 64, "artifactType": "application/vnd.in-toto+json"}
    sig["artifactType"] = "application/vnd.dev.cosign.simplesigning.v1+json"
    _, running = _registry(referrers={subject: [sig, att]})
    with running as server, RegistryClient(f"127.0.0.1:{server.server_port}", timeout=5) as c:
        assert c.referrers("team/app", subject) == [sig, att]
        assert c.referrers("team/app", subject, "application/vnd.in-toto+json") == [att]
        assert c.referrers("team/app", "sha256:" + "e" * 64) is None  # no referrers API: the tag schema then


def test_an_extra_manifest_at_a_tag_is_one_write_and_a_second_write_sends_nothing():
    """How signatures will be written: an image of a config and a payload at ``sha256-<hex>.sig``."""
    payload = b'{"critical": {"image": {"docker-manifest-digest": "sha256:' + b"a" * 64 + b'"}}}'
    sig = image(blob(b"{}"), [blob(payload, "application/vnd.dev.cosign.simplesigning.v1+json")])
    handler, running = _registry()
    with running as server, RegistryClient(f"127.0.0.1:{server.server_port}", timeout=5) as c:
        w = write(c, "team/app", sig, "sha256-" + "a" * 64 + ".sig")
        assert w.uploaded_bytes == len(payload) + 2 and w.sent.keys() == {b.digest for b in sig.blobs}
        again = write(c, "team/app", sig, "sha256-" + "a" * 64 + ".sig")
        assert again.uploaded_bytes == 0  # every blob HEADed first: nothing sent twice
    assert handler.manifests["sha256-" + "a" * 64 + ".sig"] == (sig.data, OCI_MANIFEST)
    assert handler.blobs[sig.layers[0].digest] == payload


def test_a_failed_upload_stops_the_others_and_tags_nothing(monkeypatch):
    monkeypatch.setenv("MODELSHIP_MAX_ATTEMPTS", "1")
    layers = [blob(random.Random(i).randbytes(3 * CHUNK), "application/octet-stream") for i in range(4)]
    img = image(blob(b"{}"), layers)

    def fault(method: str, path: str, n: int) -> int | None:
        if (method, n) == ("PATCH", 2):
            return 500
        if method == "PATCH":
            time.sleep(0.3)  # the other uploads are still under way when the failure comes
        return None

    handler, running = _registry(fault=staticmethod(fault))
    with running as server:
        c = RegistryClient(f"127.0.0.1:{server.server_port}", timeout=5, chunk_size=CHUNK)
        with pytest.raises(ModelshipError, match="HTTP 500"):
            write(c, "team/app", img, "1")
        time.sleep(2)  # what a worker left behind would send meanwhile (3 PATCHes of 0.3 s and a commit)
        c.close()
    assert handler.manifests == {} and handler.blobs == {}  # the uploads under way stopped at their next block
    # and the queued ones (a layer, the config) never began: at most the three begun side by side (on a loaded
    # machine the third may not have begun before the failure came, and then never does)
    assert 2 <= [m for m, _ in handler.log].count("POST") <= 3


def test_a_401_for_a_missing_permission_says_so_not_that_the_password_is_wrong():
    """Registries (Docker Hub, ACR) answer a push without the permission with 401 insufficient_scope."""
    resp = requests.Response()
    resp.status_code = 401
    resp.headers["WWW-Authenticate"] = 'Bearer realm="https://auth.example/token",error="insufficient_scope"'
    resp._content = b'{"errors": [{"code": "UNAUTHORIZED"}]}'
    with RegistryClient("reg.example.com", Credentials("ci-bot", "s3cret")) as c:
        err = c.error(resp, "manifest PUT", "team/app")
    assert isinstance(err, AuthError) and "denied manifest PUT in team/app: the credentials lack" in str(err)
