"""The fault proxy itself, against a real local HTTP server: every fault does what it says, and only that."""

from __future__ import annotations

import http.client
import os
import socket
import time

import pytest
import requests

from support.faults import Fault, FaultProxy, RandomFaults, Request, first, scripted
from support.servers import file_server

DATA = os.urandom(300_000)


@pytest.fixture
def upstream():
    with file_server({"/a.bin": DATA, "/b.bin": b"hello"}) as (addr, handler):
        yield addr, handler


class _Sock:
    """Lets http.client parse several responses from one byte stream (pipelining)."""

    def __init__(self, f):
        self.f = f

    def makefile(self, *args, **kwargs):
        return self

    def __getattr__(self, name):
        return getattr(self.f, name)

    def close(self):
        pass  # http.client closes the stream after each response; the next one is still in it


def _pipeline(port: int, paths: list[str], method: str = "GET") -> list[tuple[int, bytes]]:
    last = len(paths) - 1
    reqs = b"".join(
        f"{method} {p} HTTP/1.1\r\nHost: x\r\n".encode() + (b"Connection: close\r\n" if i == last else b"") + b"\r\n"
        for i, p in enumerate(paths)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(reqs)  # all at once: the proxy must keep them apart and in order
        f = s.makefile("rb")
        out = []
        for _ in paths:
            resp = http.client.HTTPResponse(_Sock(f), method=method)  # type: ignore[arg-type]
            resp.begin()
            out.append((resp.status, resp.read()))
        return out


def _raw_get(port: int, path: str) -> tuple[bytes, BaseException | None]:
    """Everything received for one GET until EOF or error."""
    got, err = b"", None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        try:
            while data := s.recv(65536):
                got += data
        except OSError as e:
            err = e
    return got, err


def test_passthrough_keeps_alive_and_is_byte_exact(upstream):
    addr, _ = upstream
    with FaultProxy(addr) as proxy, requests.Session() as s:
        for _ in range(5):
            assert s.get(f"{proxy.url}/a.bin", timeout=10).content == DATA
        assert s.head(f"{proxy.url}/a.bin", timeout=10).headers["Content-Length"] == str(len(DATA))
        assert s.get(f"{proxy.url}/chunked/a.bin", timeout=10).content == DATA
        assert s.get(f"{proxy.url}/nope", timeout=10).status_code == 404
    assert proxy.stats.connections == 1 and proxy.stats.requests == 8 and not proxy.stats.injected


def test_pipelined_requests_get_their_own_answers_in_order(upstream):
    addr, _ = upstream
    with FaultProxy(addr, plan=scripted({(0, 1): Fault.answer(503)})) as proxy:
        got = _pipeline(proxy.port, ["/b.bin", "/a.bin", "/chunked/a.bin", "/b.bin"])
    assert [s for s, _ in got] == [200, 503, 200, 200]
    assert got[0][1] == b"hello" and got[2][1] == DATA and got[3][1] == b"hello"
    assert proxy.stats.by_kind == {"status": 1}


def test_first_k_requests_answer_500_then_pass(upstream):
    addr, handler = upstream
    with FaultProxy(addr, plan=first(2, Fault.answer(500))) as proxy, requests.Session() as s:
        codes = [s.get(f"{proxy.url}/b.bin", timeout=10).status_code for _ in range(4)]
    assert codes == [500, 500, 200, 200]
    assert len(handler.received) == 2  # the faulted requests never reached the server


@pytest.mark.parametrize("at", [0, 10, 5000, 150_000])
def test_reset_after_n_bytes(upstream, at):
    addr, _ = upstream
    with FaultProxy(addr, plan=first(1, Fault.reset(at))) as proxy:
        got, err = _raw_get(proxy.port, "/a.bin")
        # ConnectionError or ChunkedEncodingError, depending on where the reset falls
        with FaultProxy(addr, plan=first(1, Fault.reset(at))) as p2, pytest.raises(requests.RequestException):
            requests.get(f"{p2.url}/a.bin", timeout=10).raise_for_status()
    assert len(got) <= at and (err is not None or len(got) < at or at == 0)
    assert isinstance(err, ConnectionResetError) or len(got) < at + 1
    assert proxy.stats.by_kind == {"reset": 1}


@pytest.mark.parametrize("path", ["/a.bin", "/chunked/a.bin"])
def test_close_mid_response_truncates_exactly(upstream, path):
    addr, _ = upstream
    with FaultProxy(addr, plan=first(1, Fault.close(1234))) as proxy:
        got, err = _raw_get(proxy.port, path)
    assert err is None and len(got) == 1234


@pytest.mark.parametrize("at", [0, 100, 5000, 200_000])
def test_stall_delays_then_delivers_the_same_bytes(upstream, at):
    addr, _ = upstream
    with FaultProxy(addr) as clean:
        want, _ = _raw_get(clean.port, "/a.bin")
    with FaultProxy(addr, plan=first(1, Fault.stall(at, 0.3))) as proxy:
        t0 = time.monotonic()
        got, err = _raw_get(proxy.port, "/a.bin")
        took = time.monotonic() - t0
    assert err is None and got == want and took >= 0.3


def test_stall_longer_than_client_timeout_times_out(upstream):
    addr, _ = upstream
    with FaultProxy(addr, plan=first(1, Fault.stall(0, 5))) as proxy, pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{proxy.url}/a.bin", timeout=(5, 0.3))


@pytest.mark.parametrize("path", ["/a.bin", "/chunked/a.bin"])
@pytest.mark.parametrize("at", [0, 999, 1000, 299_999])
def test_flip_changes_exactly_one_body_byte(upstream, path, at):
    addr, _ = upstream
    with FaultProxy(addr, plan=first(1, Fault.flip(at, 0x40))) as proxy:
        body = requests.get(f"{proxy.url}{path}", timeout=10).content
    diff = [i for i in range(len(DATA)) if body[i] != DATA[i]]
    assert len(body) == len(DATA) and diff == [at] and body[at] == DATA[at] ^ 0x40


def test_ranged_requests_are_visible_to_plans(upstream):
    addr, _ = upstream
    seen = []

    def plan(req):
        seen.append(req.range)
        return Fault.flip(0) if req.range == (100, 199) else None

    with FaultProxy(addr, plan=plan) as proxy, requests.Session() as s:
        a = s.get(f"{proxy.url}/a.bin", headers={"Range": "bytes=0-99"}, timeout=10).content
        b = s.get(f"{proxy.url}/a.bin", headers={"Range": "bytes=100-199"}, timeout=10).content
    assert seen == [(0, 99), (100, 199)] and a == DATA[:100] and b != DATA[100:200] and len(b) == 100


def test_request_side_reset_stops_an_upload_half_way(upstream):
    addr, handler = upstream
    with FaultProxy(addr, plan=first(1, Fault.reset(50_000, direction="request"))) as proxy:
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.put(f"{proxy.url}/up.bin", data=DATA, timeout=10)
        assert requests.put(f"{proxy.url}/up.bin", data=DATA, timeout=10).status_code == 201
    assert [r for r in handler.received if r[0] == "PUT"] == [("PUT", "/up.bin", len(DATA))]


def test_expect_100_continue_is_answered_early_by_a_status_fault(upstream):
    addr, _ = upstream
    with (
        FaultProxy(addr, plan=first(1, Fault.answer(503))) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s,
    ):
        s.sendall(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        reply = s.recv(4096)  # no body sent: a server answers before the body arrives
        assert reply.startswith(b"HTTP/1.1 503") and b"Connection: close" in reply
        assert s.recv(4096) == b""


def test_expect_100_continue_passes_through(upstream):
    addr, handler = upstream
    with FaultProxy(addr) as proxy, socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"PUT /y HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 100")
        s.sendall(b"abc")
        assert s.recv(4096).startswith(b"HTTP/1.1 201")
    assert handler.files["/y"] == b"abc"


def test_random_faults_are_reproducible_from_the_seed():
    def run(seed):
        plan = RandomFaults(seed, lambda rng, req: Fault.reset(rng.randrange(1000)), p=0.3, budget=5)
        return [plan(Request(0, i, i, "GET", "/", {})) for i in range(40)]

    assert run(7) == run(7) and run(7) != run(8)
    assert sum(f is not None for f in run(7)) == 5


def test_bounded_in_connections(upstream):
    addr, _ = upstream
    with FaultProxy(addr, max_connections=2) as proxy:
        for _ in range(2):
            assert requests.get(f"{proxy.url}/b.bin", headers={"Connection": "close"}, timeout=10).ok
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{proxy.url}/b.bin", timeout=10)
    assert proxy.stats.refused == 1


def test_stops_by_itself_after_its_lifetime(upstream):
    addr, _ = upstream
    proxy = FaultProxy(addr, lifetime=0.3)
    with proxy:
        deadline = time.monotonic() + 10
        while proxy._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)  # a real clock: the lifetime is wall time
        assert proxy.expired and not proxy._thread.is_alive()
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{proxy.url}/b.bin", timeout=2)


def test_upstream_down_looks_like_a_refused_connection():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()
    with FaultProxy(dead) as proxy, pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{proxy.url}/x", timeout=5)


def test_request_side_flip_damages_an_upload(upstream):
    addr, handler = upstream
    with FaultProxy(addr, plan=first(1, Fault.flip(1000, 0x80, direction="request"))) as proxy:
        assert requests.put(f"{proxy.url}/up.bin", data=DATA, timeout=10).status_code == 201
    stored = handler.files["/up.bin"]
    assert [i for i in range(len(DATA)) if stored[i] != DATA[i]] == [1000]
