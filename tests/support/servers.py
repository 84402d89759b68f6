"""Servers for tests, on 127.0.0.1 only: HTTP handlers served in this process (one way to start and stop them),
a real HTTP/1.1 file server, and real server processes (moto, docker-registry, Azurite) waited for until they answer.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

# ------------------------------------------------------------------------------------------ in this process


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that keeps stderr clean (no access log) and answers JSON in one call."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> http.server.ThreadingHTTPServer:
    """``handler`` on a free port of 127.0.0.1, answered by daemon threads; end it with :func:`stop`."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), name=f"serve-{handler.__name__}", daemon=True).start()
    return server


def stop(server: http.server.ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[http.server.ThreadingHTTPServer]:
    server = serve(handler)
    try:
        yield server
    finally:
        stop(server)


class FileHandler(QuietHandler):
    """HTTP/1.1 file server: keep-alive, Range, ETag/If-Match, HEAD, chunked (paths under /chunked/), PUT.

    Class attributes (a subclass per server, see :func:`file_server`): ``files`` (path → bytes), ``received``
    ((method, path, body bytes) of complete requests), ``fail_first`` (answer that many GETs with 503 first).
    """

    protocol_version = "HTTP/1.1"  # keep-alive, like the real stores
    files: dict[str, bytes] = {}
    received: list[tuple[str, str, int]] = []
    fail_first = 0

    def _etag(self, data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'

    def _empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _lookup(self) -> bytes | None:
        data = self.files.get(self.path.split("?", 1)[0].removeprefix("/chunked"))
        if data is None:
            self._empty(404)
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
        cls = type(self)
        if cls.fail_first > 0:  # a flaky server
            cls.fail_first -= 1
            self._empty(503)
            return
        data = self._lookup()
        if data is None:
            return
        if self.headers.get("If-Match") not in (None, self._etag(data)):
            self._empty(412)
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
        cls.received.append(("GET", self.path, 0))

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
def file_server(files: dict[str, bytes]) -> Iterator[tuple[tuple[str, int], type[FileHandler]]]:
    """Serve ``files`` (path → bytes) on 127.0.0.1; yields ((host, port), the handler class: its ``files``,
    ``received`` and ``fail_first`` are this server's)."""
    handler = type("Handler", (FileHandler,), {"files": dict(files), "received": [], "fail_first": 0})
    with serving(handler) as server:
        yield ("127.0.0.1", server.server_address[1]), handler


# ------------------------------------------------------------------------------------------ server processes


def answers(url: str, status: int | None = None, **kwargs: Any) -> Callable[[], bool]:
    """A readiness check for :func:`running`: ``url`` answers (with ``status``, if given)."""

    def check() -> bool:
        try:
            got = requests.get(url, timeout=2, **kwargs).status_code
        except requests.RequestException:
            return False
        return status is None or got == status

    return check


@contextmanager
def running(
    cmd: list[str], *, ready: Callable[[], bool], what: str, log: Path | None = None, timeout: float = 30
) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` for the block, entered once ``ready()`` holds; its output goes to ``log`` (else nowhere).

    Fails the test with one line (and the log's tail) if the process exits first or ``timeout`` passes.
    """
    with open(log or os.devnull, "wb") as out:
        # a session of its own: a Ctrl-C meant for pytest does not kill it under a test; the block's end stops it
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-500:] if log and log.exists() else ""
                state = f"exited ({proc.returncode})" if proc.returncode is not None else f"not ready in {timeout} s"
                pytest.fail(f"{what} did not start: {state}{': ' + tail if tail else ''}", pytrace=False)
            time.sleep(0.1)  # a real clock: waiting for a real server to listen
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
