"""A small real HTTP/1.1 file server (keep-alive, Range, ETag/If-Match, HEAD, chunked, 100-continue) for tests."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real stores
    files: dict[str, bytes] = {}
    received: list[tuple[str, str, int]] = []  # (method, path, body bytes) of complete requests

    def log_message(self, *args: object) -> None:
        pass

    def _etag(self, data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'

    def _lookup(self) -> bytes | None:
        data = self.files.get(self.path.split("?", 1)[0].removeprefix("/chunked"))
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        return data

    def do_HEAD(self) -> None:
        data = self._lookup()
        if data is None:
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", self._etag(data))
        self.send_header("Last-Modified", "Wed, 25 Nov 2026 10:00:00 GMT")
        self.end_headers()

    def do_GET(self) -> None:
        data = self._lookup()
        if data is None:
            return
        if self.headers.get("If-Match") not in (None, self._etag(data)):
            self.send_response(412)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end, status = 0, len(data) - 1, 200
        if rng := self.headers.get("Range"):
            a, b = rng.removeprefix("bytes=").split("-")
            start, end, status = int(a), min(int(b), len(data) - 1), 206
        body = data[start : end + 1]
        self.send_response(status)
        self.send_header("ETag", self._etag(data))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        if self.path.startswith("/chunked/"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 1000):
                piece = body[i : i + 1000]
                self.wfile.write(f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        type(self).received.append(("GET", self.path, 0))

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if len(body) < length:
            return  # the client went away half-way: nothing is stored
        self.files[self.path] = body
        type(self).received.append(("PUT", self.path, len(body)))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def file_server(files: dict[str, bytes]) -> Iterator[tuple[tuple[str, int], type[_Handler]]]:
    """Serve ``files`` (path → bytes) on 127.0.0.1; yields ((host, port), handler class with ``received``)."""
    handler = type("Handler", (_Handler,), {"files": dict(files), "received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="file-server", daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", server.server_address[1]), handler
    finally:
        server.shutdown()
        server.server_close()
