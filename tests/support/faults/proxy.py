"""A fault-injecting HTTP/1.1 TCP proxy on 127.0.0.1, for tests.

It sits between an SDK and a real service (Azurite, moto, a local HTTP server) and breaks exchanges the way
flaky networks do: connection reset or clean close after N bytes, a stall, a synthetic 503/500, one flipped
body byte. It parses just enough HTTP/1.1 to find message boundaries (Content-Length, chunked, read-to-close,
HEAD, 1xx, ``Expect: 100-continue``), so faults can target one request even when requests are pipelined over
a keep-alive connection.

The proxy runs its own asyncio loop in a background thread. It is bounded: at most ``max_connections``
connections are accepted (later ones are reset) and it stops by itself after ``lifetime`` seconds.

    with FaultProxy(("127.0.0.1", 10000), plan=first(2, Fault.status(503))) as proxy:
        ... point the client at proxy.url ...
    proxy.stats.injected  # the faults that really fired
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from ..loop_proxy import LoopProxy

FaultKind = Literal["reset", "close", "stall", "status", "flip"]
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
_PIECE = 64 * 1024


@dataclass(frozen=True)
class Fault:
    """What to do to one request/response exchange.

    ``at`` counts bytes of the message (head included) for reset/close/stall, and bytes of the body (payload,
    not chunk framing) for flip. A fault whose ``at`` lies beyond the message never fires.
    """

    kind: FaultKind
    at: int = 0
    direction: Literal["response", "request"] = "response"
    seconds: float = 0.0  # stall
    status: int = 503  # status
    mask: int = 0x01  # flip: XORed into the byte

    @classmethod
    def reset(cls, at: int, direction: Literal["response", "request"] = "response") -> Fault:
        """TCP RST after ``at`` bytes."""
        return cls("reset", at, direction)

    @classmethod
    def close(cls, at: int, direction: Literal["response", "request"] = "response") -> Fault:
        """Clean close (FIN) after ``at`` bytes: a truncated message."""
        return cls("close", at, direction)

    @classmethod
    def stall(cls, at: int, seconds: float, direction: Literal["response", "request"] = "response") -> Fault:
        """Stop forwarding for ``seconds`` after ``at`` bytes, then carry on."""
        return cls("stall", at, direction, seconds=seconds)

    @classmethod
    def answer(cls, status: int = 503) -> Fault:
        """Answer with ``status`` without asking the upstream (the request is swallowed)."""
        return cls("status", status=status)

    @classmethod
    def flip(cls, at: int, mask: int = 0x01, direction: Literal["response", "request"] = "response") -> Fault:
        """XOR ``mask`` into body byte ``at`` of the response (or of the request: a damaged upload)."""
        if not 0 < mask < 256:
            raise ValueError("mask must change the byte")
        return cls("flip", at, direction, mask=mask)


@dataclass(frozen=True)
class Request:
    """What a plan sees of a request: which connection, its order, and its head."""

    conn: int  # connection number, from 0
    index: int  # request number on that connection, from 0
    seq: int  # request number over the whole proxy, from 0
    method: str
    target: str
    headers: dict[str, str]  # lower-case names

    @property
    def range(self) -> tuple[int, int] | None:
        """The requested byte range (``Range`` or Azure's ``x-ms-range``), inclusive, if any."""
        value = self.headers.get("x-ms-range") or self.headers.get("range")
        if not value or not value.startswith("bytes="):
            return None
        a, _, b = value[6:].partition("-")
        return (int(a), int(b)) if a.isdigit() and b.isdigit() else None


Plan = Callable[[Request], "Fault | None"]


@dataclass(frozen=True)
class Injected:
    """One fault that really fired."""

    kind: FaultKind
    direction: str
    at: int
    conn: int
    seq: int
    method: str
    target: str


@dataclass
class Stats:
    connections: int = 0
    refused: int = 0
    requests: int = 0
    injected: list[Injected] = field(default_factory=list)

    @property
    def by_kind(self) -> Counter[str]:
        return Counter(i.kind for i in self.injected)


# ---------------------------------------------------------------------------------------------- plans


def response_fault(kind: str, at: int, rng: random.Random) -> Fault:
    """The response fault named ``kind`` (reset, close, stall, status<code>) at byte ``at`` of the answer."""
    if kind == "reset":
        return Fault.reset(at)
    if kind == "close":
        return Fault.close(at)
    if kind == "stall":
        return Fault.stall(at, rng.uniform(0.05, 0.5))
    if kind.startswith("status"):
        return Fault.answer(int(kind.removeprefix("status")))
    raise ValueError(f"unknown fault kind {kind!r}")


def registry_fault(rng: random.Random, req: Request, stall_past: float) -> Fault | None:
    """A random fault for a registry write (sign, attest, promote): a reset, close or 5xx of the answer, a short
    stall, one of ``stall_past`` seconds (past the client's timeout), or a reset of a PUT/POST body on its way."""
    kind = rng.choice(["reset", "close", "status503", "status500", "stall", "stall-long", "reset-request"])
    if kind == "reset-request":
        return Fault.reset(rng.randrange(1, 400), direction="request") if req.method in ("PUT", "POST") else None
    if kind == "stall-long":
        return Fault.stall(rng.randrange(0, 120), stall_past)
    if kind == "stall":
        return Fault.stall(rng.randrange(0, 120), rng.uniform(0.05, 0.4))
    if kind.startswith("status"):
        return Fault.answer(int(kind[6:]))
    return Fault(kind, rng.randrange(0, 120))  # type: ignore[arg-type]


def first(k: int, fault: Fault, match: Callable[[Request], bool] = lambda r: True) -> Plan:
    """``fault`` on the first ``k`` requests that ``match``."""
    left = [k]

    def plan(req: Request) -> Fault | None:
        if left[0] > 0 and match(req):
            left[0] -= 1
            return fault
        return None

    return plan


def scripted(faults: dict[tuple[int, int], Fault]) -> Plan:
    """Faults by (connection, request index on it)."""
    return lambda req: faults.get((req.conn, req.index))


class RandomFaults:
    """Seeded random faults: each matching request gets ``make(rng, req)`` with probability ``p``, up to ``budget``."""

    def __init__(
        self,
        seed: int,
        make: Callable[[random.Random, Request], Fault | None],
        *,
        match: Callable[[Request], bool] = lambda r: True,
        p: float = 0.5,
        budget: int = 3,
    ):
        self.rng, self.make, self.match, self.p, self.budget = random.Random(seed), make, match, p, budget

    def __call__(self, req: Request) -> Fault | None:
        if self.budget <= 0 or not self.match(req) or self.rng.random() >= self.p:
            return None
        fault = self.make(self.rng, req)
        if fault is not None:
            self.budget -= 1
        return fault


# ---------------------------------------------------------------------------------------------- HTTP bits


class _Cut(Exception):
    """A reset/close fault fired: tear the connection down."""

    def __init__(self, reset: bool):
        self.reset = reset


class _Head:
    def __init__(self, raw: bytes):
        self.raw = raw = raw.lstrip(b"\r\n")  # empty lines before a request line are to be ignored (RFC 9112)
        lines = raw.decode("latin-1").split("\r\n")
        self.start = lines[0]
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                self.headers[k.strip().lower()] = v.strip()

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    @property
    def length(self) -> int | None:
        v = self.headers.get("content-length")
        return int(v) if v is not None and v.strip().isdigit() else None

    @property
    def close(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


async def _read_head(reader: asyncio.StreamReader) -> _Head | None:
    """The next message head, or None on a clean EOF between messages."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise
    return _Head(raw)


class _Out:
    """Writes one message to ``writer``, applying ``fault`` at its byte position."""

    def __init__(self, proxy: FaultProxy, writer: asyncio.StreamWriter, fault: Fault | None, req: Request):
        self.proxy, self.writer, self.fault, self.req = proxy, writer, fault, req
        self.pos = self.body_pos = 0

    def _fired(self) -> None:
        f = self.fault
        assert f is not None
        self.proxy.stats.injected.append(
            Injected(f.kind, f.direction, f.at, self.req.conn, self.req.seq, self.req.method, self.req.target)
        )
        self.fault = None

    async def send(self, data: bytes, body: bool = False) -> None:
        f = self.fault
        if f is not None and f.kind == "flip" and body and 0 <= f.at - self.body_pos < len(data):
            buf = bytearray(data)
            buf[f.at - self.body_pos] ^= f.mask
            data = bytes(buf)
            self._fired()
        elif f is not None and f.kind in ("reset", "close", "stall") and 0 <= f.at - self.pos < len(data):
            cut = f.at - self.pos
            self.writer.write(data[:cut])
            await self.writer.drain()
            self._fired()
            if f.kind != "stall":
                raise _Cut(reset=f.kind == "reset")
            await asyncio.sleep(f.seconds)  # a real stall: the peer sees no bytes for this long
            self.pos += cut
            data = data[cut:]
        self.pos += len(data)
        if body:
            self.body_pos += len(data)
        self.writer.write(data)
        await self.writer.drain()


async def _forward(reader: asyncio.StreamReader, left: int, emit: Callable[[bytes, bool], Awaitable[None]]) -> None:
    """``left`` body bytes from ``reader`` to ``emit``, piece by piece; a short stream is an incomplete read."""
    while left:
        data = await reader.read(min(_PIECE, left))
        if not data:
            raise asyncio.IncompleteReadError(b"", left)
        left -= len(data)
        await emit(data, True)


async def _body(reader: asyncio.StreamReader, head: _Head, out: _Out | None, *, to_eof: bool = False) -> None:
    """Copy (or, with ``out`` None, swallow) the body that follows ``head``."""

    async def emit(data: bytes, body: bool) -> None:
        if out is not None:
            await out.send(data, body)

    if head.chunked:
        while True:
            line = await reader.readuntil(b"\r\n")
            await emit(line, False)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = await reader.readuntil(b"\r\n")
                    await emit(trailer, False)
                    if trailer == b"\r\n":
                        return
            await _forward(reader, size, emit)
            await emit(await reader.readexactly(2), False)
    elif head.length is not None:
        await _forward(reader, head.length, emit)
    elif to_eof:
        while data := await reader.read(_PIECE):
            await emit(data, True)


@dataclass
class _Slot:
    """A request waiting for its response, in order."""

    req: Request
    fault: Fault | None  # applied to the response
    synthetic: bytes | None = None  # answer this instead of asking the upstream
    close_after: bool = False


def _synthetic(status: int, close: bool) -> bytes:
    body = f"proxy fault: {status}\n".encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nx-ms-error-code: ServerBusy\r\n" + ("Connection: close\r\n" if close else "")
    )
    return head.encode() + b"\r\n" + body


def _abort(writer: asyncio.StreamWriter, reset: bool) -> None:
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.transport.close()  # flushes what is buffered, then FIN


# ---------------------------------------------------------------------------------------------- the proxy


class FaultProxy(LoopProxy):
    """A bounded, self-stopping fault-injecting proxy to ``upstream`` (host, port); use as a context manager."""

    name = "fault proxy"

    def __init__(
        self,
        upstream: tuple[str, int],
        plan: Plan | None = None,
        *,
        max_connections: int = 500,
        lifetime: float = 120.0,
    ):
        super().__init__(upstream, max_connections=max_connections, lifetime=lifetime)
        self.plan = plan
        self.stats = Stats()

    # -- loop thread

    def _admit(self, cwriter: asyncio.StreamWriter) -> int | None:
        conn = self.stats.connections
        self.stats.connections += 1
        if conn >= self.max_connections:
            self.stats.refused += 1
            _abort(cwriter, reset=True)
            return None
        return conn

    def _upstream_down(self, cwriter: asyncio.StreamWriter) -> None:
        _abort(cwriter, reset=True)  # the client sees a refused/reset connection

    async def _serve(
        self,
        conn: int,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        ureader: asyncio.StreamReader,
        uwriter: asyncio.StreamWriter,
    ) -> None:
        slots: asyncio.Queue[_Slot | None] = asyncio.Queue()
        pumps = [
            asyncio.ensure_future(self._requests(conn, creader, uwriter, slots)),
            asyncio.ensure_future(self._responses(ureader, cwriter, slots)),
        ]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            if pumps[0] in done and not isinstance(pumps[0].exception(), _Cut):
                await asyncio.wait([pumps[1]])  # the client is done sending: deliver what is still owed
        finally:
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            errors = [p.exception() for p in pumps if p.done() and not p.cancelled()]
            reset = any(isinstance(e, _Cut) and e.reset for e in errors)
            _abort(cwriter, reset)
            uwriter.transport.abort()

    async def _requests(
        self, conn: int, creader: asyncio.StreamReader, uwriter: asyncio.StreamWriter, slots: asyncio.Queue
    ) -> None:
        index = 0
        try:
            while (head := await _read_head(creader)) is not None:
                method, target = ([*head.start.split(" "), "", ""])[:2]
                req = Request(conn, index, self.stats.requests, method.upper(), target, dict(head.headers))
                self.stats.requests += 1
                index += 1
                fault = self.plan(req) if self.plan else None
                if fault is not None and fault.kind == "status":
                    # Like a real server: answer at once. With Expect: 100-continue the client holds the body back,
                    # so the connection cannot be reused after the answer.
                    expect = head.headers.get("expect", "").lower() == "100-continue"
                    self.stats.injected.append(
                        Injected("status", "response", fault.status, conn, req.seq, req.method, req.target)
                    )
                    await slots.put(_Slot(req, None, _synthetic(fault.status, expect), close_after=expect))
                    if expect:
                        return
                    await _body(creader, head, None)
                    continue
                response_fault = fault if fault is not None and fault.direction == "response" else None
                await slots.put(_Slot(req, response_fault))
                out = _Out(self, uwriter, fault if fault is not None and fault.direction == "request" else None, req)
                await out.send(head.raw)
                await _body(creader, head, out)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        await slots.put(None)

    async def _responses(
        self, ureader: asyncio.StreamReader, cwriter: asyncio.StreamWriter, slots: asyncio.Queue
    ) -> None:
        while (slot := await slots.get()) is not None:
            if slot.synthetic is not None:
                cwriter.write(slot.synthetic)
                await cwriter.drain()
                if slot.close_after:
                    return
                continue
            out = _Out(self, cwriter, slot.fault, slot.req)
            while True:
                head = await _read_head(ureader)
                if head is None:
                    return  # the upstream closed: so do we
                status = int(head.start.split(" ")[1])
                await out.send(head.raw)
                if not 100 <= status < 200:
                    break
            no_body = slot.req.method == "HEAD" or status in (204, 304)
            if not no_body:
                to_eof = not head.chunked and head.length is None
                await _body(ureader, head, out, to_eof=to_eof)
                if to_eof:
                    return
            if head.close or slot.req.headers.get("connection", "").lower() == "close":
                return
