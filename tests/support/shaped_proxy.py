"""A link shaped like a storage account across a WAN, as a user-space TCP proxy on 127.0.0.1.

There is no ``tc netem`` on the testbed, so this proxy stands in: every byte is held for half the request
delay in each direction (an exchange of request and answer pays the whole delay, 20 ms by default) and each
connection is paced to ``rate`` bytes per second in each direction (25 MB/s by default), so parallel
connections are what buys throughput, as against a real account. Buffers are small and bounded (the
bandwidth-delay product), so a fast upstream is held back by TCP, not queued in memory.

It runs its own asyncio loop in a background thread, accepts at most ``max_connections`` connections and
stops by itself after ``lifetime`` seconds:

    with ShapedProxy(("127.0.0.1", 10000)) as link:
        ... point the client at link.url ...
    link.stats.connections, link.stats.peak  # connections opened, most open at once
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from .loop_proxy import LoopProxy

_PIECE = 256 * 1024  # bigger pieces: fewer loop turns per byte (the proxy shares the cores with what it measures)


@dataclass
class LinkStats:
    connections: int = 0  # accepted so far
    open: int = 0
    peak: int = 0  # most connections open at once
    bytes_down: int = 0  # upstream → client
    bytes_up: int = 0


class ShapedProxy(LoopProxy):
    """A bounded, self-stopping proxy to ``upstream`` adding ``delay`` seconds per exchange and pacing each
    connection to ``rate`` bytes/s; use as a context manager."""

    name = "shaped proxy"

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        delay: float = 0.020,
        rate: float = 25e6,
        lifetime: float = 600.0,
        max_connections: int = 512,
    ):
        if delay < 0 or rate <= 0:
            raise ValueError("delay must be >= 0 and rate > 0")
        super().__init__(upstream, max_connections=max_connections, lifetime=lifetime)
        self.delay, self.rate = delay, rate
        self.stats = LinkStats()

    # -- loop thread

    def _admit(self, cwriter: asyncio.StreamWriter) -> int | None:
        self.stats.connections += 1
        if self.stats.connections > self.max_connections:
            cwriter.transport.abort()
            return None
        return self.stats.connections - 1

    async def _serve(
        self,
        conn: int,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        ureader: asyncio.StreamReader,
        uwriter: asyncio.StreamWriter,
    ) -> None:
        self.stats.open += 1
        self.stats.peak = max(self.stats.peak, self.stats.open)
        pipes = [
            asyncio.ensure_future(self._pipe(creader, uwriter, up=True)),
            asyncio.ensure_future(self._pipe(ureader, cwriter, up=False)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pipes:
                p.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            cwriter.transport.abort()
            uwriter.transport.abort()
            self.stats.open -= 1

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        """Bytes from ``reader`` to ``writer``, each held delay/2, at most ``rate`` bytes/s."""
        loop = asyncio.get_running_loop()
        one_way = self.delay / 2
        # Room for twice what the link holds in flight (bandwidth × delay), counted in bytes (reads return
        # pieces of any size): beyond it the reader waits, and TCP holds the sender back.
        room = max(2 * int(self.rate * one_way), 256 * 1024)
        line: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        held = [0]
        space = asyncio.Event()

        async def receive() -> None:
            try:
                while data := await reader.read(_PIECE):
                    line.put_nowait((loop.time() + one_way, data))
                    held[0] += len(data)
                    while held[0] > room:
                        space.clear()
                        await space.wait()
            except OSError:
                pass
            line.put_nowait(None)

        rx = asyncio.ensure_future(receive())
        free = 0.0  # when the paced link has sent everything so far
        try:
            while (item := await line.get()) is not None:
                due, data = item
                now = loop.time()
                if due > now:
                    await asyncio.sleep(due - now)
                writer.write(data)
                await writer.drain()
                held[0] -= len(data)
                space.set()
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                free = max(free, due) + len(data) / self.rate
                now = loop.time()
                if free > now:
                    await asyncio.sleep(free - now)
        finally:
            rx.cancel()
            await asyncio.gather(rx, return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    """Run the proxy as a process of its own (the benchmark does: in the client's process it would compete with
    the client for the GIL): prints ``PORT <n>`` once listening, stops on SIGTERM or after ``--lifetime``."""
    import argparse
    import signal
    import sys

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("upstream", metavar="HOST:PORT")
    p.add_argument("--delay-ms", type=float, default=20.0)
    p.add_argument("--rate-mb", type=float, default=25.0, help="MB/s per connection")
    p.add_argument("--lifetime", type=float, default=3600.0)
    a = p.parse_args(argv)
    host, _, port = a.upstream.rpartition(":")
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with ShapedProxy((host, int(port)), delay=a.delay_ms / 1000, rate=a.rate_mb * 1e6, lifetime=a.lifetime) as link:
        print(f"PORT {link.port}", flush=True)
        while not stopped.wait(0.5) and link._thread.is_alive():
            pass
    sys.exit(0)


if __name__ == "__main__":
    main()
